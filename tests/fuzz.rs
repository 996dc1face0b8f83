//! Fuzzing the parsers of client bytes, structure-aware and checked.
//!
//! Generators build well-formed client messages and HTTP requests, the same
//! with exactly one known defect (whose refusal is known), and byte-level
//! mutations of both (whose outcome is not known, but whose invariants are).
//! The parsers are called directly, then a live server (the built binary, in
//! its own process) gets the same kinds of input over many WebSocket
//! connections, plus frames that end a connection (invalid UTF-8, protocol
//! violations, mangled frames), each answer checked against the library's own
//! parse of the text sent. Beside the fuzz, a well-behaved subscriber must get
//! every accepted event, valid and in order; afterwards the server must still
//! serve and its memory must be back near where it started.
//!
//! Reproducible: the seed is printed, and on failure with how to replay it
//! (`PUBSUBD_FUZZ_SEED=N`). `PUBSUBD_FUZZ_CASES` scales the run (default
//! 100 000: that many inputs per parser and that many live frames).

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::extra::*;
use common::*;
use pubsubd::http::Parsed;
use pubsubd::protocol::{Incoming, Replay as From, Request};
use serde_json::{Value, json};

// ---- seed, scale, replay ----

struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        // splitmix64 of the seed: never the all-zero state xorshift cannot leave.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng((z ^ (z >> 31)) | 1)
    }
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
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

struct Settings {
    seed: u64,
    cases: u64,
}

fn settings() -> Settings {
    let seed = match std::env::var("PUBSUBD_FUZZ_SEED") {
        Ok(s) => s
            .strip_prefix("0x")
            .map_or_else(|| s.parse(), |h| u64::from_str_radix(h, 16))
            .unwrap_or_else(|_| panic!("PUBSUBD_FUZZ_SEED={s:?} is not a number")),
        // A new seed each run explores new inputs; it is printed for replay.
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    };
    let cases = std::env::var("PUBSUBD_FUZZ_CASES")
        .map(|s| {
            s.parse()
                .unwrap_or_else(|_| panic!("PUBSUBD_FUZZ_CASES={s:?} is not a number"))
        })
        .unwrap_or(100_000);
    println!("fuzz: seed {seed}, {cases} cases (PUBSUBD_FUZZ_SEED / PUBSUBD_FUZZ_CASES)");
    Settings { seed, cases }
}

/// On a failing test, says how to replay it.
struct Replay(u64);

impl Drop for Replay {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "fuzz: FAILED with seed {0}; replay with PUBSUBD_FUZZ_SEED={0} cargo test --test fuzz",
                self.0
            );
        }
    }
}

// ---- JSON and client messages ----

/// The topics that exist on the live server; every other name does not.
const TOPICS: &[&str] = &["f0", "f1", "f2", "f3"];

fn pad(rng: &mut Rng) -> &'static str {
    const PADS: &[&str] = &["", "", "", " ", "\n", "\t ", "  \r\n"];
    PADS[rng.below(PADS.len())]
}

/// A JSON string literal, valid, with escapes and non-ASCII text.
fn json_string(rng: &mut Rng) -> String {
    const PIECES: &[&str] = &[
        "a",
        "xyz",
        "ORD-123",
        " ",
        "\\n",
        "\\\"",
        "\\\\",
        "\\/",
        "\\u00e9",
        "\\u0000",
        "\\ud83d\\ude00",
        "é",
        "日本",
        "🦀",
        "\\t",
        "0",
        "-",
    ];
    let mut s = String::from("\"");
    for _ in 0..rng.below(6) {
        s.push_str(PIECES[rng.below(PIECES.len())]);
    }
    s.push('"');
    s
}

fn json_number(rng: &mut Rng) -> String {
    match rng.below(6) {
        0 => (rng.next() as i64).to_string(),
        1 => rng.below(1000).to_string(),
        2 => rng
            .pick(&["-0", "0.5", "1e308", "-1.5E-7", "2.0", "1e-400"])
            .to_string(),
        3 => format!("1{}", "0".repeat(rng.below(60))),
        4 => format!("-{}.{}", rng.below(100), rng.below(100)),
        _ => u64::MAX.to_string(),
    }
}

/// A JSON value nesting at most `depth` arrays and objects.
fn json_value(rng: &mut Rng, depth: usize) -> String {
    let scalar = depth == 0 || rng.chance(50);
    if scalar {
        return match rng.below(5) {
            0 => rng.pick(&["null", "true", "false"]).to_string(),
            1 | 2 => json_number(rng),
            _ => json_string(rng),
        };
    }
    let n = rng.below(4);
    if rng.chance(50) {
        let items: Vec<String> = (0..n).map(|_| json_value(rng, depth - 1)).collect();
        format!("[{}]", items.join(&format!(",{}", pad(rng))))
    } else {
        let items: Vec<String> = (0..n)
            .map(|i| format!("\"k{i}\":{}", json_value(rng, depth - 1)))
            .collect();
        format!("{{{}}}", items.join(","))
    }
}

/// A value nesting exactly `depth` arrays and objects.
fn nested(rng: &mut Rng, depth: usize) -> String {
    let mut v = json_value(rng, 0);
    for _ in 0..depth {
        v = if rng.chance(50) {
            format!("[{v}]")
        } else {
            format!("{{\"a\":{v}}}")
        };
    }
    v
}

fn payload(rng: &mut Rng) -> String {
    // A top-level null included: it is a JSON value like any other.
    payload_any(rng)
}

fn payload_any(rng: &mut Rng) -> String {
    match rng.below(10) {
        0 => nested(rng, 64), // the deepest allowed
        1 => {
            let depth = 1 + rng.below(63);
            nested(rng, depth)
        }
        _ => {
            let depth = 1 + rng.below(4);
            json_value(rng, depth)
        }
    }
}

fn uuid_of(rng: &mut Rng) -> String {
    uuid::Uuid::from_u64_pair(rng.next(), rng.next()).to_string()
}

fn topic_name(rng: &mut Rng) -> String {
    match rng.below(10) {
        0..=5 => rng.pick(TOPICS).to_string(),
        6 => "ghost".to_string(),
        7 => "a.b_c-d:e".to_string(),
        8 => "t".repeat(255),
        _ => {
            const CHARS: &[u8] = b"abcXYZ019._-:";
            (0..1 + rng.below(20))
                .map(|_| *rng.pick(CHARS) as char)
                .collect()
        }
    }
}

/// How a generated message must be answered by the parser.
#[derive(Debug)]
enum Expect {
    /// Accepted, with these decoded values.
    Accept {
        kind: &'static str,
        topic: Option<String>,
        client_id: Option<String>,
        last_n: u64,
        payload: Option<String>,
    },
    /// Refused with a message that contains this.
    Refuse(&'static str),
}

/// A well-formed message, or one with exactly one known defect.
fn client_message(rng: &mut Rng) -> (String, Expect) {
    let kind = *rng.pick(&["subscribe", "unsubscribe", "publish", "ping"]);
    let topic = topic_name(rng);
    let client_id = match rng.below(4) {
        0 => "c".repeat(256),
        1 => "\\u00e9t\\u00e9".to_string(),
        _ => format!("c{}", rng.below(50)),
    };
    let last_n = if rng.chance(20) {
        1000
    } else {
        rng.below(120) as u64
    };
    let payload = payload(rng);
    let id = uuid_of(rng);

    let mut fields: Vec<(&str, String)> = vec![("type", format!("\"{kind}\""))];
    if kind != "ping" {
        fields.push(("topic", format!("\"{topic}\"")));
    }
    if kind == "subscribe" || kind == "unsubscribe" || (kind == "publish" && rng.chance(30)) {
        fields.push(("client_id", format!("\"{client_id}\"")));
    }
    if kind == "subscribe" && rng.chance(70) {
        fields.push(("last_n", last_n.to_string()));
    }
    let mut message = vec![("id", format!("\"{id}\"")), ("payload", payload.clone())];
    if rng.chance(30) {
        message.reverse();
    }
    if rng.chance(70) {
        let rid = match rng.below(5) {
            0 => rng.below(100_000).to_string(),
            1 => "null".to_string(),
            2 => json_string(rng),
            _ => format!("\"r{}\"", rng.below(1000)),
        };
        fields.push(("request_id", rid));
    }

    let uses_topic = kind != "ping";
    let uses_client_id = kind == "subscribe" || kind == "unsubscribe";
    let mut defects: Vec<u8> = vec![0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7];
    if uses_topic {
        defects.extend([10, 11, 12]);
    }
    if uses_client_id {
        defects.extend([20, 21, 22]);
    }
    if kind == "subscribe" {
        defects.push(30);
    }
    if kind == "publish" {
        defects.extend([40, 41, 42, 43, 44, 45, 46, 47, 47, 48, 48]);
    }
    let set = |fields: &mut Vec<(&str, String)>, name: &str, value: String| {
        fields.retain(|(n, _)| *n != name);
        fields.push((
            match name {
                "type" => "type",
                "topic" => "topic",
                "client_id" => "client_id",
                "last_n" => "last_n",
                _ => "request_id",
            },
            value,
        ));
    };
    let remove = |fields: &mut Vec<(&str, String)>, name: &str| fields.retain(|(n, _)| *n != name);
    let mut whole: Option<String> = None;
    let refusal: Option<&'static str> = match *rng.pick(&defects) {
        0 => None,
        1 => {
            let bad = rng
                .pick(&["true", "{}", "[1]", "\"\\ud800\"", "1.5e"])
                .to_string();
            set(&mut fields, "request_id", bad.clone());
            // "1.5e" is not JSON at all.
            Some(if bad == "1.5e" {
                "invalid JSON"
            } else {
                "request_id must be"
            })
        }
        2 => {
            remove(&mut fields, "type");
            Some("missing field 'type'")
        }
        3 => {
            let t = rng.pick(&["\"publishx\"", "\"PING\"", "\"\""]).to_string();
            set(&mut fields, "type", t);
            Some("unknown type")
        }
        4 => {
            let t = rng.pick(&["1", "true", "[]", "{}"]).to_string();
            set(&mut fields, "type", t);
            Some("field 'type' must be a string")
        }
        5 => {
            let (name, value) = fields[rng.below(fields.len())].clone();
            fields.push((name, value));
            Some("duplicate field")
        }
        6 => {
            whole = Some(
                rng.pick(&["[]", "1", "\"ping\"", "null", "[{\"type\":\"ping\"}]"])
                    .to_string(),
            );
            Some("message must be a JSON object")
        }
        7 => {
            whole = Some(format!("{{}}{}", rng.pick(&["x", "{}", ",", "]"])));
            Some("invalid JSON")
        }
        10 => {
            remove(&mut fields, "topic");
            Some("missing field 'topic'")
        }
        11 => {
            let t = rng
                .pick(&["\"\"", "\"a b\"", "\"a/b\"", "\"caf\\u00e9\"", "\"é\""])
                .to_string();
            let t = if rng.chance(20) {
                format!("\"{}\"", "t".repeat(256))
            } else {
                t
            };
            set(&mut fields, "topic", t);
            Some("invalid topic name")
        }
        12 => {
            let t = rng.pick(&["1", "true", "[\"f0\"]", "{}"]).to_string();
            set(&mut fields, "topic", t);
            Some("field 'topic' must be a string")
        }
        20 => {
            remove(&mut fields, "client_id");
            Some("missing field 'client_id'")
        }
        21 => {
            let c = if rng.chance(50) {
                "\"\"".to_string()
            } else {
                format!("\"{}\"", "c".repeat(257))
            };
            set(&mut fields, "client_id", c);
            Some("client_id must be 1 to 256 bytes")
        }
        22 => {
            let c = rng.pick(&["7", "false", "[]"]).to_string();
            set(&mut fields, "client_id", c);
            Some("field 'client_id' must be a string")
        }
        30 => {
            let n = rng
                .pick(&["-1", "1.5", "\"5\"", "true", "1e2", "18446744073709551616"])
                .to_string();
            set(&mut fields, "last_n", n);
            Some("last_n must be a non-negative integer")
        }
        40 => {
            message.clear();
            Some("missing field 'message'")
        }
        41 => {
            message.clear();
            let m = rng.pick(&["\"x\"", "1", "[1]", "true"]).to_string();
            fields.push(("message_raw", m));
            Some("message must be an object")
        }
        42 => {
            message.retain(|(n, _)| *n != "id");
            Some("missing field 'message.id'")
        }
        43 => {
            let mut bad = id.clone();
            let at = rng.below(bad.len());
            let with = ["g", "", "--", "Z"][rng.below(4)];
            bad.replace_range(at..at + 1, with);
            let bad = if rng.chance(20) {
                "not-a-uuid".to_string()
            } else {
                bad
            };
            message.retain(|(n, _)| *n != "id");
            message.push(("id", format!("\"{bad}\"")));
            Some("message.id must be a valid UUID")
        }
        44 => {
            message.retain(|(n, _)| *n != "id");
            message.push(("id", rng.pick(&["123", "null_", "{}"]).to_string()));
            // null_ is not JSON
            if message.last().unwrap().1 == "null_" {
                Some("invalid JSON")
            } else {
                Some("message.id must be a string")
            }
        }
        45 => {
            message.retain(|(n, _)| *n != "payload");
            Some("missing field 'message.payload'")
        }
        46 => {
            message.retain(|(n, _)| *n != "payload");
            let depth = 65 + rng.below(40);
            message.push(("payload", nested(rng, depth)));
            Some("deeper than 64")
        }
        47 => {
            message.retain(|(n, _)| *n != "payload");
            let lone = rng.pick(&[
                "\"\\ud800\"",
                "\"a\\udfffb\"",
                "[\"\\ud83d\\u0041\"]",
                "{\"k\":\"\\uDBFF\"}",
            ]);
            message.push(("payload", lone.to_string()));
            Some("lone surrogate")
        }
        _ => {
            // 48: cut short: never valid JSON.
            whole = Some(String::new());
            Some("invalid JSON")
        }
    };
    if kind == "publish" && !message.is_empty() {
        let inner: Vec<String> = message
            .iter()
            .map(|(n, v)| format!("\"{n}\":{}{v}", pad(rng)))
            .collect();
        fields.push(("message", format!("{{{}}}", inner.join(","))));
    }
    // Field order is free.
    for i in (1..fields.len()).rev() {
        let j = rng.below(i + 1);
        fields.swap(i, j);
    }
    let body: Vec<String> = fields
        .iter()
        .map(|(n, v)| {
            let n = if *n == "message_raw" { "message" } else { n };
            format!("\"{n}\"{}:{}{v}", pad(rng), pad(rng))
        })
        .collect();
    let mut text = format!(
        "{{{}{}{}}}",
        pad(rng),
        body.join(&format!(",{}", pad(rng))),
        pad(rng)
    );
    if let Some(w) = whole {
        text = if w.is_empty() {
            // The truncation defect: cut anywhere but the very end.
            let mut cut = rng.below(text.len());
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text[..cut].to_string()
        } else if let Some(tail) = w.strip_prefix("{}") {
            format!("{text}{tail}")
        } else {
            w
        };
    }
    let expect = match refusal {
        Some(needle) => Expect::Refuse(needle),
        None => Expect::Accept {
            kind,
            topic: (kind != "ping").then(|| decode(&format!("\"{topic}\""))),
            client_id: uses_client_id.then(|| decode(&format!("\"{client_id}\""))),
            last_n: if kind == "subscribe" && fields.iter().any(|(n, _)| *n == "last_n") {
                last_n
            } else {
                0
            },
            payload: (kind == "publish").then_some(payload),
        },
    };
    (text, expect)
}

fn decode(json_string: &str) -> String {
    serde_json::from_str(json_string).expect("a generated JSON string")
}

/// Nesting depth as serde_json reads it, counting every member of an object,
/// repeated keys included (a `Value` keeps only the last of them, which can
/// hide a deeper one).
struct SerdeDepth(usize);

impl<'de> serde::Deserialize<'de> for SerdeDepth {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = SerdeDepth;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<SerdeDepth, A::Error> {
                let mut max = 0;
                while let Some(SerdeDepth(d)) = a.next_element()? {
                    max = max.max(d);
                }
                Ok(SerdeDepth(1 + max))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<SerdeDepth, A::Error> {
                let mut max = 0;
                while let Some((serde::de::IgnoredAny, SerdeDepth(d))) = a.next_entry()? {
                    max = max.max(d);
                }
                Ok(SerdeDepth(1 + max))
            }
            fn visit_bool<E>(self, _: bool) -> Result<SerdeDepth, E> {
                Ok(SerdeDepth(0))
            }
            fn visit_i64<E>(self, _: i64) -> Result<SerdeDepth, E> {
                Ok(SerdeDepth(0))
            }
            fn visit_u64<E>(self, _: u64) -> Result<SerdeDepth, E> {
                Ok(SerdeDepth(0))
            }
            fn visit_f64<E>(self, _: f64) -> Result<SerdeDepth, E> {
                Ok(SerdeDepth(0))
            }
            fn visit_str<E>(self, _: &str) -> Result<SerdeDepth, E> {
                Ok(SerdeDepth(0))
            }
            fn visit_unit<E>(self) -> Result<SerdeDepth, E> {
                Ok(SerdeDepth(0))
            }
        }
        d.deserialize_any(Visitor)
    }
}

fn depth_of(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(depth_of).max().unwrap_or(0),
        Value::Object(o) => 1 + o.values().map(depth_of).max().unwrap_or(0),
        _ => 0,
    }
}

/// What holds for any parse, whatever the input: an accepted publish carries
/// a payload that strict parsers take (no lone surrogate), at most 64 deep;
/// names are valid; an echoed request_id is a JSON string or number; a
/// refusal says why.
fn check_invariants(text: &str, parsed: &Incoming<'_>) {
    if let Some(rid) = parsed.request_id {
        // A string or a number that strict parsers take (no lone surrogate,
        // no number beyond f64).
        serde_json::from_str::<Value>(rid)
            .unwrap_or_else(|e| panic!("echoed request_id {rid:?} is not JSON ({e}): {text:?}"));
        assert!(
            rid.starts_with('"') || rid.starts_with('-') || rid.as_bytes()[0].is_ascii_digit(),
            "request_id {rid}: {text:?}"
        );
        assert!(!lone_surrogate(rid), "request_id {rid}: {text:?}");
    }
    if let Some(topic) = parsed.topic {
        assert!(pubsubd::protocol::valid_topic(topic), "{text:?}");
    }
    match &parsed.request {
        Err(message) => assert!(!message.is_empty(), "a refusal must say why: {text:?}"),
        Ok(Request::Publish { topic, id, payload }) => {
            assert!(pubsubd::protocol::valid_topic(topic), "{text:?}");
            assert!(uuid::Uuid::try_parse(id).is_ok(), "{text:?}");
            // Re-parses (numbers of any size are passed through verbatim, by
            // design: see hostile::json_edge_cases_are_answered_cleanly).
            let payload = payload.get();
            serde_json::from_str::<serde::de::IgnoredAny>(payload)
                .unwrap_or_else(|e| panic!("accepted payload does not re-parse ({e}): {text:?}"));
            assert!(
                !lone_surrogate(payload),
                "accepted payload holds a lone surrogate: {text:?}"
            );
            let depth = nesting(payload);
            assert!(depth <= 64, "accepted payload nests {depth} deep: {text:?}");
            // Serde's own reading of the depth agrees (repeated keys and all).
            if let Ok(SerdeDepth(d)) = serde_json::from_str::<SerdeDepth>(payload) {
                assert_eq!(d, depth, "{text:?}");
            }
        }
        Ok(Request::Subscribe {
            topic, client_id, ..
        })
        | Ok(Request::Unsubscribe { topic, client_id }) => {
            assert!(pubsubd::protocol::valid_topic(topic), "{text:?}");
            assert!((1..=256).contains(&client_id.len()), "{text:?}");
        }
        Ok(Request::Ping) => {}
    }
}

/// Whether JSON text holds a `\u` escape of a surrogate that is not half of
/// a high-low pair.
fn lone_surrogate(json: &str) -> bool {
    let b = json.as_bytes();
    let hex = |at: usize| -> Option<u16> {
        let digits = std::str::from_utf8(b.get(at..at + 4)?).ok()?;
        u16::from_str_radix(digits, 16).ok()
    };
    let (mut i, mut in_string) = (0, false);
    while i < b.len() {
        match b[i] {
            b'"' => in_string = !in_string,
            b'\\' if in_string => {
                if b.get(i + 1) == Some(&b'u') {
                    let unit = hex(i + 2).unwrap_or(0);
                    if (0xdc00..0xe000).contains(&unit) {
                        return true;
                    }
                    if (0xd800..0xdc00).contains(&unit) {
                        let low = (b.get(i + 6..i + 8) == Some(b"\\u"))
                            .then(|| hex(i + 8))
                            .flatten();
                        if !low.is_some_and(|l| (0xdc00..0xe000).contains(&l)) {
                            return true;
                        }
                        i += 6;
                    }
                    i += 6;
                    continue;
                }
                i += 2;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    false
}

/// The deepest nesting of arrays and objects in valid JSON text.
fn nesting(json: &str) -> usize {
    let (mut depth, mut max, mut in_string, mut escaped) = (0usize, 0, false, false);
    for &c in json.as_bytes() {
        match c {
            _ if escaped => escaped = false,
            b'\\' if in_string => escaped = true,
            b'"' => in_string = !in_string,
            b'[' | b'{' if !in_string => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' if !in_string => depth -= 1,
            _ => {}
        }
    }
    max
}

/// Whether what the server would send back for `text` is JSON that strict
/// parsers (serde_json here) take: not so for a payload holding a number
/// beyond f64, which the server passes through verbatim.
fn strict_echo(text: &str) -> bool {
    let parsed = pubsubd::protocol::parse(text);
    let strict = |raw: &str| serde_json::from_str::<Value>(raw).is_ok();
    parsed.request_id.is_none_or(strict)
        && match &parsed.request {
            Ok(Request::Publish { payload, .. }) => strict(payload.get()),
            _ => true,
        }
}

fn check_expected(text: &str, parsed: &Incoming<'_>, expect: &Expect) {
    match (expect, &parsed.request) {
        (Expect::Refuse(needle), Err(message)) => assert!(
            message.contains(needle),
            "refused with {message:?}, expected {needle:?}: {text:?}"
        ),
        (Expect::Refuse(needle), Ok(r)) => {
            panic!("accepted {r:?}, expected a refusal with {needle:?}: {text:?}")
        }
        (Expect::Accept { .. }, Err(message)) => panic!("refused ({message}): {text:?}"),
        (
            Expect::Accept {
                kind,
                topic,
                client_id,
                last_n,
                payload,
            },
            Ok(request),
        ) => {
            let (k, t, c, n, p) = match request {
                Request::Subscribe {
                    topic,
                    client_id,
                    replay,
                } => {
                    // The generator sends last_n, never since.
                    let n = match replay {
                        From::Last(n) => *n,
                        From::Since { .. } => panic!("since out of nowhere: {text:?}"),
                    };
                    ("subscribe", Some(topic), Some(client_id), n, None)
                }
                Request::Unsubscribe { topic, client_id } => {
                    ("unsubscribe", Some(topic), Some(client_id), 0, None)
                }
                Request::Publish { topic, payload, .. } => {
                    ("publish", Some(topic), None, 0, Some(payload.get()))
                }
                Request::Ping => ("ping", None, None, 0, None),
            };
            assert_eq!(k, *kind, "{text:?}");
            assert_eq!(t.map(|t| t.to_string()), *topic, "{text:?}");
            assert_eq!(c.map(|c| c.to_string()), *client_id, "{text:?}");
            assert_eq!(n, *last_n, "{text:?}");
            assert_eq!(
                p,
                payload.as_deref(),
                "payload passed on verbatim: {text:?}"
            );
        }
    }
}

// ---- byte mutations ----

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
    b"\\udc00",
    b"null",
    b"-0",
    b"1e999",
    b"\r\n",
    b"\r\n\r\n",
    b"%",
    b"%zz",
    b"\xff",
    b"\xc3",
    b"\xed\xa0\x80",
    b"\x00",
    b"Content-Length: 99999999999999999999\r\n",
    b"Content-Length: 5\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"type",
    b"publish",
    b"subscribe",
    b"topic",
    b"\"payload\":",
    b"\"request_id\":",
];

/// One to four mutations of `input`: flips, cuts, splices, insertions, repetitions.
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

/// Any client text: well-formed, one defect, or mutated (then made valid
/// UTF-8, as a text frame's payload must be).
fn any_text(rng: &mut Rng) -> (String, Option<Expect>) {
    let (text, expect) = client_message(rng);
    if rng.chance(30) {
        let (other, _) = client_message(rng);
        let bytes = mutate(rng, text.as_bytes(), other.as_bytes());
        (String::from_utf8_lossy(&bytes).into_owned(), None)
    } else {
        (text, Some(expect))
    }
}

// ---- HTTP requests ----

#[derive(Debug)]
enum HttpExpect {
    Request {
        method: String,
        path: String,
        query: Option<String>,
        body: Vec<u8>,
        used: usize,
    },
    Reject(u16),
    Partial,
}

const MAX_BODY: usize = 1 << 16;

/// A request, well-formed or with one known defect.
fn http_request(rng: &mut Rng) -> (Vec<u8>, HttpExpect) {
    let method = *rng.pick(&["GET", "POST", "DELETE", "PUT", "PATCH", "HEAD", "OPTIONS"]);
    let path = match rng.below(8) {
        0 => "/health".to_string(),
        1 => "/topics".to_string(),
        2 => format!("/topics/h-{}", rng.below(100)),
        3 => "/topics/a%3Ab%20c".to_string(),
        4 => "/ws".to_string(),
        5 => "/metrics".to_string(),
        6 => "/stats".to_string(),
        _ => "/nope/x".to_string(),
    };
    let query = rng
        .chance(20)
        .then(|| rng.pick(&["api_key=k", "a=1&b=%20", "", "x"]).to_string());
    let version = *rng.pick(&["HTTP/1.1", "HTTP/1.1", "HTTP/1.0"]);
    let body: Vec<u8> = match rng.below(4) {
        0 => format!("{{\"name\":\"h-{}\"}}", rng.below(1000)).into_bytes(),
        1 => vec![b'x'; rng.below(3000)],
        _ => Vec::new(),
    };
    let mut headers: Vec<String> = Vec::new();
    for (name, value) in [
        ("Host", "localhost"),
        ("Content-Type", "application/json"),
        ("X-API-Key", "k"),
        ("Connection", "keep-alive, Upgrade"),
        ("Upgrade", "websocket"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("Sec-WebSocket-Version", "13"),
        ("User-Agent", "fuzz/1.0"),
        ("Accept", "*/*"),
    ] {
        if rng.chance(40) {
            let name = if rng.chance(30) {
                name.to_ascii_lowercase()
            } else {
                name.to_string()
            };
            headers.push(format!("{name}:{}{value}", pad_h(rng)));
        }
    }
    if !body.is_empty() || rng.chance(30) {
        headers.push(format!("Content-Length: {}", body.len()));
    }
    let mut expect_status = None;
    let mut body = body;
    let mut extra_tail: Vec<u8> = Vec::new();
    let mut truncate = false;
    match rng.below(16) {
        0 => {
            headers.push("Transfer-Encoding: chunked".into());
            expect_status = Some(411);
        }
        1 => {
            headers.retain(|h| !h.starts_with("Content-Length"));
            headers.push(format!("Content-Length: {}", body.len()));
            headers.push(format!("Content-Length: {}", body.len() + 1));
            expect_status = Some(400);
        }
        2 => {
            headers.retain(|h| !h.starts_with("Content-Length"));
            let v = rng.pick(&["abc", "-1", "99999999999999999999999", "1 2"]);
            headers.push(format!("Content-Length: {v}"));
            expect_status = Some(400);
        }
        3 => {
            headers.retain(|h| !h.starts_with("Content-Length"));
            headers.push(format!(
                "Content-Length: {}",
                MAX_BODY + 1 + rng.below(1000)
            ));
            body.clear();
            expect_status = Some(413);
        }
        4 => {
            for i in 0..65 {
                headers.push(format!("X-Many-{i}: v"));
            }
            expect_status = Some(431);
        }
        5 => {
            headers.push(format!("X-Big: {}", "b".repeat(9000)));
            expect_status = Some(431);
        }
        6 => {
            headers.push(
                rng.pick(&["Bad Name: x", "NoColon", "X-Ctl\x01: y"])
                    .to_string(),
            );
            expect_status = Some(400);
        }
        7 => truncate = true,
        8 => {
            // Pipelined: a second request follows; only the first is taken.
            extra_tail = b"GET /health HTTP/1.1\r\n\r\n".to_vec();
        }
        _ => {}
    }
    let target = match &query {
        Some(q) => format!("{path}?{q}"),
        None => path.clone(),
    };
    let line = match (expect_status, rng.below(20)) {
        (None, 0) => {
            expect_status = Some(400);
            rng.pick(&[
                format!("{method} {target} HTTP/2.0"),
                format!("{method} {target}"),
                format!("{method}  {target} {version}"),
                format!("G\x01T {target} {version}"),
            ])
            .clone()
        }
        _ => format!("{method} {target} {version}"),
    };
    let mut bytes = format!(
        "{line}\r\n{}\r\n",
        headers
            .iter()
            .map(|h| format!("{h}\r\n"))
            .collect::<String>()
    )
    .into_bytes();
    bytes.extend_from_slice(&body);
    let used = bytes.len();
    let expect = match expect_status {
        Some(status) => HttpExpect::Reject(status),
        None if truncate => {
            bytes.truncate(rng.below(used));
            HttpExpect::Partial
        }
        None => HttpExpect::Request {
            method: method.to_string(),
            path,
            query,
            body,
            used,
        },
    };
    bytes.extend_from_slice(&extra_tail);
    (bytes, expect)
}

fn pad_h(rng: &mut Rng) -> &'static str {
    const PADS: &[&str] = &[" ", " ", "", "  ", "\t"];
    PADS[rng.below(PADS.len())]
}

fn check_http(input: &[u8], parsed: &Parsed, expect: Option<&HttpExpect>) {
    let show = || String::from_utf8_lossy(&input[..input.len().min(300)]).into_owned();
    match parsed {
        Parsed::Request(req, used) => {
            assert!(*used > 0 && *used <= input.len(), "{}", show());
            assert!(req.body.len() <= MAX_BODY, "{}", show());
            assert_eq!(
                req.body[..],
                input[used - req.body.len()..*used],
                "{}",
                show()
            );
        }
        Parsed::Reject(r) => assert!(
            [400, 411, 413, 431].contains(&r.status()) && !r.message().is_empty(),
            "{r:?}: {}",
            show()
        ),
        Parsed::Partial => {}
    }
    let Some(expect) = expect else { return };
    match (expect, parsed) {
        (
            HttpExpect::Request {
                method,
                path,
                query,
                body,
                used,
            },
            Parsed::Request(req, n),
        ) => {
            assert_eq!(
                (&req.method, &req.path, &req.query, &req.body, n),
                (method, path, query, body, used),
                "{}",
                show()
            );
        }
        (HttpExpect::Reject(status), Parsed::Reject(r)) => {
            assert_eq!(r.status(), *status, "{r:?}: {}", show())
        }
        (HttpExpect::Partial, Parsed::Partial) => {}
        (expect, parsed) => panic!("expected {expect:?}, got {parsed:?}: {}", show()),
    }
}

// ---- the parsers, called directly ----

/// A publish in the layout most clients write and the fast path compares
/// by its fixed parts — compact, `{"type":"publish","topic":…,"message":{"id":…,
/// "payload":…}}`, `request_id` last if at all — with every kind of payload the
/// generators make (too deep and lone surrogates among them), and byte-level
/// mutations of it: the fast path must answer as the typed parse does.
#[test]
fn compact_publishes_are_parsed_as_the_typed_parse_does() {
    let Settings { seed, cases } = settings();
    let _replay = Replay(seed);
    let mut rng = Rng::new(seed ^ 0xC0DE);
    let (mut accepted, mut refused) = (0u64, 0u64);
    for _ in 0..cases {
        let payload = match rng.below(10) {
            0 => {
                let depth = 65 + rng.below(10);
                nested(&mut rng, depth)
            }
            1 => rng
                .pick(&["\"\\ud800\"", "[\"\\ud83d\\u0041\"]", "{\"k\":\"\\uDBFF\"}"])
                .to_string(),
            _ => payload_any(&mut rng),
        };
        let topic = topic_name(&mut rng);
        let id = uuid_of(&mut rng);
        let mut text = format!(
            r#"{{"type":"publish","topic":"{topic}","message":{{"id":"{id}","payload":{payload}}}"#
        );
        if rng.chance(50) {
            let rid = match rng.below(3) {
                0 => rng.below(100_000).to_string(),
                1 => json_string(&mut rng),
                _ => format!("\"r{}\"", rng.below(1000)),
            };
            text.push_str(&format!(r#","request_id":{rid}"#));
        }
        text.push('}');
        if rng.chance(30) {
            let (other, _) = client_message(&mut rng);
            let bytes = mutate(&mut rng, text.as_bytes(), other.as_bytes());
            text = String::from_utf8_lossy(&bytes).into_owned();
        }
        let parsed = pubsubd::protocol::parse(&text);
        assert_eq!(
            format!("{parsed:?}"),
            format!("{:?}", pubsubd::protocol::parse_typed(&text)),
            "the fast path disagrees: {text:?}"
        );
        check_invariants(&text, &parsed);
        match parsed.request {
            Ok(_) => accepted += 1,
            Err(_) => refused += 1,
        }
    }
    println!("compact publishes: {accepted} accepted, {refused} refused");
    assert!(accepted > cases / 3 && refused > cases / 10);
}

#[test]
fn the_message_parser_answers_generated_messages_as_the_protocol_says() {
    let Settings { seed, cases } = settings();
    let _replay = Replay(seed);
    let mut rng = Rng::new(seed);
    let (mut accepted, mut refused, mut mutated) = (0u64, 0u64, 0u64);
    for _ in 0..cases {
        let (text, expect) = any_text(&mut rng);
        let parsed = pubsubd::protocol::parse(&text);
        // parse tries its fast path first: it must answer as the typed parse does.
        assert_eq!(
            format!("{parsed:?}"),
            format!("{:?}", pubsubd::protocol::parse_typed(&text)),
            "the fast path disagrees: {text:?}"
        );
        check_invariants(&text, &parsed);
        match expect {
            Some(expect) => {
                check_expected(&text, &parsed, &expect);
                match expect {
                    Expect::Accept { .. } => accepted += 1,
                    Expect::Refuse(_) => refused += 1,
                }
            }
            None => mutated += 1,
        }
    }
    println!("messages: {accepted} well-formed, {refused} with a defect, {mutated} mutated");
    // The mix really has all three kinds in it.
    assert!(accepted > cases / 10 && refused > cases / 10 && mutated > cases / 10);
}

#[test]
fn the_http_parser_answers_generated_requests_as_it_should() {
    let Settings { seed, cases } = settings();
    let _replay = Replay(seed);
    let mut rng = Rng::new(seed ^ 0x4854_5450);
    let mut known = 0u64;
    for i in 0..cases {
        let (bytes, expect) = http_request(&mut rng);
        let (input, expect) = match i % 10 {
            0 => (
                (0..rng.below(300)).map(|_| rng.next() as u8).collect(),
                None,
            ),
            1..=3 => {
                let (other, _) = http_request(&mut rng);
                (mutate(&mut rng, &bytes, &other), None)
            }
            _ => (bytes, Some(expect)),
        };
        let parsed = pubsubd::http::parse(&input, MAX_BODY);
        check_http(&input, &parsed, expect.as_ref());
        known += u64::from(expect.is_some());
    }
    assert!(known > cases / 2);
}

// ---- a live server ----

/// What the fuzz connections did, for the checks at the end.
#[derive(Default)]
struct Tally {
    frames: AtomicU64,
    connections: AtomicU64,
    /// Publishes acknowledged on an existing topic: events the watcher must get.
    published: AtomicU64,
    /// Connections ended by a mangled frame, whose last publish may have been
    /// accepted without its ack being seen.
    unsure: AtomicU64,
    answers: AtomicU64,
}

/// The answer the server must give to `text`, from the library's own parse:
/// (type, error code, request_id, topic, error message).
fn expected_answer(text: &str) -> (String, Option<String>, Value, Value, Option<String>) {
    let parsed = pubsubd::protocol::parse(text);
    let rid = parsed
        .request_id
        .map_or(Value::Null, |r| serde_json::from_str(r).unwrap());
    let topic = parsed.topic.map_or(Value::Null, |t| json!(t));
    match parsed.request {
        Err(message) => (
            "error".into(),
            Some("BAD_REQUEST".into()),
            rid,
            topic,
            Some(message),
        ),
        Ok(Request::Ping) => ("pong".into(), None, rid, Value::Null, None),
        Ok(Request::Subscribe { topic, .. })
        | Ok(Request::Unsubscribe { topic, .. })
        | Ok(Request::Publish { topic, .. }) => {
            if TOPICS.contains(&&*topic) {
                ("ack".into(), None, rid, json!(topic), None)
            } else {
                (
                    "error".into(),
                    Some("TOPIC_NOT_FOUND".into()),
                    rid,
                    json!(topic),
                    None,
                )
            }
        }
    }
}

/// Reads the answer to the next request, skipping events and notices.
fn next_answer(r: &mut FrameReader, context: &str) -> Value {
    loop {
        match r.next() {
            ServerFrame::Text(t) => {
                let v: Value = serde_json::from_str(&t)
                    .unwrap_or_else(|e| panic!("server sent bad JSON ({e}): {t:?}"));
                match v["type"].as_str() {
                    Some("event" | "info") => continue,
                    _ => return v,
                }
            }
            ServerFrame::Other(_) => continue,
            other => panic!("{other:?} before the answer to {context}"),
        }
    }
}

/// One fuzz connection: up to 300 text frames, each answer checked, then
/// maybe a frame that must end the connection.
fn fuzz_connection(addr: SocketAddr, rng: &mut Rng, tally: &Tally, budget: u64) {
    let c = raw_ws_at(addr);
    let mut w = c.try_clone().unwrap();
    let mut r = FrameReader::new(c);
    let n = 1 + rng.below(300.min(budget as usize).max(1));
    let mut texts = Vec::with_capacity(n);
    let mut bytes = Vec::new();
    for _ in 0..n {
        if rng.chance(2) {
            // A binary frame: refused, connection kept.
            bytes.extend(client_frame(0x2, b"\x00\x01binary"));
            texts.push(None);
        } else {
            let text = loop {
                // The client's own JSON parser must be able to read the answers.
                let (text, _) = any_text(rng);
                if strict_echo(&text) {
                    break text;
                }
            };
            bytes.extend(client_frame(0x1, text.as_bytes()));
            texts.push(Some(text));
        }
    }
    w.write_all(&bytes).expect("send a batch");
    for text in &texts {
        let v = next_answer(&mut r, &format!("{text:?}"));
        let Some(text) = text else {
            assert_eq!(
                (v["type"].as_str(), v["error"]["code"].as_str()),
                (Some("error"), Some("BAD_REQUEST")),
                "answer to a binary frame: {v}"
            );
            continue;
        };
        let (kind, code, rid, topic, message) = expected_answer(text);
        assert_eq!(v["type"], kind, "answer {v} to {text:?}");
        assert_eq!(v["request_id"], rid, "answer {v} to {text:?}");
        if let Some(code) = code {
            assert_eq!(v["error"]["code"], code, "answer {v} to {text:?}");
            assert_eq!(v["topic"], topic, "answer {v} to {text:?}");
        }
        if let Some(message) = message {
            assert_eq!(v["error"]["message"], message, "answer {v} to {text:?}");
        }
        if kind == "ack"
            && pubsubd::protocol::parse(text)
                .request
                .is_ok_and(|r| matches!(r, Request::Publish { .. }))
        {
            tally.published.fetch_add(1, Ordering::Relaxed);
        }
    }
    tally.answers.fetch_add(n as u64, Ordering::Relaxed);
    let mut sent = n as u64;
    // A third of the connections end with a frame that closes them.
    match rng.below(9) {
        0 => {
            let (text, _) = client_message(rng);
            let mut bad = text.into_bytes();
            let at = rng.below(bad.len());
            bad.insert(at, *rng.pick(&[0xff, 0xc3, 0x80, 0xed]));
            if bad[at] == 0xc3 {
                bad.insert(at + 1, b'(');
            }
            w.write_all(&client_frame(0x1, &bad)).unwrap();
            assert_eq!(closing(&mut r), Some(1007), "invalid UTF-8");
        }
        1 => {
            let mut f = client_frame(0x1, br#"{"type":"ping"}"#);
            f[1] &= 0x7f; // unmasked
            f.drain(2..6);
            w.write_all(&f).unwrap();
            assert_eq!(closing(&mut r), Some(1002), "an unmasked frame");
        }
        2 => {
            let op = *rng.pick(&[0x3, 0x7, 0xb, 0xf]);
            w.write_all(&client_frame(op, b"reserved")).unwrap();
            assert_eq!(closing(&mut r), Some(1002), "a reserved opcode");
        }
        3 => {
            let mut f = vec![0x81, 0xff];
            f.extend_from_slice(&(1u64 << 40).to_be_bytes());
            f.extend_from_slice(&[0, 0, 0, 0]);
            w.write_all(&f).unwrap();
            assert_eq!(closing(&mut r), Some(1009), "a frame announcing 1 TiB");
        }
        4 => {
            // A mangled frame: any answer or close, then EOF once we stop sending.
            let (text, _) = client_message(rng);
            let f = mutate(
                rng,
                &client_frame(0x1, text.as_bytes()),
                b"\x88\x80\0\0\0\0",
            );
            w.write_all(&f).unwrap();
            w.shutdown(Shutdown::Write).unwrap();
            tally.unsure.fetch_add(1, Ordering::Relaxed);
            loop {
                match r.next() {
                    ServerFrame::Gone | ServerFrame::Close(_) => break,
                    _ => {}
                }
            }
        }
        _ => {
            // A clean end: a last round trip, then a close handshake.
            w.write_all(&client_frame(0x1, br#"{"type":"ping","request_id":"end"}"#))
                .unwrap();
            let v = next_answer(&mut r, "the last ping");
            assert_eq!(
                (v["type"].as_str(), v["request_id"].as_str()),
                (Some("pong"), Some("end"))
            );
            w.write_all(&client_frame(0x8, &1000u16.to_be_bytes()))
                .unwrap();
            assert_eq!(closing(&mut r), Some(1000), "a close handshake");
            sent += 1;
        }
    }
    tally.frames.fetch_add(sent + 1, Ordering::Relaxed);
    tally.connections.fetch_add(1, Ordering::Relaxed);
}

/// The close code the server ends with (events and answers before it skipped).
fn closing(r: &mut FrameReader) -> Option<u16> {
    loop {
        match r.next() {
            ServerFrame::Close(code) => return code,
            ServerFrame::Gone => panic!("the server hung up without a close frame"),
            _ => {}
        }
    }
}

#[test]
fn a_live_server_answers_every_fuzzed_frame_and_loses_nothing_beside_them() {
    let Settings { seed, cases } = settings();
    let _replay = Replay(seed);
    let server = Binary::start(&[]);
    let addr = server.addr;
    for t in TOPICS.iter().chain(["watch"].iter()) {
        create_topic(addr, t);
    }
    // The well-behaved subscriber: every fuzzed topic and a paced feed.
    let mut watcher = Ws::connect(addr);
    for t in TOPICS.iter().chain(["watch"].iter()) {
        watcher.subscribe(t, "watcher", 0);
    }
    let rss_start = server.rss_kib();
    let done = Arc::new(AtomicBool::new(false));
    let feed = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut p = Ws::connect(addr);
            let mut n = 0u64;
            while !done.load(Ordering::Relaxed) {
                assert_eq!(p.publish("watch", json!({"n": n}))["type"], "ack");
                n += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
            assert_eq!(p.publish("watch", json!({"last": n}))["type"], "ack");
            n
        })
    };
    let events = std::thread::spawn(move || {
        // Every event is strict JSON (no lone surrogate), its payload at
        // most 64 deep; the feed arrives whole and in order.
        let (mut fuzzed, mut next) = (0u64, 0u64);
        loop {
            let v = watcher.recv_skip_heartbeat();
            assert_eq!(v["type"], "event", "{v}");
            let payload = &v["message"]["payload"];
            assert!(depth_of(payload) <= 64, "{v}");
            if v["topic"] == "watch" {
                if let Some(last) = payload["last"].as_u64() {
                    assert_eq!(last, next, "the feed lost events");
                    return (fuzzed, next, watcher);
                }
                assert_eq!(payload["n"], next, "the feed out of order or lossy");
                next += 1;
            } else {
                fuzzed += 1;
            }
        }
    });

    let tally = Arc::new(Tally::default());
    let started = Instant::now();
    let workers: Vec<_> = (0..3u64)
        .map(|i| {
            let tally = tally.clone();
            let mut rng = Rng::new(seed.wrapping_add(i + 1));
            std::thread::spawn(move || {
                while tally.frames.load(Ordering::Relaxed) < cases {
                    let left = cases.saturating_sub(tally.frames.load(Ordering::Relaxed));
                    fuzz_connection(addr, &mut rng, &tally, left);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("a fuzz worker");
    }
    let took = started.elapsed();
    let frames = tally.frames.load(Ordering::Relaxed);
    let connections = tally.connections.load(Ordering::Relaxed);
    println!(
        "live: {frames} frames on {connections} connections in {took:?}, {} answers checked",
        tally.answers.load(Ordering::Relaxed)
    );
    assert!(frames >= cases);

    // Still serving: REST, and a round trip on fresh connections.
    assert_eq!(http(addr, "GET", "/health", None).status, 200);
    let mut sub = Ws::connect(addr);
    sub.subscribe("f0", "after", 0);
    let mut publisher = Ws::connect(addr);
    assert_eq!(publisher.publish("f0", json!("fine"))["type"], "ack");
    assert_eq!(sub.recv()["message"]["payload"], "fine");
    tally.published.fetch_add(1, Ordering::Relaxed);
    drop((sub, publisher));

    done.store(true, Ordering::Relaxed);
    let fed = feed.join().expect("the feed");
    let (fuzzed, seen, _watcher) = events.join().expect("the watcher");
    assert_eq!(seen, fed);
    let (published, unsure) = (
        tally.published.load(Ordering::Relaxed),
        tally.unsure.load(Ordering::Relaxed),
    );
    assert!(
        (published..=published + unsure).contains(&fuzzed),
        "the watcher got {fuzzed} fuzzed events; {published} publishes were acked (+{unsure} unsure)"
    );

    // Every fuzz connection is gone, and the memory they used is given back.
    wait_until("the fuzz connections to be gone", || {
        health(addr)["connections"] == 2 // the watcher and this request
    });
    let rss_end = server.rss_kib();
    println!("server RSS: {rss_start} KiB at the start, {rss_end} KiB at the end");
    assert!(
        rss_end < rss_start + (8 << 10),
        "the server's RSS went from {rss_start} KiB to {rss_end} KiB"
    );
}

#[test]
fn a_live_server_answers_fuzzed_http_requests_on_their_own_connections() {
    let Settings { seed, cases } = settings();
    let _replay = Replay(seed);
    let s = start_with(|c| c.request_timeout = Duration::from_secs(2));
    let mut rng = Rng::new(seed ^ 0x6c69_7665);
    for i in 0..(cases / 100).max(10) {
        let (bytes, expect) = http_request(&mut rng);
        let (input, expect) = if i % 3 == 0 {
            let (other, _) = http_request(&mut rng);
            (mutate(&mut rng, &bytes, &other), None)
        } else {
            (bytes, Some(expect))
        };
        let mut c = TcpStream::connect(s.addr).unwrap();
        c.set_read_timeout(Some(TIMEOUT)).unwrap();
        // The server may answer and close before reading it all.
        let _ = c.write_all(&input);
        let _ = c.shutdown(Shutdown::Write);
        let mut answer = Vec::new();
        match c.read_to_end(&mut answer) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!(
                "no answer and no close within {TIMEOUT:?} ({e}): {:?}",
                String::from_utf8_lossy(&input[..input.len().min(300)])
            ),
        }
        let head = String::from_utf8_lossy(&answer[..answer.len().min(12)]).into_owned();
        match expect {
            Some(HttpExpect::Reject(status)) => {
                assert_eq!(
                    head,
                    format!("HTTP/1.1 {status}"),
                    "{:?}",
                    String::from_utf8_lossy(&input[..input.len().min(300)])
                );
            }
            Some(HttpExpect::Request { .. }) => {
                // An upgrade whose client already stopped sending may be
                // dropped without its 101: nothing could use that WebSocket.
                let upgrade = matches!(
                    pubsubd::http::parse(&input, MAX_BODY),
                    Parsed::Request(r, _) if r.upgrade_websocket && r.path == "/ws"
                );
                assert!(
                    head.starts_with("HTTP/1.1 ") || (upgrade && answer.is_empty()),
                    "no response: {:?}",
                    String::from_utf8_lossy(&input[..input.len().min(300)])
                );
            }
            Some(HttpExpect::Partial) | None => {
                assert!(
                    answer.is_empty() || head.starts_with("HTTP/1.1 "),
                    "{head:?}"
                );
            }
        }
    }
    assert_eq!(http(s.addr, "GET", "/health", None).status, 200);
}

#[test]
fn a_request_id_beyond_f64_is_not_echoed_verbatim() {
    // The parser's own rule: request_id is echoed verbatim, so it takes
    // "never one that strict JSON parsers would refuse". 1e999 is JSON
    // grammar, but serde_json (like other strict parsers) refuses it.
    let parsed = pubsubd::protocol::parse(r#"{"type":"ping","request_id":1e999}"#);
    if let Some(rid) = parsed.request_id {
        serde_json::from_str::<Value>(rid)
            .unwrap_or_else(|e| panic!("echoed request_id {rid} is refused by serde_json: {e}"));
    }
}
