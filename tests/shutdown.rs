//! Graceful shutdown (protocol §7) of the real binary on SIGTERM/SIGINT, and
//! of the library's handle.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use tungstenite::protocol::frame::coding::CloseCode;

/// The server binary, killed on drop so a failing test never leaks it.
struct Binary {
    child: Child,
    addr: SocketAddr,
}

impl Binary {
    fn start(args: &[&str]) -> Binary {
        let mut child = Command::new(env!("CARGO_BIN_EXE_pubsubd"))
            .args(["--host", "127.0.0.1", "--port", "0", "--log-level", "info"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start pubsubd");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line.split("listening on ").nth(1) {
                    let _ = tx.send(addr.trim().to_string());
                }
            }
        });
        let addr = rx
            .recv_timeout(TIMEOUT)
            .expect("the server logs its address")
            .parse()
            .unwrap();
        Binary { child, addr }
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill() on the PID of a child this test started and still owns.
        assert_eq!(
            unsafe { libc::kill(self.child.id() as libc::pid_t, sig) },
            0
        );
    }

    fn wait_exit(&mut self, within: Duration) -> (ExitStatus, Duration) {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status, started.elapsed());
            }
            assert!(started.elapsed() < within, "still running after {within:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn event_numbers_then_shutdown(ws: &mut Ws) -> Vec<u64> {
    let mut seen = Vec::new();
    loop {
        let v = ws.recv_skip_heartbeat();
        match v["type"].as_str() {
            Some("event") => seen.push(v["message"]["payload"]["n"].as_u64().unwrap()),
            Some("info") if v["msg"] == "server_shutdown" => return seen,
            _ => panic!("unexpected {v}"),
        }
    }
}

#[test]
fn sigterm_flushes_queued_events_then_closes_with_1001_and_exits_0() {
    let mut server = Binary::start(&["--shutdown-timeout", "5"]);
    create_topic(server.addr, "t");
    let mut subs: Vec<Ws> = (0..3)
        .map(|i| {
            let mut ws = Ws::connect(server.addr);
            ws.subscribe("t", &format!("s{i}"), 0);
            ws
        })
        .collect();
    let mut publisher = Ws::connect(server.addr);
    // 2 000 events of 1 KiB, none read yet: they sit in queues and kernel buffers.
    for n in 0..2000u64 {
        publisher.send(json!({"type":"publish","topic":"t","message":{"id":uuid(),"payload":{"n":n,"pad":"x".repeat(1000)}}}));
    }
    for _ in 0..2000 {
        assert_eq!(publisher.recv()["type"], "ack");
    }
    server.signal(libc::SIGTERM);
    for ws in &mut subs {
        assert_eq!(
            event_numbers_then_shutdown(ws),
            (0..2000).collect::<Vec<_>>()
        );
        assert_eq!(ws.expect_close(), Some(CloseCode::Away));
    }
    let (status, took) = server.wait_exit(Duration::from_secs(8));
    assert!(status.success(), "{status}");
    assert!(took < Duration::from_secs(5));
    // The listener is gone.
    assert!(TcpStream::connect(server.addr).is_err());
}

#[test]
fn an_http_request_in_flight_gets_its_response() {
    let mut server = Binary::start(&["--shutdown-timeout", "5"]);
    let mut c = TcpStream::connect(server.addr).unwrap();
    c.set_read_timeout(Some(TIMEOUT)).unwrap();
    let body = r#"{"name":"late"}"#;
    c.write_all(
        format!(
            "POST /topics HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .unwrap();
    // Make sure the server has seen the head before the signal.
    wait_until("the request to be counted", || {
        let m = http(server.addr, "GET", "/metrics", None);
        String::from_utf8_lossy(&m.body).contains("pubsubd_received_bytes_total")
            && health(server.addr)["connections"].as_u64() == Some(2)
    });
    server.signal(libc::SIGTERM);
    // The body goes out only once the server is shutting down.
    wait_until("the listener to close", || {
        TcpStream::connect(server.addr).is_err()
    });
    c.write_all(body.as_bytes()).unwrap();
    let mut answer = String::new();
    c.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    assert!(answer.contains("Connection: close"));
    let (status, _) = server.wait_exit(Duration::from_secs(8));
    assert!(status.success());
}

#[test]
fn a_reader_that_never_reads_cannot_hold_shutdown_past_the_timeout() {
    let mut server = Binary::start(&["--shutdown-timeout", "1"]);
    create_topic(server.addr, "t");
    let mut stalled = Ws::connect_stalling(server.addr);
    stalled.subscribe("t", "stalled", 0);
    let mut publisher = Ws::connect(server.addr);
    for n in 0..3000u64 {
        publisher.send(json!({"type":"publish","topic":"t","message":{"id":uuid(),"payload":{"n":n,"pad":"y".repeat(1000)}}}));
    }
    for _ in 0..3000 {
        publisher.recv();
    }
    server.signal(libc::SIGINT);
    let (status, took) = server.wait_exit(Duration::from_secs(4));
    assert!(status.success(), "{status}");
    assert!(
        took >= Duration::from_millis(900),
        "exited before the timeout: {took:?}"
    );
}

#[test]
fn a_second_signal_exits_at_once() {
    let mut server = Binary::start(&["--shutdown-timeout", "30"]);
    create_topic(server.addr, "t");
    let mut stalled = Ws::connect_stalling(server.addr);
    stalled.subscribe("t", "stalled", 0);
    let mut publisher = Ws::connect(server.addr);
    for n in 0..3000u64 {
        publisher.send(json!({"type":"publish","topic":"t","message":{"id":uuid(),"payload":{"n":n,"pad":"z".repeat(1000)}}}));
    }
    for _ in 0..3000 {
        publisher.recv();
    }
    server.signal(libc::SIGTERM);
    // The first signal closed the listener: wait for that, then signal again.
    wait_until("the listener to close", || {
        TcpStream::connect(server.addr).is_err()
    });
    server.signal(libc::SIGTERM);
    let (status, took) = server.wait_exit(Duration::from_secs(5));
    assert_eq!(status.code(), Some(130));
    assert!(took < Duration::from_secs(5));
}

#[test]
fn the_library_handle_shuts_down_the_same_way() {
    let s = start();
    create_topic(s.addr, "t");
    let mut ws = Ws::connect(s.addr);
    ws.subscribe("t", "c", 0);
    let stopper = std::thread::spawn(move || s.handle.shutdown());
    let info = ws.recv_skip_heartbeat();
    assert_eq!(
        (info["type"].as_str(), info["msg"].as_str()),
        (Some("info"), Some("server_shutdown"))
    );
    assert_eq!(ws.expect_close(), Some(CloseCode::Away));
    stopper.join().unwrap().expect("shutdown returns Ok");
}
