//! Semantics (protocol §2): fan-out, isolation, order, replay, takeover,
//! deletion and cleanup, over real WebSockets.

mod common;

use std::collections::HashMap;

use common::*;
use serde_json::{Value, json};

fn payloads_of(ws: &mut Ws, n: usize) -> Vec<Value> {
    (0..n)
        .map(|_| {
            let v = ws.recv();
            assert_eq!(v["type"], "event", "{v}");
            v["message"]["payload"].clone()
        })
        .collect()
}

#[test]
fn replay_sends_the_last_n_kept_then_live_events() {
    let s = start_with(|c| c.history = 5);
    create_topic(s.addr, "r");
    let mut publisher = Ws::connect(s.addr);
    for n in 1..=8 {
        assert_eq!(publisher.publish("r", json!(n))["type"], "ack");
    }
    let mut three = Ws::connect(s.addr);
    three.subscribe("r", "three", 3);
    assert_eq!(
        payloads_of(&mut three, 3),
        vec![json!(6), json!(7), json!(8)]
    );

    let mut all = Ws::connect(s.addr);
    all.subscribe("r", "all", 100);
    assert_eq!(
        payloads_of(&mut all, 5),
        (4..=8).map(|n| json!(n)).collect::<Vec<_>>()
    );

    let mut none = Ws::connect(s.addr);
    none.subscribe("r", "none", 0);

    // Then live events follow, with no gap and no duplicate.
    assert_eq!(publisher.publish("r", json!(9))["type"], "ack");
    for ws in [&mut three, &mut all, &mut none] {
        assert_eq!(payloads_of(ws, 1), vec![json!(9)]);
        ws.ping();
    }
}

#[test]
fn replayed_events_keep_their_original_stamp() {
    let s = start();
    create_topic(s.addr, "r");
    let mut live = Ws::connect(s.addr);
    live.subscribe("r", "live", 0);
    let mut publisher = Ws::connect(s.addr);
    publisher.publish("r", json!("x"));
    let original = live.recv();
    let mut late = Ws::connect(s.addr);
    late.subscribe("r", "late", 1);
    assert_eq!(late.recv(), original);
}

#[test]
fn replay_races_no_live_publish() {
    // Subscribers join with last_n while publishes are in flight: halfway
    // through sending a window of publishes (their acks not read yet), the
    // publisher lets a connected subscriber send its subscribe, so the
    // subscribe lands among the publishes, on the seam between replay and
    // live delivery. Each
    // subscriber sees the last 20 events kept at its subscribe, then every
    // live event: a contiguous run (no gap, no duplicate) to the end.
    const TOTAL: u64 = 400;
    const WINDOW: u64 = 40;
    let s = start_with(|c| c.history = 50);
    create_topic(s.addr, "race");
    let addr = s.addr;
    let (in_flight_tx, in_flight_rx) = std::sync::mpsc::channel();
    let (joined_tx, joined_rx) = std::sync::mpsc::channel::<()>();
    let publisher = std::thread::spawn(move || {
        let mut p = Ws::connect(addr);
        for window in 0..TOTAL / WINDOW {
            // Every other window, a subscriber joins while this one is in flight.
            let joins = window % 2 == 1;
            for i in 0..WINDOW {
                if joins && i == WINDOW / 2 {
                    in_flight_tx.send(window * WINDOW).unwrap();
                }
                let n = window * WINDOW + i;
                p.send(
                    json!({"type":"publish","topic":"race","message":{"id":uuid(),"payload":n}}),
                );
            }
            if joins {
                joined_rx.recv().unwrap();
            }
            for _ in 0..WINDOW {
                assert_eq!(p.recv()["type"], "ack");
            }
        }
    });
    let mut waiting: Vec<Ws> = (0..TOTAL / WINDOW / 2)
        .map(|_| Ws::connect(s.addr))
        .collect();
    let mut joined = Vec::new();
    // `acked`: publishes acked before the window in flight.
    for (i, acked) in in_flight_rx.iter().enumerate() {
        let mut ws = waiting.pop().expect("one subscriber per join");
        ws.subscribe("race", &format!("j{i}"), 20);
        joined_tx.send(()).unwrap();
        joined.push((acked, ws));
    }
    publisher.join().unwrap();
    assert_eq!(joined.len() as u64, TOTAL / WINDOW / 2);
    for (acked, mut ws) in joined {
        let mut seen = Vec::new();
        loop {
            let v = ws.recv();
            let n = v["message"]["payload"].as_u64().unwrap();
            seen.push(n);
            if n == TOTAL - 1 {
                break;
            }
        }
        let first = seen[0];
        assert_eq!(seen, (first..TOTAL).collect::<Vec<_>>(), "gap or duplicate");
        // The subscribe met between `acked` and `acked + WINDOW` events
        // kept: the replay starts 20 before that.
        assert!(
            (acked - 20..=acked + WINDOW - 20).contains(&first),
            "replay from {first} for a subscribe after {acked} acked publishes"
        );
    }
}

#[test]
fn fan_out_reaches_100_subscribers_exactly_once() {
    let s = start();
    create_topic(s.addr, "fan");
    let mut subs: Vec<Ws> = (0..100)
        .map(|i| {
            let mut ws = Ws::connect(s.addr);
            ws.subscribe("fan", &format!("s{i}"), 0);
            ws
        })
        .collect();
    let mut publisher = Ws::connect(s.addr);
    for n in 0..20 {
        assert_eq!(publisher.publish("fan", json!(n))["type"], "ack");
    }
    for ws in &mut subs {
        assert_eq!(
            payloads_of(ws, 20),
            (0..20).map(|n| json!(n)).collect::<Vec<_>>()
        );
        // Nothing more (no duplicate): the next message is the pong.
        ws.ping();
    }
    assert_eq!(stats(s.addr)["totals"]["delivered"], 2000);
}

#[test]
fn events_reach_their_topic_only() {
    let s = start();
    create_topic(s.addr, "a");
    create_topic(s.addr, "b");
    let mut on_a = Ws::connect(s.addr);
    on_a.subscribe("a", "x", 0);
    let mut on_b = Ws::connect(s.addr);
    on_b.subscribe("b", "y", 0);
    let mut publisher = Ws::connect(s.addr);
    publisher.publish("a", json!("for a"));
    publisher.publish("b", json!("for b"));
    assert_eq!(payloads_of(&mut on_a, 1), vec![json!("for a")]);
    assert_eq!(payloads_of(&mut on_b, 1), vec![json!("for b")]);
    on_a.ping();
    on_b.ping();
}

#[test]
fn each_publishers_order_is_kept_under_concurrency() {
    let s = start();
    create_topic(s.addr, "o");
    let mut subs: Vec<Ws> = (0..2)
        .map(|i| {
            let mut ws = Ws::connect(s.addr);
            ws.subscribe("o", &format!("s{i}"), 0);
            ws
        })
        .collect();
    const PER: u64 = 300;
    let addr = s.addr;
    let publishers: Vec<_> = (0..4)
        .map(|p| {
            std::thread::spawn(move || {
                let mut ws = Ws::connect(addr);
                // Pipeline the publishes, then collect the acks.
                for n in 0..PER {
                    ws.send(json!({"type":"publish","topic":"o","message":{"id":uuid(),"payload":{"p":p,"n":n}}}));
                }
                for _ in 0..PER {
                    assert_eq!(ws.recv()["type"], "ack");
                }
            })
        })
        .collect();
    for p in publishers {
        p.join().unwrap();
    }
    for ws in &mut subs {
        let mut next: HashMap<u64, u64> = HashMap::new();
        for _ in 0..4 * PER {
            let payload = &payloads_of(ws, 1)[0];
            let (p, n) = (
                payload["p"].as_u64().unwrap(),
                payload["n"].as_u64().unwrap(),
            );
            let expected = next.entry(p).or_insert(0);
            assert_eq!(n, *expected, "publisher {p} out of order");
            *expected += 1;
        }
        assert!(next.values().all(|&n| n == PER));
        ws.ping();
    }
}

#[test]
fn subscribing_again_keeps_one_delivery_path() {
    let s = start();
    create_topic(s.addr, "t");
    let mut ws = Ws::connect(s.addr);
    ws.subscribe("t", "c", 0);
    ws.subscribe("t", "c", 0);
    assert_eq!(health(s.addr)["subscribers"], 1);
    let mut publisher = Ws::connect(s.addr);
    publisher.publish("t", json!("once"));
    assert_eq!(payloads_of(&mut ws, 1), vec![json!("once")]);
    ws.ping();
}

#[test]
fn a_client_id_on_another_connection_takes_over() {
    let s = start();
    create_topic(s.addr, "t");
    let mut old = Ws::connect(s.addr);
    old.subscribe("t", "shared", 0);
    let mut new = Ws::connect(s.addr);
    new.subscribe("t", "shared", 0);
    let info = old.recv();
    assert_eq!(info["type"], "info");
    assert_eq!(info["msg"], "subscription_replaced");
    assert_eq!(info["topic"], "t");
    assert_eq!(health(s.addr)["subscribers"], 1);
    let mut publisher = Ws::connect(s.addr);
    publisher.publish("t", json!("to the new one"));
    assert_eq!(payloads_of(&mut new, 1), vec![json!("to the new one")]);
    // The old connection stays open and gets nothing more.
    old.ping();
}

#[test]
fn deleting_a_topic_tells_subscribers_and_keeps_them_connected() {
    let s = start();
    create_topic(s.addr, "doomed");
    create_topic(s.addr, "kept");
    let mut ws = Ws::connect(s.addr);
    ws.subscribe("doomed", "c", 0);
    ws.subscribe("kept", "c", 0);
    assert_eq!(http(s.addr, "DELETE", "/topics/doomed", None).status, 200);
    let info = ws.recv();
    assert_eq!(info["type"], "info");
    assert_eq!(info["msg"], "topic_deleted");
    assert_eq!(info["topic"], "doomed");
    ws.ping();
    assert_eq!(health(s.addr)["subscribers"], 1);
    // Its other subscription still works.
    let mut publisher = Ws::connect(s.addr);
    publisher.publish("kept", json!(1));
    assert_eq!(payloads_of(&mut ws, 1), vec![json!(1)]);
    // A topic created again under the same name starts empty.
    create_topic(s.addr, "doomed");
    assert_eq!(stats(s.addr)["topics"]["doomed"]["messages"], 0);
}

#[test]
fn closing_a_connection_removes_its_subscriptions() {
    let s = start();
    for t in ["a", "b", "c"] {
        create_topic(s.addr, t);
    }
    let mut clean = Ws::connect(s.addr);
    let abrupt = {
        let mut ws = Ws::connect(s.addr);
        for t in ["a", "b", "c"] {
            ws.subscribe(t, "abrupt", 0);
            clean.subscribe(t, "clean", 0);
        }
        ws
    };
    assert_eq!(health(s.addr)["subscribers"], 6);
    // Abrupt: the socket just goes away.
    drop(abrupt);
    wait_until("abrupt disconnect cleaned up", || {
        health(s.addr)["subscribers"] == 3
    });
    // Clean: a close handshake.
    clean.ws.close(None).unwrap();
    while clean.ws.read().is_ok() {}
    wait_until("clean close cleaned up", || {
        health(s.addr)["subscribers"] == 0
    });
    let st = stats(s.addr);
    for t in ["a", "b", "c"] {
        assert_eq!(st["topics"][t]["subscribers"], 0);
    }
    // The client ids are free again: no takeover notice for a new subscriber.
    let mut again = Ws::connect(s.addr);
    again.subscribe("a", "abrupt", 0);
    again.ping();
}

#[test]
fn a_null_payload_is_published_like_any_other_json_value() {
    // Protocol §1: message.payload is any JSON value, and null is one.
    let s = start();
    create_topic(s.addr, "t");
    let mut sub = Ws::connect(s.addr);
    sub.subscribe("t", "s", 0);
    let mut publisher = Ws::connect(s.addr);
    let answer = publisher.publish("t", Value::Null);
    assert_eq!(answer["type"], "ack", "{answer}");
    let event = sub.recv();
    assert_eq!(event["type"], "event", "{event}");
    assert!(
        event["message"]
            .as_object()
            .is_some_and(|m| m.get("payload") == Some(&Value::Null))
    );
}
