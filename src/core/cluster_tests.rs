//! The core's cluster half, driven by hand-made engine events: no Redis.

use serde_json::Value;

use super::peers::{Peers, request, view};
use super::tests::{peers, take};
use super::*;
use crate::engine::{Command, Event, Failure, Slot, Snapshot};

const TS: &str = "2026-01-01T00:00:00.000Z";

fn cluster_core() -> Core {
    let mut core = Core::with_cluster(&Config::default(), Some("n1".into()));
    let mut fx = Peers::default();
    core.on_engine(Event::Up, TS, &mut fx);
    core
}

fn kinds(got: &[Value]) -> Vec<String> {
    got.iter()
        .map(|m| match m["type"].as_str() {
            Some("event") => format!("event {}", m["seq"]),
            Some("info") => format!("info {}", m["msg"].as_str().unwrap_or("")),
            Some(t) => format!("{t} {}", m["request_id"]),
            None => "?".into(),
        })
        .collect()
}

fn event_json(topic: &str, seq: u64) -> Vec<u8> {
    format!(
        r#"{{"type":"event","topic":"{topic}","seq":{seq},"message":{{"id":"00000000-0000-4000-8000-000000000000","payload":{seq}}},"ts":"{TS}"}}"#
    )
    .into_bytes()
}

fn snapshot(first: u64, last: u64) -> Snapshot {
    Snapshot {
        epoch: "e1".into(),
        seq: last,
        history: (first..=last).map(|s| event_json("t", s)).collect(),
    }
}

/// Subscribes `c` to `t`, whose shared history holds 1..=last, and reads the ack.
fn subscribe_synced(core: &mut Core, fx: &mut Peers, c: ConnId, last: u64) {
    core.on_text(
        c,
        r#"{"type":"subscribe","topic":"t","client_id":"a"}"#,
        TS,
        fx,
    );
    let synced = Event::Synced {
        topic: "t".into(),
        result: Ok(snapshot(1, last)),
    };
    core.on_engine(synced, TS, fx);
    take(fx, c);
}

const PUBLISH: &str = r#"{"type":"publish","topic":"t","message":{"id":"00000000-0000-4000-8000-000000000000","payload":1},"request_id":"p"}"#;

#[test]
fn answers_wait_behind_a_publish_redis_has_not_confirmed() {
    let mut core = cluster_core();
    let (mut fx, ids) = peers(1);
    let c = ids[0];
    core.on_text(c, PUBLISH, TS, &mut fx);
    core.on_text(c, r#"{"type":"ping","request_id":"q"}"#, TS, &mut fx);
    assert!(take(&mut fx, c).is_empty(), "the pong waits for the ack");
    let Some(Command::Publish {
        slot, head, tail, ..
    }) = fx.commands.pop()
    else {
        panic!("no publish command")
    };
    // Redis joins head + seq + tail: the event is the single-node bytes.
    let mut joined = head.clone();
    joined.extend_from_slice(b"7");
    joined.extend_from_slice(&tail);
    let v: Value = serde_json::from_slice(&joined).unwrap();
    assert_eq!(
        (v["seq"].as_u64(), v["message"]["payload"].as_u64()),
        (Some(7), Some(1))
    );
    core.on_engine(
        Event::Published {
            slot,
            result: Ok(7),
        },
        TS,
        &mut fx,
    );
    let got = take(&mut fx, c);
    assert_eq!(kinds(&got), ["ack \"p\"", "pong \"q\""]);
    assert_eq!(got[0]["seq"], 7);
    // Redis down: the next publish is refused at once, in order.
    core.on_engine(Event::Down, TS, &mut fx);
    core.on_text(c, PUBLISH, TS, &mut fx);
    let got = take(&mut fx, c);
    assert_eq!(got[0]["error"]["code"], "UNAVAILABLE");
    assert_eq!(core.counters.rejected_count("unavailable"), 1);
}

#[test]
fn a_subscribe_waits_for_the_topic_then_replays_from_the_shared_history() {
    let mut core = cluster_core();
    let (mut fx, ids) = peers(1);
    let c = ids[0];
    let sub = r#"{"type":"subscribe","topic":"t","client_id":"a","since":2,"request_id":"s"}"#;
    core.on_text(c, sub, TS, &mut fx);
    core.on_text(c, r#"{"type":"ping","request_id":"q"}"#, TS, &mut fx);
    assert!(matches!(fx.commands.pop(), Some(Command::Follow { .. })));
    // An event published meanwhile arrives before the snapshot: it waits.
    let msg = Event::Message {
        topic: "t".into(),
        seq: 6,
        json: event_json("t", 6),
    };
    core.on_engine(msg, TS, &mut fx);
    assert!(take(&mut fx, c).is_empty());
    let synced = Event::Synced {
        topic: "t".into(),
        result: Ok(snapshot(1, 5)),
    };
    core.on_engine(synced, TS, &mut fx);
    let got = take(&mut fx, c);
    assert_eq!(
        kinds(&got),
        [
            "ack \"s\"",
            "event 3",
            "event 4",
            "event 5",
            "event 6",
            "pong \"q\""
        ]
    );
    assert_eq!(
        (got[0]["recovered"].as_bool(), got[0]["epoch"].as_str()),
        (Some(true), Some("e1"))
    );
    // Live: a duplicate is ignored, the next one delivered.
    for seq in [6, 7] {
        let msg = Event::Message {
            topic: "t".into(),
            seq,
            json: event_json("t", seq),
        };
        core.on_engine(msg, TS, &mut fx);
    }
    assert_eq!(kinds(&take(&mut fx, c)), ["event 7"]);
}

#[test]
fn a_gap_is_filled_from_the_history_and_what_it_lost_is_reported() {
    let mut core = cluster_core();
    let (mut fx, ids) = peers(1);
    let c = ids[0];
    subscribe_synced(&mut core, &mut fx, c, 2);
    fx.commands.clear();
    // seq 9 arrives after 2: 3..8 were missed (the link dropped).
    let msg = Event::Message {
        topic: "t".into(),
        seq: 9,
        json: event_json("t", 9),
    };
    core.on_engine(msg, TS, &mut fx);
    assert!(matches!(fx.commands.pop(), Some(Command::Resync { .. })));
    // The history now keeps 6..9 only: 3..5 are lost for good.
    core.on_engine(
        Event::Synced {
            topic: "t".into(),
            result: Ok(snapshot(6, 9)),
        },
        TS,
        &mut fx,
    );
    let got = take(&mut fx, c);
    assert_eq!(
        kinds(&got),
        [
            "info events_lost",
            "event 6",
            "event 7",
            "event 8",
            "event 9"
        ]
    );
    assert_eq!(
        (got[0]["from_seq"].as_u64(), got[0]["to_seq"].as_u64()),
        (Some(3), Some(5))
    );
}

#[test]
fn a_topic_back_in_a_new_epoch_is_announced_and_its_events_delivered() {
    let mut core = cluster_core();
    let (mut fx, ids) = peers(1);
    let c = ids[0];
    subscribe_synced(&mut core, &mut fx, c, 40);
    // Redis lost its data; the topic was registered again and three events
    // published in the new epoch before this node read it back, of which
    // the history keeps the last two.
    let mut reborn = snapshot(2, 3);
    reborn.epoch = "e2".into();
    core.on_engine(
        Event::Synced {
            topic: "t".into(),
            result: Ok(reborn),
        },
        TS,
        &mut fx,
    );
    let got = take(&mut fx, c);
    assert_eq!(
        kinds(&got),
        [
            "info epoch_changed",
            "info events_lost",
            "event 2",
            "event 3"
        ]
    );
    assert_eq!(
        (got[0]["topic"].as_str(), got[0]["epoch"].as_str()),
        (Some("t"), Some("e2"))
    );
    assert_eq!(
        (got[1]["from_seq"].as_u64(), got[1]["to_seq"].as_u64()),
        (Some(1), Some(1))
    );
    // Live events go on from there, in the new epoch.
    let msg = Event::Message {
        topic: "t".into(),
        seq: 4,
        json: event_json("t", 4),
    };
    core.on_engine(msg, TS, &mut fx);
    assert_eq!(kinds(&take(&mut fx, c)), ["event 4"]);
    let detail = core.broker.topic("t").map(|t| (t.epoch.to_string(), t.seq));
    assert_eq!(detail, Some(("e2".to_string(), 4)));
}

#[test]
fn unknown_topics_and_outages_answer_held_subscribes() {
    let mut core = cluster_core();
    let (mut fx, ids) = peers(1);
    let c = ids[0];
    for topic in ["gone", "far"] {
        let sub = format!(
            r#"{{"type":"subscribe","topic":"{topic}","client_id":"a","request_id":"{topic}"}}"#
        );
        core.on_text(c, &sub, TS, &mut fx);
    }
    let failed = |t: &str, f| Event::Synced {
        topic: t.into(),
        result: Err(f),
    };
    core.on_engine(failed("far", Failure::Unavailable), TS, &mut fx);
    assert!(take(&mut fx, c).is_empty(), "answers stay in request order");
    core.on_engine(failed("gone", Failure::NotFound), TS, &mut fx);
    let got = take(&mut fx, c);
    assert_eq!(got[0]["error"]["code"], "TOPIC_NOT_FOUND");
    assert_eq!(got[1]["error"]["code"], "UNAVAILABLE");
    assert_eq!(core.broker.subscription_count(), 0);
}

#[test]
fn rest_create_and_delete_wait_on_redis_and_delete_tells_local_subscribers() {
    let mut core = cluster_core();
    let (mut fx, ids) = peers(2);
    let http = ids[1];
    let reply = core.rest(
        http,
        &request("POST", "/topics", r#"{"name":"t"}"#),
        &view(),
        TS,
        &mut fx,
    );
    assert!(reply.pending);
    let Some(Command::Create {
        slot: Some(slot), ..
    }) = fx.commands.pop()
    else {
        panic!("no create command")
    };
    core.on_engine(
        Event::Created {
            slot,
            result: Ok(false),
        },
        TS,
        &mut fx,
    );
    assert_eq!(fx.replies.pop(), Some((http, 409)));
    let bad = core.rest(
        http,
        &request("POST", "/topics", r#"{"name":"a b"}"#),
        &view(),
        TS,
        &mut fx,
    );
    assert_eq!((bad.pending, bad.status), (false, 400));
    // A local subscriber of t hears of its deletion, from this node or another.
    subscribe_synced(&mut core, &mut fx, ids[0], 0);
    let reply = core.rest(
        http,
        &request("DELETE", "/topics/t", ""),
        &view(),
        TS,
        &mut fx,
    );
    assert!(reply.pending);
    let Some(Command::Delete { slot, .. }) = fx.commands.pop() else {
        panic!("no delete command")
    };
    core.on_engine(
        Event::Deleted {
            slot: Slot { ..slot },
            result: Ok(true),
        },
        TS,
        &mut fx,
    );
    assert_eq!(fx.replies.pop(), Some((http, 200)));
    assert_eq!(kinds(&take(&mut fx, ids[0])), ["info topic_deleted"]);
    assert_eq!(core.broker.subscription_count(), 0);
}
