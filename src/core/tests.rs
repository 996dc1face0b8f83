//! Unit tests of the core's dispatch, with the simulation's peers in place of sockets.

use serde_json::Value;

use super::peers::{Peer, Peers, Reader, request, view};
use super::*;

const TS: &str = "2026-01-01T00:00:00.000Z";

fn core(tweak: impl FnOnce(&mut Config)) -> Core {
    let mut config = Config::default();
    tweak(&mut config);
    Core::new(&config)
}

pub(super) fn peers(n: usize) -> (Peers, Vec<ConnId>) {
    let mut fx = Peers::default();
    let ids: Vec<ConnId> = (0..n).map(|k| ConnId::new(k, 1)).collect();
    for id in &ids {
        fx.peers.insert(*id, Peer::new(Reader::Fast));
    }
    (fx, ids)
}

/// Everything `id` received since the last call.
pub(super) fn take(fx: &mut Peers, id: ConnId) -> Vec<Value> {
    let peer = fx.peers.get_mut(&id).unwrap();
    peer.read(usize::MAX);
    std::mem::take(&mut peer.received)
}

fn publish(n: u64) -> String {
    format!(
        r#"{{"type":"publish","topic":"t","message":{{"id":"00000000-0000-4000-8000-000000000000","payload":{n}}},"request_id":"p{n}"}}"#
    )
}

fn create(core: &mut Core, fx: &mut Peers, name: &str) {
    let body = format!("{{\"name\":\"{name}\"}}");
    let reply = core.rest(
        ConnId::new(0, 0),
        &request("POST", "/topics", &body),
        &view(),
        TS,
        fx,
    );
    assert_eq!(reply.status, 201);
}

#[test]
fn every_request_gets_one_answer_in_order() {
    let mut core = core(|_| {});
    let (mut fx, ids) = peers(1);
    let c = ids[0];
    create(&mut core, &mut fx, "t");
    core.on_text(c, r#"{"type":"ping","request_id":1}"#, TS, &mut fx);
    core.on_text(
        c,
        r#"{"type":"subscribe","topic":"nope","client_id":"x","request_id":2}"#,
        TS,
        &mut fx,
    );
    core.on_text(c, "not json", TS, &mut fx);
    core.on_text(
        c,
        r#"{"type":"unsubscribe","topic":"t","client_id":"x","request_id":4}"#,
        TS,
        &mut fx,
    );
    core.on_binary(c, TS, &mut fx);
    let got = take(&mut fx, c);
    let kinds: Vec<(&str, Value)> = got
        .iter()
        .map(|m| (m["type"].as_str().unwrap(), m["request_id"].clone()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("pong", 1.into()),
            ("error", 2.into()),
            ("error", Value::Null),
            ("ack", 4.into()),
            ("error", Value::Null),
        ]
    );
    assert_eq!(got[1]["error"]["code"], "TOPIC_NOT_FOUND");
    assert_eq!(got[1]["topic"], "nope");
    assert_eq!(got[2]["error"]["code"], "BAD_REQUEST");
    assert_eq!(core.counters.rejected_count("topic_not_found"), 1);
    assert_eq!(core.counters.rejected_count("bad_request"), 2);
}

#[test]
fn publish_acks_then_fans_out_to_each_subscriber_once() {
    let mut core = core(|_| {});
    let (mut fx, ids) = peers(3);
    create(&mut core, &mut fx, "t");
    for (i, id) in ids.iter().enumerate() {
        let sub = format!(r#"{{"type":"subscribe","topic":"t","client_id":"c{i}"}}"#);
        core.on_text(*id, &sub, TS, &mut fx);
        // Subscribing twice keeps one path.
        core.on_text(*id, &sub, TS, &mut fx);
        take(&mut fx, *id);
    }
    core.on_text(ids[0], &publish(7), TS, &mut fx);
    let publisher = take(&mut fx, ids[0]);
    assert_eq!(publisher[0]["type"], "ack");
    assert_eq!(
        publisher[1]["type"], "event",
        "a subscribed publisher gets its own event after the ack"
    );
    for id in &ids[1..] {
        let got = take(&mut fx, *id);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0]["message"]["payload"], 7);
    }
    assert_eq!(core.counters.published, 1);
    assert_eq!(core.counters.delivered, 3);
}

#[test]
fn replay_then_takeover_then_delete() {
    let mut core = core(|c| c.history = 3);
    let (mut fx, ids) = peers(2);
    create(&mut core, &mut fx, "t");
    for n in 1..=5 {
        core.on_text(ids[0], &publish(n), TS, &mut fx);
    }
    let sub = r#"{"type":"subscribe","topic":"t","client_id":"same","last_n":10}"#;
    core.on_text(ids[1], sub, TS, &mut fx);
    let got = take(&mut fx, ids[1]);
    let replayed: Vec<&Value> = got[1..].iter().map(|m| &m["message"]["payload"]).collect();
    assert_eq!(
        replayed,
        [&Value::from(3), &Value::from(4), &Value::from(5)]
    );
    // The same client_id on another connection takes the subscription over.
    core.on_text(
        ids[0],
        r#"{"type":"subscribe","topic":"t","client_id":"same"}"#,
        TS,
        &mut fx,
    );
    let old = take(&mut fx, ids[1]);
    assert_eq!(old[0]["msg"], "subscription_replaced");
    assert_eq!(core.broker.subscription_count(), 1);
    take(&mut fx, ids[0]);
    let reply = core.rest(
        ConnId::new(0, 0),
        &request("DELETE", "/topics/t", ""),
        &view(),
        TS,
        &mut fx,
    );
    assert_eq!(reply.status, 200);
    let told = take(&mut fx, ids[0]);
    assert_eq!(
        (told[0]["msg"].as_str(), told[0]["topic"].as_str()),
        (Some("topic_deleted"), Some("t"))
    );
    assert!(
        take(&mut fx, ids[1]).is_empty(),
        "a replaced subscriber is not told"
    );
    assert_eq!(core.broker.subscription_count(), 0);
}

#[test]
fn a_slow_consumer_is_closed_and_costs_the_others_nothing() {
    let mut core = core(|c| c.outbound_limit = 2000);
    let (mut fx, ids) = peers(2);
    fx.peers.get_mut(&ids[1]).unwrap().reader = Reader::Stalled;
    create(&mut core, &mut fx, "t");
    for (i, id) in ids.iter().enumerate() {
        let sub = format!(r#"{{"type":"subscribe","topic":"t","client_id":"c{i}"}}"#);
        core.on_text(*id, &sub, TS, &mut fx);
    }
    take(&mut fx, ids[0]);
    for n in 0..100 {
        core.on_text(ids[0], &publish(n), TS, &mut fx);
    }
    let fast = take(&mut fx, ids[0]);
    assert_eq!(fast.iter().filter(|m| m["type"] == "event").count(), 100);
    let slow = &fx.peers[&ids[1]];
    assert_eq!(slow.closed, Some(Refusal::SlowConsumer));
    assert!(slow.out.len() <= 2000 + 200, "{}", slow.out.len());
    assert_eq!(core.counters.slow_consumer_disconnects, 1);
    assert_eq!(
        core.broker.subscription_count(),
        1,
        "the slow consumer's subscription is gone"
    );
    let slow = take(&mut fx, ids[1]);
    let last = slow.last().unwrap();
    assert_eq!(last["error"]["code"], "SLOW_CONSUMER");
    assert_eq!(fx.peers[&ids[1]].close_frames, 1);
}

#[test]
fn drop_oldest_drops_events_never_answers_and_reports_them() {
    let mut core = core(|c| {
        c.outbound_limit = 2000;
        c.overflow_policy = OverflowPolicy::DropOldest;
    });
    let (mut fx, ids) = peers(2);
    let (c, publisher) = (ids[0], ids[1]);
    fx.peers.get_mut(&c).unwrap().reader = Reader::Stalled;
    create(&mut core, &mut fx, "t");
    core.on_text(
        c,
        r#"{"type":"subscribe","topic":"t","client_id":"me"}"#,
        TS,
        &mut fx,
    );
    for n in 0..100 {
        core.on_text(publisher, &publish(n), TS, &mut fx);
    }
    // A request past the limit is still answered (the loop stops reading such
    // a connection, so one is all it can send).
    core.on_text(c, r#"{"type":"ping","request_id":"late"}"#, TS, &mut fx);
    let got = take(&mut fx, c);
    let answers = got
        .iter()
        .filter(|m| m["type"] == "ack" || m["type"] == "pong")
        .count();
    let events: Vec<u64> = got
        .iter()
        .filter(|m| m["type"] == "event")
        .map(|m| m["message"]["payload"].as_u64().unwrap())
        .collect();
    let notice = got.iter().find(|m| m["msg"] == "messages_dropped").unwrap();
    assert_eq!(answers, 2, "answers are never dropped");
    assert_eq!(events.last(), Some(&99), "the newest event is kept");
    assert!(events.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(
        notice["dropped"].as_u64().unwrap() + events.len() as u64,
        100
    );
    assert_eq!(core.counters.dropped, 100 - events.len() as u64);
    assert!(fx.peers[&c].closed.is_none());
}

#[test]
fn a_gone_connection_leaves_no_trace_and_a_recycled_slot_gets_nothing() {
    let mut core = core(|_| {});
    let (mut fx, ids) = peers(2);
    create(&mut core, &mut fx, "t");
    core.on_text(
        ids[1],
        r#"{"type":"subscribe","topic":"t","client_id":"a"}"#,
        TS,
        &mut fx,
    );
    core.remove_conn(ids[1]);
    fx.peers.remove(&ids[1]);
    // The same slot, a new generation.
    let reborn = ConnId::new(ids[1].key(), 2);
    fx.peers.insert(reborn, Peer::new(Reader::Fast));
    core.on_text(ids[0], &publish(1), TS, &mut fx);
    assert!(take(&mut fx, reborn).is_empty());
    assert_eq!(core.broker.subscription_count(), 0);
}

#[test]
fn fan_out_is_the_entry_point_for_events_from_elsewhere() {
    let mut core = core(|_| {});
    let (mut fx, ids) = peers(2);
    create(&mut core, &mut fx, "t");
    core.on_text(
        ids[1],
        r#"{"type":"subscribe","topic":"t","client_id":"a"}"#,
        TS,
        &mut fx,
    );
    take(&mut fx, ids[1]);
    let frame = crate::protocol::event(
        "t",
        1,
        "00000000-0000-4000-8000-000000000000",
        &serde_json::value::RawValue::from_string("42".into()).unwrap(),
        TS,
    );
    core.fan_out("t", &frame, TS, &mut fx);
    core.fan_out("missing", &frame, TS, &mut fx);
    let got = take(&mut fx, ids[1]);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["message"]["payload"], 42);
}

#[test]
fn authorization_exempts_health_and_the_dashboard_page_only() {
    let core = core(|c| c.api_keys = vec!["k1".into(), "k2".into()]);
    let mut req = request("GET", "/topics", "");
    assert_eq!(core.authorize(&req), Err(Refusal::Unauthorized));
    req.api_key = Some("k2".into());
    assert_eq!(core.authorize(&req), Ok(Grant::Full));
    for open in ["/health", "/dashboard", "/"] {
        assert_eq!(core.authorize(&request("GET", open, "")), Ok(Grant::Full));
    }
    assert_eq!(
        core.authorize(&request("POST", "/dashboard", "")),
        Err(Refusal::Unauthorized)
    );
    let mut ws = request("GET", "/ws", "");
    ws.query = Some("api_key=k1".into());
    assert_eq!(core.authorize(&ws), Ok(Grant::Full));
}

fn keyed(key: &str) -> Request {
    let mut req = request("GET", "/ws", "");
    req.api_key = Some(key.into());
    req
}

#[test]
fn limited_keys_read_rest_but_never_change_it() {
    let core = core(|c| {
        c.publish_keys = auth::ScopedKey::parse_list("p:orders.*").unwrap();
        c.subscribe_keys = auth::ScopedKey::parse_list("s").unwrap();
    });
    // Publish and subscribe keys alone turn authentication on.
    assert_eq!(
        core.authorize(&request("GET", "/topics", "")),
        Err(Refusal::Unauthorized)
    );
    for key in ["p", "s"] {
        for (method, path) in [("GET", "/topics"), ("GET", "/stats"), ("GET", "/metrics")] {
            let mut req = request(method, path, "");
            req.api_key = Some(key.into());
            assert!(core.authorize(&req).is_ok(), "{key} {method} {path}");
        }
        for (method, path) in [("POST", "/topics"), ("DELETE", "/topics/orders.1")] {
            let mut req = request(method, path, "");
            req.api_key = Some(key.into());
            let got = core.authorize(&req).unwrap_err();
            assert_eq!(got, Refusal::Forbidden("forbidden".into()));
            assert_eq!(got.status(), 403);
        }
        assert!(matches!(core.authorize(&keyed(key)), Ok(Grant::Limited(_))));
    }
}

#[test]
fn a_refused_publish_reaches_nobody_and_the_connection_stays() {
    let mut core = core(|c| {
        c.api_keys = vec!["f".into()];
        c.subscribe_keys = auth::ScopedKey::parse_list("s:t").unwrap();
        c.auto_create_topics = true;
    });
    let (mut fx, ids) = peers(2);
    let (sub, limited) = (ids[0], ids[1]);
    let grant = core.authorize(&keyed("s")).unwrap();
    core.open_ws(limited, grant);
    core.open_ws(sub, core.authorize(&keyed("f")).unwrap());
    core.on_text(
        sub,
        r#"{"type":"subscribe","topic":"t","client_id":"a"}"#,
        TS,
        &mut fx,
    );
    assert_eq!(take(&mut fx, sub)[0]["type"], "ack");

    core.on_text(limited, &publish(1), TS, &mut fx);
    core.on_text(limited, r#"{"type":"ping","request_id":"k"}"#, TS, &mut fx);
    let got = take(&mut fx, limited);
    assert_eq!(got[0]["type"], "error", "{got:?}");
    assert_eq!(got[0]["error"]["code"], "FORBIDDEN");
    assert_eq!(got[0]["topic"], "t");
    assert_eq!(got[0]["request_id"], "p1");
    assert_eq!(got[1]["type"], "pong");
    assert!(
        take(&mut fx, sub).is_empty(),
        "the refused event was delivered"
    );
    assert_eq!(core.counters.published, 0);
    assert_eq!(core.counters.rejected_count("forbidden"), 1);

    // Auto-create needs the permission too: nothing is created by a refused subscribe.
    let other = r#"{"type":"subscribe","topic":"u","client_id":"b"}"#;
    core.on_text(limited, other, TS, &mut fx);
    assert_eq!(take(&mut fx, limited)[0]["error"]["code"], "FORBIDDEN");
    assert!(core.broker.topic("u").is_none());
    core.on_text(
        limited,
        r#"{"type":"subscribe","topic":"t","client_id":"b"}"#,
        TS,
        &mut fx,
    );
    assert_eq!(take(&mut fx, limited)[0]["type"], "ack");

    // The grant goes with the connection; a full-access one never had an entry.
    assert_eq!(core.grants.len(), 1);
    core.remove_conn(limited);
    assert!(core.grants.is_empty());
}
