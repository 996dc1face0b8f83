//! `GET /metrics`: checked by a strict parser of the Prometheus text format
//! 0.0.4, then against known traffic.

mod common;

use std::collections::{BTreeMap, HashSet};

use common::*;
use serde_json::json;

/// One sample: metric name, labels (sorted), value.
type Series = BTreeMap<(String, Vec<(String, String)>), f64>;

#[derive(Debug, Default)]
struct Family {
    help: bool,
    kind: Option<String>,
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn parse_labels(text: &str) -> Vec<(String, String)> {
    let mut labels = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (name, after) = rest
            .split_once("=\"")
            .unwrap_or_else(|| panic!("bad labels {text:?}"));
        assert!(
            valid_name(name) && !name.contains(':'),
            "bad label name {name:?}"
        );
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c @ ('\\' | '"'))) => value.push(c),
                    other => panic!("bad escape {other:?} in {text:?}"),
                },
                Some((i, '"')) => break i,
                Some((_, c)) => value.push(c),
                None => panic!("unterminated label value in {text:?}"),
            }
        };
        labels.push((name.to_string(), value));
        rest = &after[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
    labels.sort();
    labels
}

fn parse_value(v: &str) -> f64 {
    match v {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        _ => v.parse().unwrap_or_else(|_| panic!("bad value {v:?}")),
    }
}

/// Parses the exposition strictly; panics on anything out of format.
fn parse_exposition(text: &str) -> Series {
    assert!(text.ends_with('\n'), "must end with a newline");
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    let mut finished: HashSet<String> = HashSet::new();
    let mut current: Option<String> = None;
    let mut series = Series::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (keyword, name) = (parts.next().unwrap(), parts.next().unwrap_or(""));
            assert!(valid_name(name), "bad metric name in {line:?}");
            if current.as_deref() != Some(name) {
                if let Some(prev) = current.take() {
                    finished.insert(prev);
                }
                assert!(!finished.contains(name), "family {name} split in two");
                current = Some(name.to_string());
            }
            let family = families.entry(name.to_string()).or_default();
            match keyword {
                "HELP" => {
                    assert!(!family.help, "two HELP lines for {name}");
                    assert!(
                        parts.next().is_some_and(|h| !h.is_empty()),
                        "empty HELP for {name}"
                    );
                    family.help = true;
                }
                "TYPE" => {
                    assert!(family.kind.is_none(), "two TYPE lines for {name}");
                    let kind = parts.next().unwrap_or("");
                    assert!(
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                        "bad TYPE {kind:?}"
                    );
                    family.kind = Some(kind.to_string());
                }
                _ => panic!("unknown comment {line:?}"),
            }
            continue;
        }
        assert!(
            !line.is_empty() && !line.starts_with('#'),
            "bad line {line:?}"
        );
        let (head, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value in {line:?}"));
        let (name, labels) = match head.split_once('{') {
            Some((name, rest)) => {
                let inner = rest
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("bad labels {line:?}"));
                (name, parse_labels(inner))
            }
            None => (head, Vec::new()),
        };
        assert!(valid_name(name), "bad metric name {name:?}");
        assert_eq!(
            current.as_deref(),
            Some(name),
            "sample {name} outside its family"
        );
        let family = &families[name];
        assert!(
            family.help && family.kind.is_some(),
            "{name}: HELP and TYPE must come first"
        );
        if family.kind.as_deref() == Some("counter") {
            assert!(
                name.ends_with("_total"),
                "counter {name} must end in _total"
            );
        }
        let key = (name.to_string(), labels);
        assert!(!series.contains_key(&key), "duplicate series {line:?}");
        series.insert(key, parse_value(value));
    }
    series
}

fn scrape(s: &Server) -> Series {
    let r = http(s.addr, "GET", "/metrics", None);
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    parse_exposition(&String::from_utf8(r.body).expect("UTF-8"))
}

fn get(series: &Series, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut labels: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    labels.sort();
    *series
        .get(&(name.to_string(), labels.clone()))
        .unwrap_or_else(|| panic!("no series {name}{labels:?}"))
}

#[test]
fn the_parser_refuses_what_it_should() {
    for bad in [
        "pubsubd_x 1\n",                                                    // no HELP/TYPE
        "# HELP a_total h\n# TYPE a_total counter\na_total 1\na_total 2\n", // duplicate
        "# HELP a h\n# TYPE a counter\na 1\n", // counter without _total
        "# HELP a h\n# TYPE a gauge\na{l=\"x} 1\n", // unterminated label
        "# HELP a h\n# TYPE a gauge\na one\n", // bad value
    ] {
        assert!(
            std::panic::catch_unwind(|| parse_exposition(bad)).is_err(),
            "{bad:?}"
        );
    }
    let ok = parse_exposition("# HELP a h\n# TYPE a gauge\na{l=\"q\\\"\\n\"} +Inf\n");
    assert_eq!(ok.len(), 1);
}

#[test]
fn metrics_follow_known_traffic() {
    let s = start_with(|c| c.api_keys = vec!["k".into()]);
    let authed = |method: &str, path: &str, body: Option<&str>| {
        Http::connect(s.addr).request(method, path, "X-API-Key: k\r\n", body)
    };
    let scrape = || {
        let r = authed("GET", "/metrics", None);
        assert_eq!(r.status, 200);
        parse_exposition(&String::from_utf8(r.body).unwrap())
    };
    let before = scrape();
    for name in ["m1", "m2"] {
        assert_eq!(
            authed("POST", "/topics", Some(&json!({"name": name}).to_string())).status,
            201
        );
    }
    let connect = || Ws::connect_path(s.addr, "/ws", &[("X-API-Key", "k")]).unwrap();
    let mut subs: Vec<Ws> = (0..3).map(|_| connect()).collect();
    subs[0].subscribe("m1", "a", 0);
    subs[1].subscribe("m1", "b", 0);
    subs[2].subscribe("m2", "c", 0);
    let mut publisher = connect();
    for n in 0..10 {
        let topic = if n % 2 == 0 { "m1" } else { "m2" };
        assert_eq!(publisher.publish(topic, json!(n))["type"], "ack");
    }
    publisher.send_text("not json");
    assert_eq!(publisher.recv()["error"]["code"], "BAD_REQUEST");
    assert_eq!(
        publisher.publish("nope", json!(1))["error"]["code"],
        "TOPIC_NOT_FOUND"
    );
    assert_eq!(http(s.addr, "GET", "/topics", None).status, 401);

    let after = scrape();
    let delta = |name: &str, labels: &[(&str, &str)]| {
        get(&after, name, labels) - get(&before, name, labels)
    };
    assert_eq!(delta("pubsubd_messages_published_total", &[]), 10.0);
    // 5 events to m1 (2 subscribers) and 5 to m2 (1 subscriber).
    assert_eq!(delta("pubsubd_messages_delivered_total", &[]), 15.0);
    assert_eq!(delta("pubsubd_messages_dropped_total", &[]), 0.0);
    assert_eq!(delta("pubsubd_slow_consumer_disconnects_total", &[]), 0.0);
    assert_eq!(
        delta("pubsubd_rejected_total", &[("reason", "bad_request")]),
        1.0
    );
    assert_eq!(
        delta("pubsubd_rejected_total", &[("reason", "topic_not_found")]),
        1.0
    );
    assert_eq!(
        delta("pubsubd_rejected_total", &[("reason", "unauthorized")]),
        1.0
    );
    assert!(delta("pubsubd_received_bytes_total", &[]) > 0.0);
    assert!(delta("pubsubd_sent_bytes_total", &[]) > 0.0);
    assert!(delta("pubsubd_connections_accepted_total", &[]) >= 6.0);
    assert_eq!(get(&after, "pubsubd_topics", &[]), 2.0);
    assert_eq!(get(&after, "pubsubd_subscriptions", &[]), 3.0);
    assert_eq!(
        get(&after, "pubsubd_connections", &[("kind", "websocket")]),
        4.0
    );
    // This scrape's own connection, at least.
    assert!(get(&after, "pubsubd_connections", &[("kind", "http")]) >= 1.0);
    assert!(get(&after, "pubsubd_uptime_seconds", &[]) >= 0.0);
}

#[test]
fn metrics_need_no_traffic_to_be_well_formed() {
    let s = start();
    let series = scrape(&s);
    assert_eq!(get(&series, "pubsubd_messages_published_total", &[]), 0.0);
    assert_eq!(
        get(&series, "pubsubd_connections", &[("kind", "websocket")]),
        0.0
    );
}
