//! Keys with roles (protocol §6) over real sockets: every role against every
//! REST route and WebSocket request, with each way of presenting a key
//! (`X-API-Key`, `Authorization: Bearer`, `?api_key=`); topic patterns on the
//! wire; refused requests that reach nobody and close nothing; start-up errors
//! of the built binary; the CLI and the bench against a server with roles.

mod common;

use std::net::SocketAddr;

use common::*;
use pubsubd::core::auth::ScopedKey;
use serde_json::{Value, json};

const FULL: &str = "full-k";
const PUB_ALL: &str = "pub-all-k";
/// `*` at the end, at the start, in the middle, twice.
const PUB_SOME: &str = "pub-some-k";
const PUB_PATTERNS: &str = "orders.*|*.audit|eu.*.live|*.tmp.*";
const SUB_ALL: &str = "sub-all-k";
/// A glob and an exact name.
const SUB_SOME: &str = "sub-some-k";
const SUB_PATTERNS: &str = "orders.*|billing";
const WRONG: &str = "wrong-k";

fn server_with(tweak: impl FnOnce(&mut pubsubd::Config)) -> Server {
    start_with(|c| {
        c.api_keys = vec![FULL.into()];
        let publish = format!("{PUB_ALL},{PUB_SOME}:{PUB_PATTERNS}");
        c.publish_keys = ScopedKey::parse_list(&publish).expect("publish keys");
        let subscribe = format!("{SUB_ALL},{SUB_SOME}:{SUB_PATTERNS}");
        c.subscribe_keys = ScopedKey::parse_list(&subscribe).expect("subscribe keys");
        tweak(c)
    })
}

fn server() -> Server {
    server_with(|_| {})
}

/// How a request presents its key.
#[derive(Clone, Copy, Debug)]
enum Via {
    Header,
    Bearer,
    Query,
}

fn key_header(key: Option<&str>, via: Via) -> String {
    match (key, via) {
        (None, _) | (Some(_), Via::Query) => String::new(),
        (Some(k), Via::Header) => format!("X-API-Key: {k}\r\n"),
        (Some(k), Via::Bearer) => format!("Authorization: Bearer {k}\r\n"),
    }
}

fn rest(addr: SocketAddr, method: &str, path: &str, key: Option<&str>, via: Via) -> Response {
    let body = (method == "POST").then_some(r#"{"name":"new"}"#);
    Http::connect(addr).request(method, path, &key_header(key, via), body)
}

fn full(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> Response {
    Http::connect(addr).request(method, path, &key_header(Some(FULL), Via::Header), body)
}

fn create(addr: SocketAddr, name: &str) {
    let body = json!({ "name": name }).to_string();
    assert_eq!(
        full(addr, "POST", "/topics", Some(&body)).status,
        201,
        "{name}"
    );
}

fn topic_names(addr: SocketAddr) -> Vec<String> {
    let r = full(addr, "GET", "/topics", None);
    assert_eq!(r.status, 200);
    let list = r.json()["topics"].as_array().expect("topics").clone();
    list.iter()
        .map(|t| t["name"].as_str().expect("name").to_string())
        .collect()
}

fn forbidden_count(addr: SocketAddr) -> u64 {
    let r = full(addr, "GET", "/metrics", None);
    assert_eq!(r.status, 200);
    let text = String::from_utf8(r.body).expect("UTF-8");
    text.lines()
        .find_map(|l| l.strip_prefix("pubsubd_rejected_total{reason=\"forbidden\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no forbidden count in /metrics:\n{text}"))
}

fn ws(addr: SocketAddr, key: &str, via: Via) -> Result<Ws, tungstenite::Error> {
    match via {
        Via::Header => Ws::connect_path(addr, "/ws", &[("X-API-Key", key)]),
        Via::Bearer => {
            let bearer = format!("Bearer {key}");
            Ws::connect_path(addr, "/ws", &[("Authorization", &bearer)])
        }
        Via::Query => Ws::connect_path(addr, &format!("/ws?api_key={key}"), &[]),
    }
}

fn refused_handshake(result: Result<Ws, tungstenite::Error>) -> u16 {
    match result {
        Err(tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("upgraded with a wrong or missing key"),
    }
}

/// Sends one request and returns its answer.
fn ask(c: &mut Ws, msg: Value) -> Value {
    c.send(msg);
    c.recv_skip_heartbeat()
}

fn publish_msg(topic: &str, payload: Value, rid: &str) -> Value {
    json!({"type":"publish","topic":topic,"message":{"id":uuid(),"payload":payload},"request_id":rid})
}

fn subscribe_msg(topic: &str, rid: &str) -> Value {
    json!({"type":"subscribe","topic":topic,"client_id":"c","request_id":rid})
}

fn unsubscribe_msg(topic: &str, rid: &str) -> Value {
    json!({"type":"unsubscribe","topic":topic,"client_id":"c","request_id":rid})
}

/// Checks an answer: an `ack`, or `FORBIDDEN` after which the connection
/// still answers a ping (a refused request never closes it).
fn expect(c: &mut Ws, answer: &Value, allowed: bool, topic: &str, rid: &str, what: &str) {
    assert_eq!(answer["request_id"], rid, "{what}: {answer}");
    if allowed {
        assert_eq!(answer["type"], "ack", "{what}: {answer}");
        assert_eq!(answer["topic"], topic, "{what}: {answer}");
    } else {
        assert_eq!(answer["type"], "error", "{what}: {answer}");
        assert_eq!(answer["error"]["code"], "FORBIDDEN", "{what}: {answer}");
        assert_eq!(answer["topic"], topic, "{what}: {answer}");
        let text = answer["error"]["message"].as_str().expect("a message");
        assert!(text.contains(topic), "{what}: {text}");
        c.ping();
    }
}

// ---- REST ----

#[test]
fn rest_routes_by_role() {
    let s = server();
    let addr = s.addr;
    create(addr, "kept");
    // (key, full access, a valid key)
    let roles = [
        (Some(FULL), true, true),
        (Some(PUB_ALL), false, true),
        (Some(PUB_SOME), false, true),
        (Some(SUB_ALL), false, true),
        (Some(SUB_SOME), false, true),
        (Some(WRONG), false, false),
        (None, false, false),
    ];
    let mut forbidden = 0;
    for via in [Via::Header, Via::Bearer] {
        for (key, full_access, valid) in roles {
            let who = format!("{key:?} by {via:?}");
            let denied = |r: &Response, what: &str| {
                if valid {
                    assert_eq!(r.status, 403, "{who}: {what}");
                    assert_eq!(r.json(), json!({"error":"forbidden"}), "{who}: {what}");
                } else {
                    assert_eq!(r.status, 401, "{who}: {what}");
                    assert_eq!(r.json(), json!({"error":"unauthorized"}), "{who}: {what}");
                }
            };

            // Create, then delete what was created: full access only.
            let created = rest(addr, "POST", "/topics", key, via);
            if full_access {
                assert_eq!(created.status, 201, "{who}: create");
                let deleted = rest(addr, "DELETE", "/topics/new", key, via);
                assert_eq!(deleted.status, 200, "{who}: delete");
            } else {
                denied(&created, "create");
                assert!(!topic_names(addr).contains(&"new".to_string()), "{who}");
                denied(&rest(addr, "DELETE", "/topics/kept", key, via), "delete");
                assert!(topic_names(addr).contains(&"kept".to_string()), "{who}");
                forbidden += u64::from(valid) * 2;
            }

            // The read-only routes: every valid key.
            for path in ["/topics", "/stats", "/metrics"] {
                let r = rest(addr, "GET", path, key, via);
                if valid {
                    assert_eq!(r.status, 200, "{who}: GET {path}");
                } else {
                    denied(&r, path);
                }
            }
            // Every valid key may read a topic's detail (GET /topics/{name}).
            let detail = rest(addr, "GET", "/topics/kept", key, via);
            if valid {
                assert_eq!(detail.status, 200, "{who}: GET /topics/kept");
                assert_eq!(detail.json()["name"], "kept", "{who}");
            } else {
                denied(&detail, "GET /topics/kept");
            }

            // No key needed at all.
            assert_eq!(rest(addr, "GET", "/health", key, via).status, 200, "{who}");
            assert_eq!(
                rest(addr, "GET", "/dashboard", key, via).status,
                200,
                "{who}"
            );
            assert_eq!(rest(addr, "GET", "/", key, via).status, 302, "{who}");
        }
    }
    assert_eq!(topic_names(addr), ["kept"]);
    assert_eq!(forbidden_count(addr), forbidden);
}

// ---- WebSocket ----

#[test]
fn websocket_requests_by_role_with_every_way_of_sending_the_key() {
    let s = server();
    let addr = s.addr;
    // Matches both limited keys' patterns.
    let topic = "orders.eu";
    create(addr, topic);
    // (key, may publish, may subscribe and unsubscribe)
    let roles = [
        (FULL, true, true),
        (PUB_ALL, true, false),
        (PUB_SOME, true, false),
        (SUB_ALL, false, true),
        (SUB_SOME, false, true),
    ];
    for via in [Via::Header, Via::Bearer, Via::Query] {
        for (key, publish, subscribe) in roles {
            let who = format!("{key} by {via:?}");
            let mut c = ws(addr, key, via).unwrap_or_else(|e| panic!("{who}: {e}"));
            c.ping();
            let answer = ask(&mut c, publish_msg(topic, json!(1), "p"));
            expect(
                &mut c,
                &answer,
                publish,
                topic,
                "p",
                &format!("{who}: publish"),
            );
            let answer = ask(&mut c, subscribe_msg(topic, "s"));
            expect(
                &mut c,
                &answer,
                subscribe,
                topic,
                "s",
                &format!("{who}: subscribe"),
            );
            let answer = ask(&mut c, unsubscribe_msg(topic, "u"));
            expect(
                &mut c,
                &answer,
                subscribe,
                topic,
                "u",
                &format!("{who}: unsubscribe"),
            );
            c.ping();
        }
        assert_eq!(refused_handshake(ws(addr, WRONG, via)), 401, "{via:?}");
    }
    assert_eq!(refused_handshake(Ws::connect_path(addr, "/ws", &[])), 401);
    // Per way of sending the key: subscribe and unsubscribe by two publish
    // keys, publish by two subscribe keys.
    assert_eq!(forbidden_count(addr), (2 * 2 + 2) * 3);
}

#[test]
fn a_subscribe_key_publishing_reaches_nobody() {
    let s = server();
    let addr = s.addr;
    let topic = "orders.eu";
    create(addr, topic);
    let mut watcher = ws(addr, FULL, Via::Header).expect("full key");
    watcher.subscribe(topic, "watcher", 0);
    let mut limited = ws(addr, SUB_ALL, Via::Query).expect("subscribe key");
    limited.subscribe(topic, "limited", 0);
    for (key, via) in [(SUB_ALL, Via::Header), (SUB_SOME, Via::Bearer)] {
        let mut c = ws(addr, key, via).expect("subscribe key");
        let answer = ask(&mut c, publish_msg(topic, json!("refused"), "p"));
        expect(&mut c, &answer, false, topic, "p", key);
    }
    // Anything the refused publishes sent would be queued before these pongs.
    watcher.ping();
    limited.ping();
    let st = full(addr, "GET", "/stats", None).json();
    assert_eq!(st["totals"]["published"], 0, "{st}");
    assert_eq!(st["topics"][topic]["messages"], 0, "{st}");
    assert_eq!(forbidden_count(addr), 2);

    // The same subscribers do receive an allowed publish, so the silence above means something.
    let mut publisher = ws(addr, PUB_SOME, Via::Bearer).expect("publish key");
    assert_eq!(publisher.publish(topic, json!("allowed"))["type"], "ack");
    for c in [&mut watcher, &mut limited] {
        let event = c.recv_skip_heartbeat();
        assert_eq!(event["type"], "event", "{event}");
        assert_eq!(event["message"]["payload"], "allowed", "{event}");
    }
}

#[test]
fn topic_patterns_on_the_wire() {
    let s = server();
    let addr = s.addr;
    // PUB_PATTERNS: orders.*|*.audit|eu.*.live|*.tmp.*
    let publishes = [
        ("orders.eu", true),       // `*` at the end
        ("orders.", true),         // `*` matches the empty run
        ("x.audit", true),         // `*` at the start
        ("eu.west.live", true),    // `*` in the middle
        ("a.tmp.b", true),         // two `*`
        ("orders", false),         // the prefix alone
        ("audit", false),          // the suffix alone
        ("eu.live", false),        // prefix and suffix overlap
        ("eu.west.live.x", false), // more after the suffix
        ("tmp.b", false),
        ("billing", false),
    ];
    // SUB_PATTERNS: orders.*|billing
    let subscribes = [
        ("orders.eu", true),
        ("billing", true), // an exact name in the list
        ("billing.eu", false),
        ("orders", false),
        ("x.audit", false),
    ];
    for (topic, _) in publishes.iter().chain(&subscribes) {
        if !topic_names(addr).contains(&topic.to_string()) {
            create(addr, topic);
        }
    }
    let mut publisher = ws(addr, PUB_SOME, Via::Query).expect("publish key");
    for (topic, allowed) in publishes {
        let answer = ask(&mut publisher, publish_msg(topic, json!(topic), "p"));
        expect(&mut publisher, &answer, allowed, topic, "p", "publish");
    }
    let mut subscriber = ws(addr, SUB_SOME, Via::Bearer).expect("subscribe key");
    for (topic, allowed) in subscribes {
        let answer = ask(&mut subscriber, subscribe_msg(topic, "s"));
        expect(&mut subscriber, &answer, allowed, topic, "s", "subscribe");
        let answer = ask(&mut subscriber, unsubscribe_msg(topic, "u"));
        expect(&mut subscriber, &answer, allowed, topic, "u", "unsubscribe");
    }
}

#[test]
fn auto_created_topics_need_the_permission() {
    let s = server_with(|c| c.auto_create_topics = true);
    let addr = s.addr;
    let mut publisher = ws(addr, PUB_SOME, Via::Header).expect("publish key");
    let answer = ask(&mut publisher, publish_msg("orders.new", json!(1), "p1"));
    expect(&mut publisher, &answer, true, "orders.new", "p1", "publish");
    let answer = ask(&mut publisher, publish_msg("other.new", json!(1), "p2"));
    expect(&mut publisher, &answer, false, "other.new", "p2", "publish");

    let mut subscriber = ws(addr, SUB_SOME, Via::Query).expect("subscribe key");
    let answer = ask(&mut subscriber, subscribe_msg("other.sub", "s1"));
    expect(
        &mut subscriber,
        &answer,
        false,
        "other.sub",
        "s1",
        "subscribe",
    );
    let answer = ask(&mut subscriber, subscribe_msg("billing", "s2"));
    expect(&mut subscriber, &answer, true, "billing", "s2", "subscribe");

    let mut wrong_role = ws(addr, SUB_ALL, Via::Bearer).expect("subscribe key");
    let answer = ask(&mut wrong_role, publish_msg("free.x", json!(1), "p3"));
    expect(&mut wrong_role, &answer, false, "free.x", "p3", "publish");

    let mut names = topic_names(addr);
    names.sort();
    assert_eq!(names, ["billing", "orders.new"]);
}

#[test]
fn limited_keys_alone_turn_authentication_on() {
    // Only limited keys configured: authentication is on, and nobody may create topics.
    let s = start_with(|c| {
        c.publish_keys = ScopedKey::parse_list(PUB_ALL).expect("keys");
        c.auto_create_topics = true;
    });
    let addr = s.addr;
    let r = rest(addr, "POST", "/topics", Some(PUB_ALL), Via::Header);
    assert_eq!(r.status, 403);
    assert_eq!(rest(addr, "GET", "/topics", None, Via::Header).status, 401);
    let mut c = ws(addr, PUB_ALL, Via::Query).expect("publish key");
    assert_eq!(c.publish("anything", json!(1))["type"], "ack");
    let answer = ask(&mut c, subscribe_msg("anything", "s"));
    expect(&mut c, &answer, false, "anything", "s", "subscribe");
}

// ---- the built binary ----

#[test]
fn bad_key_settings_stop_start_up_without_showing_the_key() {
    const KEY: &str = "SECRETVALUE";
    for (args, env, needles) in [
        (
            &["--api-key", KEY, "--subscribe-key", KEY][..],
            &[][..],
            &[
                "--subscribe-key",
                "PUBSUBD_SUBSCRIBE_KEY",
                "--api-key",
                "one role",
            ][..],
        ),
        (
            &["--publish-key", "SECRETVALUE:orders.*"],
            &[("PUBSUBD_SUBSCRIBE_KEY", "SECRETVALUE:orders.*")],
            &["--subscribe-key", "--publish-key", "one role"],
        ),
        (
            &[],
            &[("PUBSUBD_PUBLISH_KEY", "SECRETVALUE,")],
            &["--publish-key", "PUBSUBD_PUBLISH_KEY", "an empty key"],
        ),
        (
            &["--api-key", "SECRETVALUE:x"],
            &[],
            &["--api-key", "PUBSUBD_API_KEY", "':'"],
        ),
        (
            &["--subscribe-key", "SECRETVALUE:orders/x"],
            &[],
            &["--subscribe-key", "topic pattern"],
        ),
        (
            &["--publish-key", "SECRETVALUE:a||b"],
            &[],
            &["--publish-key", "an empty topic pattern"],
        ),
    ] {
        let mut cmd = binary(args);
        cmd.envs(env.iter().copied());
        let out = run(&mut cmd);
        assert_eq!(out.code(), Some(2), "{args:?} {env:?}: {}", out.stderr);
        for needle in needles {
            assert!(
                out.stderr.contains(needle),
                "{args:?} {env:?}: no {needle:?} in {}",
                out.stderr
            );
        }
        assert!(
            !out.stderr.contains(KEY),
            "the key is shown: {}",
            out.stderr
        );
        assert!(
            !out.stdout.contains(KEY),
            "the key is shown: {}",
            out.stdout
        );
        assert!(!out.stderr.contains("listening on"), "{}", out.stderr);
    }
}

#[test]
fn the_cli_and_the_bench_use_keys_with_roles() {
    let s = server();
    let addr = s.addr;
    let u = format!("http://{addr}");
    create(addr, "orders.eu");
    let cli = |args: &[&str], key: &str| {
        let mut all = args.to_vec();
        all.extend_from_slice(&["--url", &u, "--api-key", key]);
        run(&mut binary(&all))
    };
    let out = cli(&["pub", "orders.eu", "1"], PUB_SOME);
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    let out = cli(&["pub", "orders.eu", "1"], SUB_ALL);
    assert_eq!(out.code(), Some(1));
    assert!(out.stderr.contains("FORBIDDEN"), "{}", out.stderr);
    let out = cli(&["sub", "billing.eu"], SUB_SOME);
    assert_eq!(out.code(), Some(1));
    assert!(out.stderr.contains("FORBIDDEN"), "{}", out.stderr);
    let out = cli(&["topics", "create", "x"], PUB_ALL);
    assert_eq!(out.code(), Some(1));
    assert!(out.stderr.contains("forbidden"), "{}", out.stderr);
    let out = cli(&["topics"], SUB_SOME);
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert!(out.stdout.contains("orders.eu"), "{}", out.stdout);

    // The full key for everything, then publishers and subscribers on keys
    // with roles (topics are made with the full key either way).
    let bench = |keys: &[&str]| {
        let mut args = vec!["bench", "fanout", "--url", &u, "--api-key", FULL];
        args.extend_from_slice(keys);
        args.extend_from_slice(&["--subscribers", "2", "--count", "50"]);
        run(&mut binary(&args))
    };
    let bench_with =
        |pub_key: &str, sub_key: &str| bench(&["--pub-key", pub_key, "--sub-key", sub_key]);
    let out = bench(&[]);
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    let report: Value = serde_json::from_str(&out.stdout).expect("a JSON report");
    assert_eq!(report["lost"], 0, "{report}");
    assert_eq!(report["received"], 100, "{report}");

    let out = bench_with(PUB_ALL, SUB_ALL);
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    let report: Value = serde_json::from_str(&out.stdout).expect("a JSON report");
    assert_eq!(
        (&report["lost"], &report["received"]),
        (&json!(0), &json!(100)),
        "{report}"
    );
    // The keys really are the ones sent: swapped, nothing can be published.
    let out = bench_with(SUB_ALL, PUB_ALL);
    assert_ne!(out.code(), Some(0), "{}", out.stdout);
    assert!(out.stderr.contains("FORBIDDEN"), "{}", out.stderr);
}
