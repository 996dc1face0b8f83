//! Randomized no-panic test: generated and mutated inputs for the HTTP request
//! parser and the client-message parser (called directly, 100 000+ each), then
//! mutated requests and frames over real sockets to a live server, which must
//! still answer afterwards. Deterministic: set PUBSUBD_FUZZ_SEED to replay.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;
use serde_json::json;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

fn seed() -> u64 {
    let seed = std::env::var("PUBSUBD_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_cafe_f00d_0001);
    println!("fuzz seed: {seed} (set PUBSUBD_FUZZ_SEED to replay)");
    seed
}

const HTTP_SEEDS: &[&str] = &[
    "GET /health HTTP/1.1\r\nHost: x\r\n\r\n",
    "POST /topics HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 15\r\n\r\n{\"name\":\"abc\"}",
    "DELETE /topics/a%3Ab HTTP/1.1\r\nX-API-Key: k\r\n\r\n",
    "GET /ws?api_key=k HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    "GET /stats HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
];

const MESSAGE_SEEDS: &[&str] = &[
    r#"{"type":"subscribe","topic":"orders","client_id":"s1","last_n":5,"request_id":"r1"}"#,
    r#"{"type":"unsubscribe","topic":"orders","client_id":"s1","request_id":"r2"}"#,
    r#"{"type":"publish","topic":"orders","message":{"id":"550e8400-e29b-41d4-a716-446655440000","payload":{"order_id":"ORD-123","amount":99.5,"a":[1,2,{"b":null}]}},"request_id":"r3"}"#,
    r#"{"type":"ping","request_id":4}"#,
];

const TOKENS: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b":",
    b",",
    b"\\",
    b"\\u0000",
    b"\\ud800",
    b"null",
    b"-0",
    b"1e999",
    b"\r\n",
    b"\r\n\r\n",
    b"%",
    b"%zz",
    b"\xff",
    b"\x00",
    b"Content-Length: 99999999999999999999\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"type",
    b"publish",
    b"subscribe",
    b"topic",
];

/// One mutation of `input`: flips, cuts, splices, insertions, repetitions.
fn mutate(rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(out.len() + 1);
        match rng.below(7) {
            0 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] ^= 1 << rng.below(8);
            }
            1 => out.truncate(at),
            2 => {
                let tok = rng.pick(TOKENS);
                out.splice(at..at, tok.iter().copied());
            }
            3 if !out.is_empty() => {
                let end = (at + rng.below(16)).min(out.len());
                out.drain(at.min(end)..end);
            }
            4 => {
                let cut = rng.below(other.len() + 1);
                out.truncate(at);
                out.extend_from_slice(&other[cut..]);
            }
            5 => {
                let piece = out[at.min(out.len())..].to_vec();
                for _ in 0..rng.below(50) {
                    out.extend_from_slice(&piece[..piece.len().min(32)]);
                }
            }
            _ => {
                for _ in 0..rng.below(32) {
                    out.push(rng.next() as u8);
                }
            }
        }
    }
    out
}

#[test]
fn parsers_never_panic_on_generated_input() {
    let mut rng = Rng(seed());
    for i in 0..120_000 {
        let base = rng.pick(HTTP_SEEDS).as_bytes();
        let other = rng.pick(HTTP_SEEDS).as_bytes();
        let input = if i % 10 == 0 {
            (0..rng.below(300)).map(|_| rng.next() as u8).collect()
        } else {
            mutate(&mut rng, base, other)
        };
        let _ = pubsubd::http::parse(&input, 1 << 16);
    }
    for i in 0..120_000 {
        let base = rng.pick(MESSAGE_SEEDS).as_bytes();
        let other = rng.pick(MESSAGE_SEEDS).as_bytes();
        let input = if i % 10 == 0 {
            (0..rng.below(200)).map(|_| rng.next() as u8).collect()
        } else {
            mutate(&mut rng, base, other)
        };
        let text = String::from_utf8_lossy(&input);
        let parsed = pubsubd::protocol::parse(&text);
        if let Err(message) = &parsed.request {
            assert!(!message.is_empty(), "a refusal must say why: {text:?}");
        }
    }
}

fn masked_text(payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x81];
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n.min(65535) as u16).to_be_bytes());
        }
    }
    f.extend_from_slice(&[0, 0, 0, 0]);
    f.extend_from_slice(&payload[..payload.len().min(65535)]);
    f
}

#[test]
fn a_live_server_survives_mutated_traffic() {
    let s = start_with(|c| {
        c.request_timeout = Duration::from_millis(300);
        c.auto_create_topics = true;
    });
    let mut rng = Rng(seed() ^ 0xabcdef);
    let read_some = |c: &mut TcpStream| {
        let mut buf = [0u8; 4096];
        let _ = c.read(&mut buf);
    };
    // Mutated HTTP requests, each on its own connection.
    for _ in 0..1500 {
        let base = rng.pick(HTTP_SEEDS).as_bytes();
        let other = rng.pick(HTTP_SEEDS).as_bytes();
        let input = mutate(&mut rng, base, other);
        let mut c = TcpStream::connect(s.addr).unwrap();
        c.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let _ = c.write_all(&input);
        read_some(&mut c);
    }
    // Mutated messages (and mutated raw frames) on a few WebSockets.
    for round in 0..20 {
        let mut ws = Ws::connect(s.addr);
        let raw = ws.ws.get_mut();
        raw.set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        for _ in 0..100 {
            let base = rng.pick(MESSAGE_SEEDS).as_bytes();
            let other = rng.pick(MESSAGE_SEEDS).as_bytes();
            let input = mutate(&mut rng, base, other);
            let bytes = if round % 4 == 3 {
                // Mutate the frame itself, not just its text.
                mutate(&mut rng, &masked_text(&input), b"\x88\x80\0\0\0\0")
            } else {
                masked_text(&input)
            };
            if raw.write_all(&bytes).is_err() {
                break;
            }
        }
        read_some(raw);
    }
    // Still serving, and still correct.
    assert_eq!(http(s.addr, "GET", "/health", None).status, 200);
    let mut sub = Ws::connect(s.addr);
    sub.subscribe("after-fuzz", "checker", 0);
    let mut publisher = Ws::connect(s.addr);
    assert_eq!(
        publisher.publish("after-fuzz", json!("fine"))["type"],
        "ack"
    );
    assert_eq!(sub.recv()["message"]["payload"], "fine");
}
