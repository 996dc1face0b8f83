//! Hostile input: each case gets the contract's answer, costs no other client
//! anything, and a fresh connection still gets a normal round trip.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;

use common::*;
use serde_json::json;
use tungstenite::protocol::frame::coding::CloseCode;

/// A raw WebSocket: the handshake done by hand, frames written as given.
fn raw_ws(s: &Server) -> TcpStream {
    let mut c = TcpStream::connect(s.addr).unwrap();
    c.set_read_timeout(Some(TIMEOUT)).unwrap();
    c.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n").unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        c.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));
    c
}

/// A client frame: FIN, the opcode, masked (or not), with a zero mask.
fn frame(opcode: u8, fin: bool, masked: bool, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![if fin { 0x80 | opcode } else { opcode }];
    let mask_bit = if masked { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => f.push(mask_bit | n as u8),
        n if n < 65536 => {
            f.push(mask_bit | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(mask_bit | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if masked {
        f.extend_from_slice(&[0, 0, 0, 0]);
    }
    f.extend_from_slice(payload);
    f
}

/// Reads frames until a close frame; returns its code (None on EOF without one).
fn close_code(c: &mut TcpStream) -> Option<u16> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        // Walk the complete frames received so far.
        let mut i = 0;
        while buf.len() >= i + 2 {
            let len = (buf[i + 1] & 0x7f) as usize;
            let (hdr, len) = match len {
                126 if buf.len() >= i + 4 => {
                    (4, u16::from_be_bytes([buf[i + 2], buf[i + 3]]) as usize)
                }
                126 => break,
                127 => panic!("unexpected huge frame"),
                n => (2, n),
            };
            if buf.len() < i + hdr + len {
                break;
            }
            if buf[i] & 0x0f == 0x8 {
                return (len >= 2).then(|| u16::from_be_bytes([buf[i + hdr], buf[i + hdr + 1]]));
            }
            i += hdr + len;
        }
        match c.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Proof that the server still serves: REST and a pub/sub round trip on fresh connections.
fn still_serving(s: &Server) {
    assert_eq!(http(s.addr, "GET", "/health", None).status, 200);
    let topic = format!("alive-{}", uuid());
    create_topic(s.addr, &topic);
    let mut sub = Ws::connect(s.addr);
    sub.subscribe(&topic, "alive", 0);
    let mut publisher = Ws::connect(s.addr);
    assert_eq!(publisher.publish(&topic, json!("ok"))["type"], "ack");
    assert_eq!(sub.recv()["message"]["payload"], "ok");
}

#[test]
fn unmasked_client_frames_close_with_1002() {
    let s = start();
    let mut bystander = Ws::connect(s.addr);
    let mut c = raw_ws(&s);
    c.write_all(&frame(0x1, true, false, br#"{"type":"ping"}"#))
        .unwrap();
    assert_eq!(close_code(&mut c), Some(1002));
    bystander.ping();
    still_serving(&s);
}

#[test]
fn invalid_utf8_closes_with_1007() {
    let s = start();
    let mut c = raw_ws(&s);
    c.write_all(&frame(0x1, true, true, b"{\"type\":\"\xff\xfe\"}"))
        .unwrap();
    assert_eq!(close_code(&mut c), Some(1007));
    still_serving(&s);
}

#[test]
fn a_frame_header_announcing_too_much_closes_with_1009_before_the_body() {
    let s = start_with(|c| c.max_message_size = 64 << 10);
    let mut c = raw_ws(&s);
    // Announce 1 GiB and send nothing more: refused on the header alone.
    let mut f = vec![0x81, 0x80 | 127];
    f.extend_from_slice(&(1u64 << 30).to_be_bytes());
    f.extend_from_slice(&[0, 0, 0, 0]);
    c.write_all(&f).unwrap();
    assert_eq!(close_code(&mut c), Some(1009));
    still_serving(&s);
}

#[test]
fn fragments_that_add_up_past_the_limit_close_with_1009() {
    let s = start_with(|c| c.max_message_size = 16 << 10);
    let mut c = raw_ws(&s);
    c.write_all(&frame(0x1, false, true, &[b' '; 8 << 10]))
        .unwrap();
    for _ in 0..3 {
        if c.write_all(&frame(0x0, false, true, &[b' '; 8 << 10]))
            .is_err()
        {
            break;
        }
    }
    assert_eq!(close_code(&mut c), Some(1009));
    still_serving(&s);
}

#[test]
fn a_ping_flood_is_answered_without_growing_without_bound() {
    let s = start();
    let mut c = raw_ws(&s);
    let ping = frame(0x9, true, true, b"flood");
    let mut burst = Vec::new();
    for _ in 0..20_000 {
        burst.extend_from_slice(&ping);
    }
    c.write_all(&burst).unwrap();
    c.write_all(&frame(
        0x1,
        true,
        true,
        br#"{"type":"ping","request_id":"after"}"#,
    ))
    .unwrap();
    // Pongs (at most one pending at a time) then our answer, in order.
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    while !String::from_utf8_lossy(&buf).contains(r#""request_id":"after""#) {
        let n = c.read(&mut chunk).expect("answer after the flood");
        assert!(n > 0, "closed during a ping flood");
        buf.extend_from_slice(&chunk[..n]);
    }
    assert!(buf.len() < 20_000 * 7 + 1000);
    still_serving(&s);
}

#[test]
fn abrupt_disconnects_with_queued_output_cost_nothing() {
    let s = start();
    create_topic(s.addr, "t");
    for _ in 0..20 {
        let mut ws = Ws::connect_stalling(s.addr);
        ws.subscribe("t", &uuid(), 0);
        drop(ws);
    }
    let mut publisher = Ws::connect(s.addr);
    for n in 0..200 {
        assert_eq!(
            publisher.publish("t", json!({"n": n, "pad": "p".repeat(2000)}))["type"],
            "ack"
        );
    }
    wait_until("every dropped subscriber to be cleaned up", || {
        health(s.addr)["subscribers"] == 0
    });
    still_serving(&s);
}

#[test]
fn json_edge_cases_are_answered_cleanly() {
    let s = start();
    create_topic(s.addr, "t");
    let mut ws = Ws::connect(s.addr);
    ws.subscribe("t", "self", 0);
    let id = uuid();
    let deep = format!("{}1{}", "[".repeat(100), "]".repeat(100));
    let cases = [
        (
            format!(
                r#"{{"type":"publish","topic":"t","message":{{"id":"{id}","payload":{deep}}}}}"#
            ),
            Some("deeper than 64"),
        ),
        (
            format!(
                r#"{{"type":"publish","topic":"t","message":{{"id":"{id}","payload":1{}}}}}"#,
                "0".repeat(5000)
            ),
            None,
        ),
        (
            format!(
                r#"{{"type":"publish","topic":"t","topic":"t","message":{{"id":"{id}","payload":1}}}}"#
            ),
            Some("duplicate"),
        ),
        (deep.clone(), Some("JSON object")),
        ("null".to_string(), Some("JSON object")),
        ("{".repeat(10_000), Some("invalid JSON")),
        (
            r#"{"type":"ping","request_id":"\ud800"}"#.to_string(),
            Some(""),
        ),
    ];
    for (text, refusal) in cases {
        ws.send_text(&text);
        let answer = ws.recv();
        match refusal {
            Some(needle) => {
                assert_eq!(answer["error"]["code"], "BAD_REQUEST", "{answer}");
                assert!(
                    answer["error"]["message"]
                        .as_str()
                        .unwrap()
                        .contains(needle),
                    "{answer}"
                );
            }
            None => {
                assert_eq!(answer["type"], "ack", "{answer}");
                // The huge number is passed through verbatim (too big for
                // serde_json's f64, so the raw text is checked).
                match ws.ws.read().unwrap() {
                    tungstenite::Message::Text(t) => {
                        assert!(
                            t.as_str()
                                .contains(&format!(r#""payload":1{}}}"#, "0".repeat(5000)))
                        )
                    }
                    other => panic!("{other:?}"),
                }
            }
        }
    }
    ws.ping();
}

#[test]
fn max_connections_answers_503_and_recovers() {
    let s = start_with(|c| c.max_connections = 5);
    let mut held: Vec<Ws> = (0..5).map(|_| Ws::connect(s.addr)).collect();
    let mut extra = Http::connect(s.addr);
    extra.send(b"GET /health HTTP/1.1\r\n\r\n");
    let r = extra.read_response();
    assert_eq!(r.status, 503);
    assert!(r.json()["error"].is_string());
    // Those already in are unaffected.
    held[0].ping();
    // One leaves; the next one gets in.
    held.pop();
    wait_until("a free slot", || {
        let mut c = Http::connect(s.addr);
        c.send(b"GET /health HTTP/1.1\r\nConnection: close\r\n\r\n");
        c.read_response().status == 200
    });
}

#[test]
fn protocol_violations_close_only_the_offender() {
    let s = start();
    create_topic(s.addr, "t");
    let mut sub = Ws::connect(s.addr);
    sub.subscribe("t", "bystander", 0);
    for bad in [
        frame(0x3, true, true, b"reserved opcode"),
        frame(0x9, false, true, b"fragmented ping"),
        frame(0x0, true, true, b"continuation first"),
        frame(0x9, true, true, &[b'x'; 200]),
    ] {
        let mut c = raw_ws(&s);
        c.write_all(&bad).unwrap();
        assert_eq!(close_code(&mut c), Some(1002));
    }
    let mut publisher = Ws::connect(s.addr);
    publisher.publish("t", json!("still here"));
    assert_eq!(sub.recv()["message"]["payload"], "still here");
}

#[test]
fn tungstenite_sees_our_close_codes() {
    let s = start_with(|c| c.max_message_size = 1024);
    let mut ws = Ws::connect(s.addr);
    ws.send_text(&"z".repeat(2048));
    assert_eq!(ws.expect_close(), Some(CloseCode::Size));
}
