//! Flow control (protocol §3): stalled readers under both overflow policies,
//! and what they cost everybody else.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::extra::*;
use common::*;
use pubsubd::OverflowPolicy;
use serde_json::{Value, json};
use tungstenite::protocol::frame::coding::CloseCode;

/// Enough 1 KiB events to overflow what the kernel holds for a stalled
/// reader: the server's send buffer at its largest (the third field of
/// `/proc/sys/net/ipv4/tcp_wmem`), with margin; about 6 000 with the usual 4 MB.
fn events() -> u64 {
    events_past_the_kernel(1024, 0)
}

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
    let events = events();
    create_topic(s.addr, "feed");
    let mut stalled = stalled_subscriber(&s, "feed");
    let addr = s.addr;
    let readers: Vec<_> = (0..3)
        .map(|i| {
            let mut ws = Ws::connect(addr);
            ws.subscribe("feed", &format!("r{i}"), 0);
            std::thread::spawn(move || (read_in_order(&mut ws, events - 1), ws))
        })
        .collect();
    let mut publisher = Ws::connect(s.addr);
    publish_many(&mut publisher, "feed", 0, events);
    // Kept open until the counts below are read.
    let mut normal = Vec::new();
    for r in readers {
        let (seen, ws) = r.join().expect("reader");
        assert_eq!(
            seen,
            (0..events).collect::<Vec<_>>(),
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
    assert!(last.is_some_and(|l| l < events - 1));
    assert_eq!(stalled.expect_close(), Some(CloseCode::Policy));
}

#[test]
fn a_slow_consumer_that_never_reads_is_cut_after_the_grace_period_not_before() {
    const GRACE: Duration = Duration::from_millis(1500);
    // The server's clock is read once per loop turn, so its deadline may be
    // computed from a moment a little before the overflow.
    const TURN: Duration = Duration::from_millis(250);
    let s = start_with(|c| {
        c.outbound_limit = 16 << 10;
        c.slow_consumer_grace = GRACE;
    });
    create_topic(s.addr, "feed");
    let stalled = stalled_subscriber(&s, "feed");
    let addr = s.addr;
    let events = events();
    let publisher = std::thread::spawn(move || {
        let mut p = Ws::connect(addr);
        publish_many(&mut p, "feed", 0, events);
        p // kept open: the connection count below includes it
    });
    // The overflow happened after `not_yet` (the start of the last look that
    // saw no disconnect) and before the first look that saw one returned.
    let started = Instant::now();
    let mut not_yet = started;
    loop {
        let t = Instant::now();
        let n = stats(addr)["totals"]["slow_consumer_disconnects"].clone();
        if n == 1 {
            break;
        }
        assert_eq!(n, 0, "counted before the overflow");
        not_yet = t;
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the stalled reader never overflowed"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // The socket stays until the grace period is over, then goes.
    let cut = loop {
        let n = health(addr)["connections"].clone();
        let t = Instant::now();
        if n == 2 {
            break t; // the publisher and this request
        }
        assert!(n.as_u64().is_some_and(|n| n >= 3), "unexpected count {n}");
        assert!(
            t - not_yet < GRACE + TIMEOUT,
            "the slow consumer was not cut {:?} after its overflow",
            GRACE + TIMEOUT
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    assert!(
        cut - not_yet >= GRACE - TURN,
        "cut {:?} after the overflow, before the grace period of {GRACE:?}",
        cut - not_yet
    );
    let _publisher = publisher.join().expect("publisher");
    // Its socket was cut: reading drains what the kernel holds, then hits EOF
    // or a reset; a read that times out means the socket is still open.
    let mut raw = stalled.ws.into_inner();
    raw.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match raw.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the slow consumer's socket is still open: {e}"),
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
    let events = events();
    let reader = std::thread::spawn(move || read_in_order(&mut normal, events - 1));
    let mut publisher = Ws::connect(addr);
    publish_many(&mut publisher, "feed", 0, events);
    assert_eq!(reader.join().unwrap().len() as u64, events);

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
    while got + dropped < events {
        let v = stalled.recv_skip_heartbeat();
        assert_eq!(v["type"], "event", "{v}");
        let n = v["message"]["payload"]["n"].as_u64().unwrap();
        assert!(last.is_none_or(|l| n > l), "out of order or duplicate");
        last = Some(n);
        got += 1;
    }
    assert_eq!(got + dropped, events);
    // Drop-oldest keeps the newest: the last event published is the last one read.
    assert_eq!(last, Some(events - 1));
    let st = stats(s.addr);
    assert_eq!(st["topics"]["feed"]["dropped"], dropped);
    assert_eq!(st["totals"]["dropped"], dropped);
    assert_eq!(st["topics"]["feed"]["slow_consumer_disconnects"], 0);
    stalled.ping();
}

#[test]
fn memory_stays_bounded_under_a_stalled_reader() {
    // The built binary in its own process, so that its memory is measured
    // alone, not with the test process and the tests running beside it.
    let server = Binary::start(&[
        "--outbound-limit",
        "262144",
        "--overflow-policy",
        "drop-oldest",
        "--history",
        "10",
    ]);
    create_topic(server.addr, "feed");
    let _stalled: Vec<Ws> = (0..5)
        .map(|_| {
            let mut ws = Ws::connect_stalling(server.addr);
            ws.subscribe("feed", &uuid(), 0);
            ws
        })
        .collect();
    let mut publisher = Ws::connect(server.addr);
    let warm = events();
    publish_many(&mut publisher, "feed", 0, warm);
    let before = server.rss_kib();
    // 30 000 more events of 1 KiB: 150 MB offered to five readers that never read.
    publish_many(&mut publisher, "feed", warm, 30_000);
    let after = server.rss_kib();
    let growth = after.saturating_sub(before);
    assert!(
        growth < 16 << 10,
        "the server's RSS grew by {growth} KiB (from {before} KiB) under stalled readers"
    );
    // Most of what was offered to the stalled readers was dropped, not kept.
    let dropped = stats(server.addr)["totals"]["dropped"].as_u64().unwrap();
    assert!(dropped > 5 * 30_000 / 2, "only {dropped} dropped");
}

#[test]
fn a_client_that_sends_without_reading_is_pushed_back_not_disconnected() {
    const LIMIT: usize = 16 << 10;
    /// Requests sent once the client reads again.
    const AFTER: u64 = 200;
    let s = start_with(|c| c.outbound_limit = LIMIT);
    let mut ws = Ws::connect(s.addr);
    // Pings with big request ids, answers not read while sending: the server
    // stops reading this client instead of dropping answers, so the sender
    // stalls. Only once it has stalled does the client read.
    let text = format!(r#"{{"type":"ping","request_id":"{}"}}"#, "i".repeat(1000));
    let cap = 2 * send_buffer_max() + receive_buffer_max() + LIMIT + (1 << 20);
    let (tx, rx) = std::sync::mpsc::channel();
    let sender = {
        let mut raw = ws.ws.get_ref().try_clone().unwrap();
        std::thread::spawn(move || {
            let frame = client_frame(0x1, text.as_bytes());
            let mut flood = Flood::new(frame.clone());
            let blocked = flood.until_blocked(&mut raw, Duration::from_millis(500), cap);
            let whole = flood.frames + u64::from(flood.partial > 0);
            tx.send((blocked, whole, flood.bytes)).unwrap();
            if !blocked {
                return flood.frames;
            }
            flood.finish_frame(&mut raw);
            raw.set_write_timeout(Some(TIMEOUT)).unwrap();
            for _ in 0..AFTER {
                raw.write_all(&frame).unwrap();
            }
            flood.frames + AFTER
        })
    };
    let (blocked, requests, bytes) = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("the sender reports");
    assert!(
        blocked,
        "{bytes} bytes of requests went in unanswered and the server never stopped reading"
    );
    // The server is alive and not reading this client.
    let before = metric(s.addr, "pubsubd_received_bytes_total");
    std::thread::sleep(Duration::from_millis(200)); // an absence to observe
    let received = metric(s.addr, "pubsubd_received_bytes_total");
    assert_eq!(
        received - before,
        METRICS_REQUEST.len() as u64,
        "the server kept reading a client over its outbound limit"
    );
    // Every request is answered, none dropped, in order.
    for _ in 0..requests + AFTER {
        let pong = ws.recv();
        assert_eq!(pong["type"], "pong");
    }
    assert_eq!(sender.join().unwrap(), requests + AFTER);
    ws.ping();
    assert_eq!(stats(s.addr)["totals"]["slow_consumer_disconnects"], 0);
}

/// Events drop-oldest took from a stalled reader after `count` 1 KiB
/// publishes, on a server with `--socket-send-buffer send_buffer`.
fn dropped_for_a_stalled_reader(send_buffer: usize, count: u64) -> u64 {
    let s = start_with(|c| {
        c.outbound_limit = 64 << 10;
        c.overflow_policy = OverflowPolicy::DropOldest;
        c.socket_send_buffer = send_buffer;
    });
    create_topic(s.addr, "feed");
    let stalled = stalled_subscriber(&s, "feed");
    let mut publisher = Ws::connect(s.addr);
    publish_many(&mut publisher, "feed", 0, count);
    let dropped = stats(s.addr)["totals"]["dropped"].as_u64().unwrap();
    drop(stalled);
    dropped
}

#[test]
fn a_small_socket_send_buffer_keeps_less_in_the_kernel() {
    // 200 KiB of events: the kernel's own send buffer (autotuned up to
    // tcp_wmem's maximum, 4 MB by default) takes most of them; a 4 KiB one
    // takes a few, so the 64 KiB outbound limit is reached and events are dropped.
    let small = dropped_for_a_stalled_reader(4096, 200);
    let kernel_default = dropped_for_a_stalled_reader(0, 200);
    assert!(small > 0, "nothing dropped with a 4 KiB send buffer");
    assert!(
        small > kernel_default,
        "a 4 KiB send buffer dropped {small}, the kernel's default {kernel_default}"
    );
}
