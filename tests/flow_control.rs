//! Flow control (protocol §3): stalled readers under both overflow policies,
//! and what they cost everybody else.

mod common;

use std::io::Read;
use std::time::Duration;

use common::*;
use pubsubd::OverflowPolicy;
use serde_json::{Value, json};
use tungstenite::protocol::frame::coding::CloseCode;

/// 6 MB of 1 KiB events: more than the kernel holds for a stalled reader
/// (about 4 MB of send buffer on the server's side of loopback).
const EVENTS: u64 = 6000;

/// A 1 KiB payload carrying a sequence number.
fn payload(n: u64) -> Value {
    json!({"n": n, "pad": "x".repeat(1000)})
}

/// Publishes `count` events, pipelined in windows, and waits for every ack.
fn publish_many(ws: &mut Ws, topic: &str, from: u64, count: u64) {
    const WINDOW: u64 = 100;
    let mut n = from;
    while n < from + count {
        let batch = WINDOW.min(from + count - n);
        for i in 0..batch {
            ws.send(json!({"type":"publish","topic":topic,"message":{"id":uuid(),"payload":payload(n + i)}}));
        }
        for _ in 0..batch {
            assert_eq!(ws.recv()["type"], "ack");
        }
        n += batch;
    }
}

/// Reads events until sequence number `last`, checking order and duplicates.
fn read_in_order(ws: &mut Ws, last: u64) -> Vec<u64> {
    let mut seen = Vec::new();
    loop {
        let v = ws.recv_skip_heartbeat();
        if v["type"] != "event" {
            continue;
        }
        let n = v["message"]["payload"]["n"].as_u64().unwrap();
        if let Some(&prev) = seen.last() {
            assert!(n > prev, "out of order or duplicate: {n} after {prev}");
        }
        seen.push(n);
        if n == last {
            return seen;
        }
    }
}

fn stalled_subscriber(s: &Server, topic: &str) -> Ws {
    let mut ws = Ws::connect_stalling(s.addr);
    ws.subscribe(topic, &format!("stalled-{}", uuid()), 0);
    ws
}

#[test]
fn a_stalled_reader_costs_the_others_nothing_and_is_disconnected() {
    let s = start_with(|c| {
        c.outbound_limit = 64 << 10;
        c.slow_consumer_grace = Duration::from_secs(30);
    });
    create_topic(s.addr, "feed");
    let mut stalled = stalled_subscriber(&s, "feed");
    let addr = s.addr;
    let readers: Vec<_> = (0..3)
        .map(|i| {
            let mut ws = Ws::connect(addr);
            ws.subscribe("feed", &format!("r{i}"), 0);
            std::thread::spawn(move || (read_in_order(&mut ws, EVENTS - 1), ws))
        })
        .collect();
    let mut publisher = Ws::connect(s.addr);
    publish_many(&mut publisher, "feed", 0, EVENTS);
    // Kept open until the counts below are read.
    let mut normal = Vec::new();
    for r in readers {
        let (seen, ws) = r.join().expect("reader");
        assert_eq!(
            seen,
            (0..EVENTS).collect::<Vec<_>>(),
            "a normal reader lost events"
        );
        normal.push(ws);
    }
    let st = stats(s.addr);
    assert_eq!(st["topics"]["feed"]["slow_consumer_disconnects"], 1);
    assert_eq!(st["totals"]["slow_consumer_disconnects"], 1);
    assert_eq!(
        st["topics"]["feed"]["subscribers"], 3,
        "the slow consumer's subscription is gone"
    );
    // The stalled reader, once it reads, finds in-order events, SLOW_CONSUMER, then close 1008.
    let mut last = None;
    loop {
        let v = stalled.recv_skip_heartbeat();
        match v["type"].as_str() {
            Some("event") => {
                let n = v["message"]["payload"]["n"].as_u64().unwrap();
                assert!(last.is_none_or(|l| n == l + 1), "gap before the overflow");
                last = Some(n);
            }
            Some("error") => {
                assert_eq!(v["error"]["code"], "SLOW_CONSUMER");
                break;
            }
            _ => panic!("unexpected {v}"),
        }
    }
    assert!(last.is_some_and(|l| l < EVENTS - 1));
    assert_eq!(stalled.expect_close(), Some(CloseCode::Policy));
}

#[test]
fn a_slow_consumer_that_never_reads_is_cut_after_the_grace_period() {
    let s = start_with(|c| {
        c.outbound_limit = 16 << 10;
        c.slow_consumer_grace = Duration::from_millis(300);
    });
    create_topic(s.addr, "feed");
    let stalled = stalled_subscriber(&s, "feed");
    let mut publisher = Ws::connect(s.addr);
    publish_many(&mut publisher, "feed", 0, EVENTS);
    wait_until("the slow consumer's socket to be dropped", || {
        health(s.addr)["connections"] == 2 // the publisher and this HTTP request
    });
    // Its socket was cut: reading drains what the kernel holds, then hits EOF or a reset.
    let mut raw = stalled.ws.into_inner();
    raw.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match raw.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
}

#[test]
fn drop_oldest_drops_events_and_says_how_many() {
    let s = start_with(|c| {
        c.outbound_limit = 64 << 10;
        c.overflow_policy = OverflowPolicy::DropOldest;
    });
    create_topic(s.addr, "feed");
    let mut stalled = stalled_subscriber(&s, "feed");
    let mut normal = Ws::connect(s.addr);
    normal.subscribe("feed", "normal", 0);
    let addr = s.addr;
    let reader = std::thread::spawn(move || read_in_order(&mut normal, EVENTS - 1));
    let mut publisher = Ws::connect(addr);
    publish_many(&mut publisher, "feed", 0, EVENTS);
    assert_eq!(reader.join().unwrap().len() as u64, EVENTS);

    // The stalled reader catches up: events in order, then the drop count.
    let mut got = 0u64;
    let mut last = None;
    let dropped = loop {
        let v = stalled.recv_skip_heartbeat();
        match (v["type"].as_str(), v["msg"].as_str()) {
            (Some("event"), _) => {
                let n = v["message"]["payload"]["n"].as_u64().unwrap();
                assert!(last.is_none_or(|l| n > l), "out of order or duplicate");
                last = Some(n);
                got += 1;
            }
            (Some("info"), Some("messages_dropped")) => break v["dropped"].as_u64().unwrap(),
            _ => panic!("unexpected {v}"),
        }
    };
    assert!(dropped > 0);
    // What it got plus what it was told it lost is everything published (the
    // notice comes once the queue drains, so a few more events may follow it).
    while got + dropped < EVENTS {
        let v = stalled.recv_skip_heartbeat();
        assert_eq!(v["type"], "event", "{v}");
        got += 1;
    }
    assert_eq!(got + dropped, EVENTS);
    assert_eq!(last.map(|l| l < EVENTS), Some(true));
    let st = stats(s.addr);
    assert_eq!(st["topics"]["feed"]["dropped"], dropped);
    assert_eq!(st["totals"]["dropped"], dropped);
    assert_eq!(st["topics"]["feed"]["slow_consumer_disconnects"], 0);
    stalled.ping();
}

#[test]
fn memory_stays_bounded_under_a_stalled_reader() {
    fn rss_kib() -> u64 {
        std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }
    let s = start_with(|c| {
        c.outbound_limit = 256 << 10;
        c.overflow_policy = OverflowPolicy::DropOldest;
        c.history = 10;
    });
    create_topic(s.addr, "feed");
    let _stalled: Vec<Ws> = (0..5).map(|_| stalled_subscriber(&s, "feed")).collect();
    let mut publisher = Ws::connect(s.addr);
    publish_many(&mut publisher, "feed", 0, 6000);
    let before = rss_kib();
    // 30 000 more events of 1 KiB: 150 MB offered to five readers that never read.
    publish_many(&mut publisher, "feed", 6000, 30_000);
    let growth = rss_kib().saturating_sub(before);
    assert!(
        growth < 16 << 10,
        "RSS grew by {growth} KiB under stalled readers"
    );
    // Most of what was offered to the stalled readers was dropped, not kept.
    let dropped = stats(s.addr)["totals"]["dropped"].as_u64().unwrap();
    assert!(dropped > 5 * 30_000 / 2, "only {dropped} dropped");
}

#[test]
fn a_client_that_sends_without_reading_is_pushed_back_not_disconnected() {
    let s = start_with(|c| c.outbound_limit = 16 << 10);
    let mut ws = Ws::connect(s.addr);
    // Many pings with big request ids, answers never read while sending:
    // the server stops reading this client instead of dropping answers.
    let id = "i".repeat(1000);
    let sender = {
        let mut raw = ws.ws.get_ref().try_clone().unwrap();
        std::thread::spawn(move || {
            use std::io::Write;
            let text = format!(r#"{{"type":"ping","request_id":"{id}"}}"#);
            let mut frame = vec![0x81, 0xFE];
            frame.extend_from_slice(&(text.len() as u16).to_be_bytes());
            frame.extend_from_slice(&[0, 0, 0, 0]);
            frame.extend_from_slice(text.as_bytes());
            for _ in 0..2000 {
                raw.write_all(&frame).unwrap();
            }
        })
    };
    for _ in 0..2000 {
        let pong = ws.recv();
        assert_eq!(pong["type"], "pong");
    }
    sender.join().unwrap();
    ws.ping();
    assert_eq!(stats(s.addr)["totals"]["slow_consumer_disconnects"], 0);
}
