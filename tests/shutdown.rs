//! Graceful shutdown (protocol §7) of the real binary on SIGTERM/SIGINT, and
//! of the library's handle.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::extra::*;
use common::*;
use serde_json::json;
use tungstenite::protocol::frame::coding::CloseCode;

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
    // An outbound limit no test reaches: everything published stays queued.
    let mut server = Binary::start(&["--shutdown-timeout", "5", "--outbound-limit", "268435456"]);
    create_topic(server.addr, "t");
    let mut subs: Vec<Ws> = (0..3)
        .map(|i| {
            let mut ws = Ws::connect_stalling(server.addr);
            ws.subscribe("t", &format!("s{i}"), 0);
            ws
        })
        .collect();
    let mut publisher = Ws::connect(server.addr);
    // Events of 1 KiB, none read yet, more than the kernel holds for a
    // reader (sized from tcp_wmem): some sit in the server's own queues, so
    // the shutdown must flush them.
    let events = events_past_the_kernel(1024, 0);
    for n in 0..events {
        publisher.send(json!({"type":"publish","topic":"t","message":{"id":uuid(),"payload":{"n":n,"pad":"x".repeat(1000)}}}));
        if n % 100 == 99 {
            for _ in 0..100 {
                assert_eq!(publisher.recv()["type"], "ack");
            }
        }
    }
    for _ in 0..events % 100 {
        assert_eq!(publisher.recv()["type"], "ack");
    }
    server.signal(libc::SIGTERM);
    for ws in &mut subs {
        assert_eq!(
            event_numbers_then_shutdown(ws),
            (0..events).collect::<Vec<_>>()
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
    // Make sure the server has read the head before the signal: its byte
    // counter covers the head, beyond what our own /metrics requests added.
    let head_len = format!(
        "POST /topics HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .len() as u64;
    let mut looks = 0u64;
    wait_until("the request head to be read", || {
        looks += 1;
        let received = metric(server.addr, "pubsubd_received_bytes_total");
        received >= head_len + looks * METRICS_REQUEST.len() as u64
    });
    wait_until("the request's connection to be counted", || {
        health(server.addr)["connections"].as_u64() == Some(2)
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
    // Events past what the kernel holds (sized from tcp_wmem), all kept queued.
    let mut server = Binary::start(&["--shutdown-timeout", "1", "--outbound-limit", "268435456"]);
    let events = events_past_the_kernel(1024, 0);
    create_topic(server.addr, "t");
    let mut stalled = Ws::connect_stalling(server.addr);
    stalled.subscribe("t", "stalled", 0);
    let mut publisher = Ws::connect(server.addr);
    for n in 0..events {
        publisher.send(json!({"type":"publish","topic":"t","message":{"id":uuid(),"payload":{"n":n,"pad":"y".repeat(1000)}}}));
        if n % 100 == 99 {
            for _ in 0..100 {
                assert_eq!(publisher.recv()["type"], "ack");
            }
        }
    }
    for _ in 0..events % 100 {
        assert_eq!(publisher.recv()["type"], "ack");
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
    // Events past what the kernel holds (sized from tcp_wmem), all kept queued.
    let mut server = Binary::start(&["--shutdown-timeout", "30", "--outbound-limit", "268435456"]);
    let events = events_past_the_kernel(1024, 0);
    create_topic(server.addr, "t");
    let mut stalled = Ws::connect_stalling(server.addr);
    stalled.subscribe("t", "stalled", 0);
    let mut publisher = Ws::connect(server.addr);
    for n in 0..events {
        publisher.send(json!({"type":"publish","topic":"t","message":{"id":uuid(),"payload":{"n":n,"pad":"z".repeat(1000)}}}));
        if n % 100 == 99 {
            for _ in 0..100 {
                assert_eq!(publisher.recv()["type"], "ack");
            }
        }
    }
    for _ in 0..events % 100 {
        assert_eq!(publisher.recv()["type"], "ack");
    }
    server.signal(libc::SIGTERM);
    server.wait_log("signal received: shutting down gracefully");
    // A signal within the first second is the same request (the next
    // test): this one is a second request only once that second has passed.
    std::thread::sleep(Duration::from_millis(1200));
    server.signal(libc::SIGTERM);
    let (status, took) = server.wait_exit(Duration::from_secs(5));
    assert_eq!(status.code(), Some(130));
    assert!(took < Duration::from_secs(5));
    server.wait_log("second signal: exiting at once");
}

#[test]
fn a_signal_delivered_twice_at_once_is_one_graceful_shutdown() {
    // `timeout`, `tini -g` and a terminal's Ctrl-C deliver one signal to the
    // process and again to its process group. The second copy must not turn
    // the graceful shutdown into an immediate exit.
    let mut server = Binary::start(&["--shutdown-timeout", "5"]);
    create_topic(server.addr, "t");
    let mut ws = Ws::connect(server.addr);
    ws.subscribe("t", "c", 0);
    let first = std::time::Instant::now();
    server.signal(libc::SIGTERM);
    // Handled the first (it is not coalesced with the second in the kernel).
    server.wait_log("signal received: shutting down gracefully");
    server.signal(libc::SIGTERM);
    let sent_second = first.elapsed();
    assert!(
        sent_second < Duration::from_millis(900),
        "this machine took {sent_second:?} to send the copy: the test needs it within 1 s"
    );
    server.wait_log("signal repeated within 1000 ms");
    let info = ws.recv_skip_heartbeat();
    assert_eq!(
        (info["type"].as_str(), info["msg"].as_str()),
        (Some("info"), Some("server_shutdown"))
    );
    assert_eq!(ws.expect_close(), Some(CloseCode::Away));
    let (status, _) = server.wait_exit(Duration::from_secs(8));
    assert!(status.success(), "{status}");
    assert_eq!(server.log_count("second signal"), 0);
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
