//! Sequence numbers, epochs and `subscribe` with `since` (protocol §2
//! "Sequence numbers and recovery"), over real sockets: a client that lost
//! its connection comes back and gets every event it missed, once, in order,
//! and is told when the server no longer has them all.

mod common;

use std::net::Shutdown;
use std::time::Duration;

use common::extra::{Publisher, assert_exactly_once, publish_numbered};
use common::{Ws, create_topic, http, start, start_with};
use serde_json::{Value, json};

fn subscribe_since(
    ws: &mut Ws,
    topic: &str,
    client_id: &str,
    since: u64,
    epoch: Option<&str>,
) -> Value {
    let mut request = json!({"type":"subscribe","topic":topic,"client_id":client_id,"since":since,"request_id":"resume"});
    if let Some(epoch) = epoch {
        request["epoch"] = json!(epoch);
    }
    ws.send(request);
    let ack = ws.recv_skip_heartbeat();
    assert_eq!(ack["type"], "ack", "subscribe since {since}: {ack}");
    assert_eq!(ack["request_id"], "resume");
    ack
}

/// The next event, checked to be of `topic`; returns its seq.
fn next_seq(ws: &mut Ws, topic: &str) -> u64 {
    let event = ws.recv_skip_heartbeat();
    assert_eq!(event["type"], "event", "{event}");
    assert_eq!(event["topic"], topic, "{event}");
    event["seq"]
        .as_u64()
        .unwrap_or_else(|| panic!("event without a seq: {event}"))
}

/// Reads `expected.len()` events and checks their seqs and payloads (`{"n":seq}`).
fn expect_events(ws: &mut Ws, topic: &str, expected: impl IntoIterator<Item = u64>) {
    for seq in expected {
        let event = ws.recv_skip_heartbeat();
        assert_eq!(event["type"], "event", "{event}");
        assert_eq!(event["seq"], seq, "{event}");
        assert_eq!(event["message"]["payload"]["n"], seq, "{event}");
        assert_eq!(event["topic"], topic, "{event}");
    }
}

/// Proves nothing more was queued for `ws`: its next message is the pong.
fn expect_nothing_more(ws: &mut Ws) {
    ws.ping();
}

fn epoch_of(ack: &Value) -> String {
    let epoch = ack["epoch"]
        .as_str()
        .unwrap_or_else(|| panic!("no epoch in {ack}"));
    assert!(
        epoch.len() == 8 && epoch.bytes().all(|b| b.is_ascii_hexdigit()),
        "epoch {epoch:?}"
    );
    epoch.to_string()
}

#[test]
fn seq_counts_per_topic_on_events_and_publish_acks() {
    let server = start();
    create_topic(server.addr, "a");
    create_topic(server.addr, "b");
    let mut subscriber = Ws::connect(server.addr);
    let ack_a = subscriber.subscribe("a", "s", 0);
    assert_eq!(ack_a["seq"], 0, "a fresh topic is at seq 0: {ack_a}");
    assert!(
        ack_a.get("recovered").is_none(),
        "no since, no recovered: {ack_a}"
    );
    let ack_b = subscriber.subscribe("b", "s", 0);
    assert_ne!(
        epoch_of(&ack_a),
        epoch_of(&ack_b),
        "each topic has its own epoch"
    );

    let mut publisher = Ws::connect(server.addr);
    let mut expected = Vec::new();
    let (mut in_a, mut in_b) = (0, 0);
    for topic in ["a", "a", "b", "a", "b", "b", "b", "a"] {
        let count = if topic == "a" { &mut in_a } else { &mut in_b };
        *count += 1;
        let ack = publisher.publish(topic, json!({ "n": *count }));
        assert_eq!(ack["type"], "ack", "{ack}");
        assert_eq!(ack["seq"], *count, "{topic}: {ack}");
        expected.push((topic, *count));
    }
    for (topic, seq) in expected {
        let event = subscriber.recv_skip_heartbeat();
        assert_eq!(
            (event["topic"].as_str(), event["seq"].as_u64()),
            (Some(topic), Some(seq)),
            "{event}"
        );
        assert_eq!(event["message"]["payload"]["n"], seq);
    }
    expect_nothing_more(&mut subscriber);

    // A later subscribe ack says where each topic stands, in the same epoch.
    let mut late = Ws::connect(server.addr);
    let ack = late.subscribe("a", "late", 0);
    assert_eq!(
        (ack["seq"].as_u64(), epoch_of(&ack)),
        (Some(4), epoch_of(&ack_a))
    );
    let ack = late.subscribe("b", "late", 0);
    assert_eq!(
        (ack["seq"].as_u64(), epoch_of(&ack)),
        (Some(4), epoch_of(&ack_b))
    );
}

#[test]
fn since_inside_the_history_recovers_every_missed_event_then_live_ones() {
    let server = start();
    create_topic(server.addr, "t");
    let epoch = epoch_of(&http(server.addr, "GET", "/topics/t", None).json());
    let mut publisher = Ws::connect(server.addr);
    publish_numbered(&mut publisher, "t", 1..=10);

    let mut subscriber = Ws::connect(server.addr);
    let ack = subscribe_since(&mut subscriber, "t", "s", 4, Some(&epoch));
    assert_eq!(ack["recovered"], true, "{ack}");
    assert_eq!(ack["seq"], 10, "{ack}");
    assert_eq!(epoch_of(&ack), epoch);
    expect_events(&mut subscriber, "t", 5..=10);
    publish_numbered(&mut publisher, "t", 11..=12);
    expect_events(&mut subscriber, "t", 11..=12);
    expect_nothing_more(&mut subscriber);

    // Without an epoch, since is taken to be in the current one.
    let mut other = Ws::connect(server.addr);
    let ack = subscribe_since(&mut other, "t", "o", 10, None);
    assert_eq!(
        (ack["recovered"].as_bool(), ack["seq"].as_u64()),
        (Some(true), Some(12))
    );
    expect_events(&mut other, "t", 11..=12);
    // Caught up: since = seq sends nothing but the ack.
    let mut current = Ws::connect(server.addr);
    let ack = subscribe_since(&mut current, "t", "c", 12, Some(&epoch));
    assert_eq!(ack["recovered"], true, "{ack}");
    expect_nothing_more(&mut current);
    publish_numbered(&mut publisher, "t", 13..=13);
    for ws in [&mut subscriber, &mut other, &mut current] {
        expect_events(ws, "t", 13..=13);
        expect_nothing_more(ws);
    }
}

#[test]
fn since_older_than_the_history_is_not_recovered_and_gets_what_is_kept() {
    let server = start_with(|c| c.history = 5);
    create_topic(server.addr, "t");
    let mut publisher = Ws::connect(server.addr);
    publish_numbered(&mut publisher, "t", 1..=12);

    // 8..=12 are kept: after 2, events 3..=7 are gone.
    let mut subscriber = Ws::connect(server.addr);
    let ack = subscribe_since(&mut subscriber, "t", "s", 2, None);
    assert_eq!(
        (ack["recovered"].as_bool(), ack["seq"].as_u64()),
        (Some(false), Some(12)),
        "{ack}"
    );
    expect_events(&mut subscriber, "t", 8..=12);
    expect_nothing_more(&mut subscriber);

    // One before the oldest kept: nothing is missing.
    let mut edge = Ws::connect(server.addr);
    let ack = subscribe_since(&mut edge, "t", "e", 7, None);
    assert_eq!(ack["recovered"], true, "{ack}");
    expect_events(&mut edge, "t", 8..=12);
    expect_nothing_more(&mut edge);

    // One further back: seq 7 is missing.
    let mut short = Ws::connect(server.addr);
    let ack = subscribe_since(&mut short, "t", "x", 6, None);
    assert_eq!(ack["recovered"], false, "{ack}");
    expect_events(&mut short, "t", 8..=12);
    expect_nothing_more(&mut short);
}

#[test]
fn a_recreated_topic_resumes_an_old_epoch_from_its_new_start() {
    let server = start();
    create_topic(server.addr, "t");
    let mut subscriber = Ws::connect(server.addr);
    let old = epoch_of(&subscriber.subscribe("t", "s", 0));
    let mut publisher = Ws::connect(server.addr);
    publish_numbered(&mut publisher, "t", 1..=3);
    expect_events(&mut subscriber, "t", 1..=3);

    assert_eq!(http(server.addr, "DELETE", "/topics/t", None).status, 200);
    let info = subscriber.recv_skip_heartbeat();
    assert_eq!(
        (info["type"].as_str(), info["msg"].as_str()),
        (Some("info"), Some("topic_deleted")),
        "{info}"
    );
    create_topic(server.addr, "t");
    // The new topic counts from 1 again.
    publish_numbered(&mut publisher, "t", 1..=2);

    // The client's seq 1 and 3 are of the old topic: it gets the new one from its start.
    for since in [1, 3] {
        let mut back = Ws::connect(server.addr);
        let ack = subscribe_since(&mut back, "t", "s", since, Some(&old));
        let new = epoch_of(&ack);
        assert_ne!(new, old, "a re-created topic has a new epoch");
        assert_eq!(
            (ack["seq"].as_u64(), ack["recovered"].as_bool()),
            (Some(2), Some(true)),
            "{ack}"
        );
        expect_events(&mut back, "t", 1..=2);
        expect_nothing_more(&mut back);
    }
}

/// A `since` ahead of the topic's seq can only come from another life of the
/// topic: a server that restarted (memory is not kept) and re-created it, with
/// a client that did not send, or did not keep, the epoch. Its seqs say nothing
/// about this topic's, so the server treats it like a foreign epoch: it sends
/// the current epoch from its start, and `recovered` says whether the history
/// still holds all of it.
#[test]
fn since_ahead_of_the_topic_is_another_life_of_it_and_resumes_from_its_start() {
    let server = start_with(|c| c.history = 3);
    create_topic(server.addr, "t");
    let mut publisher = Ws::connect(server.addr);
    publish_numbered(&mut publisher, "t", 1..=2);

    // A client that saw seq 40 before the "restart", with no epoch.
    let mut back = Ws::connect(server.addr);
    let ack = subscribe_since(&mut back, "t", "s", 40, None);
    assert_eq!(
        (ack["seq"].as_u64(), ack["recovered"].as_bool()),
        (Some(2), Some(true)),
        "{ack}"
    );
    let epoch = epoch_of(&ack);
    expect_events(&mut back, "t", 1..=2);
    expect_nothing_more(&mut back);

    // Even naming the current epoch, a seq the topic never reached means the same.
    publish_numbered(&mut publisher, "t", 3..=5);
    expect_events(&mut back, "t", 3..=5);
    let mut ahead = Ws::connect(server.addr);
    let ack = subscribe_since(&mut ahead, "t", "a", 9, Some(&epoch));
    // The history (3) no longer holds seq 1 and 2 of this epoch.
    assert_eq!(
        (ack["seq"].as_u64(), ack["recovered"].as_bool()),
        (Some(5), Some(false)),
        "{ack}"
    );
    expect_events(&mut ahead, "t", 3..=5);
    expect_nothing_more(&mut ahead);
}

#[test]
fn since_with_last_n_is_a_bad_request() {
    let server = start();
    create_topic(server.addr, "t");
    let mut ws = Ws::connect(server.addr);
    ws.send(json!({"type":"subscribe","topic":"t","client_id":"s","since":1,"last_n":2,"request_id":"both"}));
    let error = ws.recv_skip_heartbeat();
    assert_eq!(error["type"], "error", "{error}");
    assert_eq!(error["request_id"], "both");
    assert_eq!(error["error"]["code"], "BAD_REQUEST", "{error}");
    let text = error["error"]["message"].as_str().unwrap_or_default();
    assert!(text.contains("last_n") && text.contains("since"), "{text}");
    // Refused, not subscribed; the connection stays usable.
    ws.ping();
    assert_eq!(
        http(server.addr, "GET", "/topics/t", None).json()["subscribers"],
        0
    );
    for bad in [json!(-1), json!(1.5), json!("3")] {
        ws.send(
            json!({"type":"subscribe","topic":"t","client_id":"s","since":bad,"request_id":"bad"}),
        );
        let error = ws.recv_skip_heartbeat();
        assert_eq!(
            error["error"]["code"], "BAD_REQUEST",
            "since {bad}: {error}"
        );
    }
    ws.ping();
}

#[test]
fn topic_detail_and_list_show_seq_epoch_and_history_over_rest() {
    let server = start_with(|c| c.history = 3);
    create_topic(server.addr, "a:b");
    let detail = http(server.addr, "GET", "/topics/a%3Ab", None);
    assert_eq!(detail.status, 200);
    let fresh = detail.json();
    assert_eq!(fresh["name"], "a:b");
    assert_eq!(
        (fresh["seq"].as_u64(), fresh["messages"].as_u64()),
        (Some(0), Some(0)),
        "{fresh}"
    );
    assert_eq!(
        fresh["history"],
        json!({"kept":0,"capacity":3,"first_seq":1}),
        "{fresh}"
    );

    let mut subscriber = Ws::connect(server.addr);
    let epoch = epoch_of(&subscriber.subscribe("a:b", "s", 0));
    let mut publisher = Ws::connect(server.addr);
    publish_numbered(&mut publisher, "a:b", 1..=5);
    expect_events(&mut subscriber, "a:b", 1..=5);

    let detail = http(server.addr, "GET", "/topics/a:b", None).json();
    assert_eq!(detail["epoch"], epoch.as_str(), "{detail}");
    assert_eq!(
        (detail["seq"].as_u64(), detail["messages"].as_u64()),
        (Some(5), Some(5)),
        "{detail}"
    );
    assert_eq!(detail["subscribers"], 1, "{detail}");
    assert_eq!(
        detail["history"],
        json!({"kept":3,"capacity":3,"first_seq":3}),
        "{detail}"
    );

    let list = http(server.addr, "GET", "/topics", None).json();
    assert_eq!(
        list["topics"],
        json!([{"name":"a:b","subscribers":1,"seq":5}]),
        "{list}"
    );
    let stats = http(server.addr, "GET", "/stats", None).json();
    assert_eq!(stats["topics"]["a:b"]["seq"], 5, "{stats}");

    let missing = http(server.addr, "GET", "/topics/nope", None);
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json(), json!({"error":"topic not found"}));
    assert_eq!(http(server.addr, "DELETE", "/topics/a:b", None).status, 200);
    assert_eq!(http(server.addr, "GET", "/topics/a:b", None).status, 404);
}

/// Many resubscriptions with `since` on fresh connections while another
/// connection publishes without pause: each one's replay must meet the live
/// stream with no gap and no duplicate, whatever the publisher is doing at the
/// moment of the subscribe.
#[test]
fn resuming_while_publishing_meets_the_live_stream_without_gap_or_duplicate() {
    const ROUNDS: usize = 100;
    let server = start_with(|c| c.history = 100_000);
    create_topic(server.addr, "t");
    let publisher = Publisher::start(server.addr, "t", 100_000, Duration::ZERO);
    publisher.wait_for(1);

    let mut seen = Vec::new();
    let mut last = 0;
    let mut epoch: Option<String> = None;
    for round in 0..ROUNDS {
        let mut ws = Ws::connect(server.addr);
        let ack = subscribe_since(&mut ws, "t", "resumer", last, epoch.as_deref());
        assert_eq!(ack["recovered"], true, "round {round}: {ack}");
        let current = epoch_of(&ack);
        assert!(
            epoch.as_ref().is_none_or(|e| *e == current),
            "the epoch changed"
        );
        epoch = Some(current);
        // Through the replay (up to the ack's seq) and a few live events past it.
        let until = ack["seq"].as_u64().expect("ack seq") + 1 + (round as u64 % 7);
        while last < until {
            let seq = next_seq(&mut ws, "t");
            assert_eq!(seq, last + 1, "round {round}: after {last} came {seq}");
            seen.push(seq);
            last = seq;
        }
        // Leave without a word, as a lost connection does.
        let _ = ws.ws.get_ref().shutdown(Shutdown::Both);
    }
    let published = publisher.finish();
    assert!(
        published >= last,
        "read {last}, more than the {published} published"
    );
    let mut ws = Ws::connect(server.addr);
    let ack = subscribe_since(&mut ws, "t", "resumer", last, epoch.as_deref());
    assert_eq!(
        (ack["seq"].as_u64(), ack["recovered"].as_bool()),
        (Some(published), Some(true))
    );
    while last < published {
        let seq = next_seq(&mut ws, "t");
        assert_eq!(seq, last + 1);
        seen.push(seq);
        last = seq;
    }
    expect_nothing_more(&mut ws);
    assert_exactly_once(&seen, published);
}

/// A subscriber whose socket dies mid-stream (events the server wrote are lost
/// in it) comes back with the last seq it read and its epoch; what it saw
/// before and after is exactly what was published, each event once.
#[test]
fn a_subscriber_cut_off_mid_stream_resumes_without_loss() {
    let server = start_with(|c| c.history = 10_000);
    create_topic(server.addr, "feed");
    let mut ws = Ws::connect(server.addr);
    let epoch = epoch_of(&ws.subscribe("feed", "phone", 0));
    let publisher = Publisher::start(server.addr, "feed", 5_000, Duration::ZERO);

    let mut seen = Vec::new();
    for cut in 1..=3u64 {
        // Read a while, then lose the connection with events still in flight.
        let stop_at = seen.last().copied().unwrap_or(0) + 300;
        let mut last = seen.last().copied().unwrap_or(0);
        while last < stop_at {
            let seq = next_seq(&mut ws, "feed");
            assert_eq!(seq, last + 1);
            seen.push(seq);
            last = seq;
        }
        publisher.wait_for(last + 50);
        ws.ws
            .get_ref()
            .shutdown(Shutdown::Both)
            .expect("cut the connection");
        // The publisher goes on; the phone comes back on a new connection.
        ws = Ws::connect(server.addr);
        let ack = subscribe_since(&mut ws, "feed", "phone", last, Some(&epoch));
        assert_eq!(ack["recovered"], true, "cut {cut}: {ack}");
        assert_eq!(epoch_of(&ack), epoch);
        assert!(
            ack["seq"].as_u64() > Some(last),
            "cut {cut}: the server ran ahead: {ack}"
        );
    }
    let published = publisher.finish();
    let mut last = seen.last().copied().unwrap_or(0);
    while last < published {
        let seq = next_seq(&mut ws, "feed");
        assert_eq!(seq, last + 1);
        seen.push(seq);
        last = seq;
    }
    expect_nothing_more(&mut ws);
    assert_exactly_once(&seen, published);
}
