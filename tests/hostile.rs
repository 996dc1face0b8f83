//! Hostile input: each case gets the contract's answer, costs no other client
//! anything, and a fresh connection still gets a normal round trip.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::extra::*;
use common::*;
use serde_json::json;
use tungstenite::protocol::frame::coding::CloseCode;

/// A raw WebSocket: the handshake done by hand, frames written as given.
fn raw_ws(s: &Server) -> TcpStream {
    raw_ws_over(TcpStream::connect(s.addr).unwrap())
}

/// The same handshake over a stream the caller prepared.
fn raw_ws_over(mut c: TcpStream) -> TcpStream {
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
fn a_ping_flood_from_a_client_that_never_reads_is_pushed_back() {
    // The pongs to a client that does not read them are answers like any
    // other: past the outbound limit the server stops reading the client, so
    // TCP pushes back on the flood and only about a limit's worth of pongs
    // is ever queued, however long the client keeps trying.
    const LIMIT: usize = 16 << 10;
    let s = start_with(|c| c.outbound_limit = LIMIT);
    let mut c = raw_ws_over(small_buffers_stream(s.addr, 4096, 4096));
    let ping = frame(0x9, true, true, &[b'p'; 125]);
    let mut flood = Flood::new(ping.clone());
    // Without push-back the server reads (and queues pongs) forever; with it,
    // the client stalls once the kernel's buffers on both sides are full.
    let cap = 2 * send_buffer_max() + receive_buffer_max() + LIMIT + (1 << 20);
    assert!(
        flood.until_blocked(&mut c, Duration::from_millis(500), cap),
        "{} bytes of pings went in and the server never stopped reading",
        flood.bytes
    );
    // The server is alive and not reading this client: its byte counter
    // moves by exactly our own /metrics request.
    let before = metric(s.addr, "pubsubd_received_bytes_total");
    // Not an event to wait for but an absence to observe: give it time.
    std::thread::sleep(Duration::from_millis(200));
    let received = metric(s.addr, "pubsubd_received_bytes_total");
    assert_eq!(
        received - before,
        METRICS_REQUEST.len() as u64,
        "the server kept reading a client over its outbound limit"
    );
    // Pongs queued = pongs made (a ping frame of 131 bytes makes a pong of
    // 127) less what was written to the socket: about the limit plus one
    // read's worth (64 KiB), not the megabytes of pings sent.
    let sent = metric(s.addr, "pubsubd_sent_bytes_total");
    let queued = (received * 127 / 131).saturating_sub(sent);
    println!(
        "pushed back after {} bytes of pings; ~{queued} bytes of pongs queued",
        flood.bytes
    );
    assert!(
        queued < (LIMIT + (128 << 10)) as u64,
        "{queued} bytes of pongs queued for a client that never reads ({} bytes of pings sent)",
        flood.bytes
    );
    // Once the client reads, the server reads again: every ping is answered
    // and a request sent after the flood gets its answer, in order.
    let mut writer = c.try_clone().unwrap();
    let finisher = std::thread::spawn(move || {
        flood.finish_frame(&mut writer);
        writer
            .write_all(&frame(
                0x1,
                true,
                true,
                br#"{"type":"ping","request_id":"after"}"#,
            ))
            .unwrap();
        flood.frames
    });
    let mut tail = Vec::new();
    let mut chunk = [0u8; 65536];
    let mut total = 0usize;
    while !String::from_utf8_lossy(&tail).contains(r#""request_id":"after""#) {
        let n = c.read(&mut chunk).expect("answer after the flood");
        assert!(n > 0, "closed during a ping flood");
        total += n;
        tail.extend_from_slice(&chunk[..n]);
        let keep = tail.len().saturating_sub(256);
        tail.drain(..keep);
    }
    let pings = finisher.join().unwrap();
    // Every pong frame is 127 bytes; the answer after them is small.
    assert!(
        total as u64 >= pings * 127,
        "{total} bytes for {pings} pings"
    );
    still_serving(&s);
}

#[test]
fn abrupt_disconnects_with_queued_output_cost_nothing() {
    // Large enough that every subscriber has output queued past what the
    // kernel holds for it, and no overflow cuts it first.
    let s = start_with(|c| c.outbound_limit = 64 << 20);
    create_topic(s.addr, "t");
    let subs: Vec<Ws> = (0..20)
        .map(|_| {
            let mut ws = Ws::connect_stalling(s.addr);
            ws.subscribe("t", &uuid(), 0);
            ws
        })
        .collect();
    let events = events_past_the_kernel(2048, 0);
    let mut publisher = Ws::connect(s.addr);
    for n in 0..events {
        publisher.send(json!({"type":"publish","topic":"t","message":{"id":uuid(),"payload":{"n": n, "pad": "p".repeat(2000)}}}));
        if n % 100 == 99 {
            for _ in 0..100 {
                assert_eq!(publisher.recv()["type"], "ack");
            }
        }
    }
    for _ in 0..events % 100 {
        assert_eq!(publisher.recv()["type"], "ack");
    }
    // Output really is queued: of what was delivered, a quarter of a
    // kernel send buffer per subscriber at least has not been written yet.
    let delivered_bytes = 20 * events * 2000;
    let sent = metric(s.addr, "pubsubd_sent_bytes_total");
    assert!(
        delivered_bytes.saturating_sub(sent) > 20 * send_buffer_max() as u64 / 4,
        "{sent} of {delivered_bytes} bytes written: nothing much queued for 20 stalled readers"
    );
    // Now they vanish, with unread data (a reset) and queued output.
    drop(subs);
    wait_until("every dropped subscriber to be cleaned up", || {
        health(s.addr)["subscribers"] == 0
    });
    wait_until("their connections to be gone", || {
        health(s.addr)["connections"] == 2 // the publisher and this request
    });
    assert_eq!(publisher.publish("t", json!("after"))["type"], "ack");
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
