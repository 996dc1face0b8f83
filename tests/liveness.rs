//! Heartbeats and timeouts (protocol §4, and HTTP's own timeouts).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use tungstenite::Message;
use tungstenite::protocol::frame::coding::CloseCode;

#[test]
fn heartbeat_sends_a_ping_frame_and_an_info_ping() {
    let s = start_with(|c| c.heartbeat = Duration::from_millis(200));
    let mut ws = Ws::connect(s.addr);
    let (mut frame, mut info) = (false, false);
    while !(frame && info) {
        match ws.ws.read().expect("heartbeat") {
            Message::Ping(_) => frame = true,
            Message::Text(t) => {
                let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
                assert_eq!(
                    (v["type"].as_str(), v["msg"].as_str()),
                    (Some("info"), Some("ping"))
                );
                check_ts(&v);
                info = true;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn a_silent_websocket_is_closed_after_the_idle_timeout() {
    let s = start_with(|c| {
        c.heartbeat = Duration::from_secs(30);
        c.idle_timeout = Duration::from_millis(400);
    });
    let started = Instant::now();
    let mut ws = Ws::connect(s.addr);
    assert_eq!(ws.expect_close(), Some(CloseCode::Away));
    assert!(started.elapsed() >= Duration::from_millis(350));
    wait_until("the idle connection to be gone", || {
        health(s.addr)["connections"] == 1
    });
}

#[test]
fn a_client_that_answers_pings_stays_connected() {
    // An idle timeout of 1 s is 4 heartbeats: the client would have to miss
    // four in a row (or the test thread be kept off the CPU for a second) to
    // be cut, so a loaded machine does not make this flaky.
    let s = start_with(|c| {
        c.heartbeat = Duration::from_millis(250);
        c.idle_timeout = Duration::from_secs(1);
    });
    let mut ws = Ws::connect(s.addr);
    // Reading lets tungstenite answer each ping frame with a pong; the
    // connection outlives the idle timeout three times over.
    let until = Instant::now() + Duration::from_secs(3);
    let mut pings = 0;
    while Instant::now() < until {
        if let Message::Ping(_) = ws.ws.read().expect("still connected") {
            pings += 1;
        }
        ws.ws.flush().unwrap();
    }
    assert!(pings >= 5, "{pings} pings");
    ws.ping();
}

#[test]
fn idle_keep_alive_http_connections_are_closed() {
    let s = start_with(|c| c.keepalive_timeout = Duration::from_millis(300));
    let mut c = Http::connect(s.addr);
    assert_eq!(c.request("GET", "/health", "", None).status, 200);
    let started = Instant::now();
    assert!(c.closed_by_server());
    assert!(started.elapsed() >= Duration::from_millis(250));
}

#[test]
fn a_request_that_dribbles_in_is_cut_off() {
    let s = start_with(|c| c.request_timeout = Duration::from_millis(500));
    let mut slow = TcpStream::connect(s.addr).unwrap();
    slow.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let request = b"GET /health HTTP/1.1\r\nHost: slowloris\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let started = Instant::now();
    let mut answer = Vec::new();
    for byte in request {
        if slow.write_all(&[*byte]).is_err() {
            break;
        }
        let mut buf = [0u8; 512];
        match slow.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => break,
        }
        // Meanwhile, a normal round trip works.
        if started.elapsed() < Duration::from_millis(300) {
            assert_eq!(http(s.addr, "GET", "/health", None).status, 200);
        }
    }
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "got {text:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(http(s.addr, "GET", "/health", None).status, 200);
}
