//! Client messages (parsed and validated) and server messages (encoded as
//! WebSocket text frames), per `protocol.md` §1. No I/O.
//!
//! Parsing borrows from the frame's text: fields are first captured as raw JSON
//! and then checked one by one, so every error names the field at fault, and a
//! publish's payload is carried through verbatim without building a value tree.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

mod encode;
mod fast;

pub use encode::*;

/// Error codes of §1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    BadRequest,
    TopicNotFound,
    SlowConsumer,
    Unauthorized,
    Forbidden,
    Unavailable,
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "BAD_REQUEST",
            ErrorCode::TopicNotFound => "TOPIC_NOT_FOUND",
            ErrorCode::SlowConsumer => "SLOW_CONSUMER",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::Unavailable => "UNAVAILABLE",
            ErrorCode::Internal => "INTERNAL",
        }
    }
}

/// A valid client request.
#[derive(Debug)]
pub enum Request<'a> {
    Subscribe {
        topic: Cow<'a, str>,
        client_id: Cow<'a, str>,
        replay: Replay<'a>,
    },
    Unsubscribe {
        topic: Cow<'a, str>,
        client_id: Cow<'a, str>,
    },
    Publish {
        topic: Cow<'a, str>,
        /// The `message.id`, validated as a UUID (so it needs no JSON escaping).
        id: Cow<'a, str>,
        /// The `message.payload`, raw JSON, passed through verbatim.
        payload: &'a RawValue,
    },
    Ping,
}

/// What a subscribe asks to be sent before live events (§2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replay<'a> {
    /// The `last_n` most recent kept events (0: none).
    Last(u64),
    /// Every kept event after `seq` (`since`), in `epoch` when given.
    Since {
        seq: u64,
        epoch: Option<Cow<'a, str>>,
    },
}

/// One parsed client message: what to echo in the answer, and the request or
/// the reason it was refused.
#[derive(Debug)]
pub struct Incoming<'a> {
    /// `request_id` as raw JSON (a string or a number), echoed verbatim.
    pub request_id: Option<&'a str>,
    /// The topic named by the request, when it is a valid name.
    pub topic: Option<&'a str>,
    pub request: Result<Request<'a>, String>,
}

/// A message's fields with their JSON types checked, before the protocol's
/// own rules. Well-formed messages deserialize straight into this, borrowing
/// every string that has no escapes.
#[derive(Deserialize, Default)]
struct Parts<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Text<'a>>,
    #[serde(borrow)]
    topic: Option<Text<'a>>,
    #[serde(borrow)]
    client_id: Option<Text<'a>>,
    last_n: Option<u64>,
    since: Option<u64>,
    #[serde(borrow)]
    epoch: Option<Text<'a>>,
    #[serde(borrow)]
    request_id: Option<&'a RawValue>,
    #[serde(borrow)]
    message: Option<MessageParts<'a>>,
}

#[derive(Deserialize)]
struct MessageParts<'a> {
    #[serde(borrow)]
    id: Option<Text<'a>>,
    #[serde(borrow, default, deserialize_with = "present")]
    payload: Option<&'a RawValue>,
}

/// A field that is there, whatever its value: `null` included (serde reads a
/// null into `None`, which would make a null payload look missing).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// A JSON string, borrowed from the message when it has no escapes (serde
/// does not borrow a `Cow` inside an `Option` by itself).
#[derive(Debug)]
struct Text<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visitor<'a> {
            type Value = Text<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        d.deserialize_str(Visitor(std::marker::PhantomData))
    }
}

/// The same fields as raw JSON: the slow path that finds which field has the
/// wrong type when the typed parse fails.
#[derive(Deserialize)]
struct RawParts<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<&'a RawValue>,
    #[serde(borrow)]
    topic: Option<&'a RawValue>,
    #[serde(borrow)]
    client_id: Option<&'a RawValue>,
    #[serde(borrow)]
    last_n: Option<&'a RawValue>,
    #[serde(borrow)]
    since: Option<&'a RawValue>,
    #[serde(borrow)]
    epoch: Option<&'a RawValue>,
    #[serde(borrow)]
    request_id: Option<&'a RawValue>,
    #[serde(borrow)]
    message: Option<&'a RawValue>,
}

/// Largest `client_id` accepted, in bytes.
pub const MAX_CLIENT_ID: usize = 256;

/// Parses one text message from a client.
pub fn parse(text: &str) -> Incoming<'_> {
    fast::publish(text).unwrap_or_else(|| parse_typed(text))
}

/// [`parse`] without its fast path: the typed parse alone, which decides
/// every message (the fast path must agree with it; the fuzz test checks).
#[doc(hidden)]
pub fn parse_typed(text: &str) -> Incoming<'_> {
    match serde_json::from_str::<Parts<'_>>(text) {
        Ok(parts) => checked(parts),
        Err(err) => parse_slowly(text, &err),
    }
}

/// Re-reads a message the typed parse refused, to say exactly what is wrong.
fn parse_slowly<'a>(text: &'a str, typed_err: &serde_json::Error) -> Incoming<'a> {
    let raw: RawParts<'a> = match serde_json::from_str(text) {
        Ok(raw) => raw,
        Err(err) => {
            return Incoming {
                request_id: None,
                topic: None,
                request: Err(describe_json_error(text, &err)),
            };
        }
    };
    let echo = Incoming {
        request_id: raw.request_id.map(RawValue::get).filter(|r| echoable(r)),
        topic: raw
            .topic
            .and_then(|t| serde_json::from_str::<&str>(t.get()).ok())
            .filter(|t| valid_topic(t)),
        request: Err(String::new()),
    };
    let parts = (|| -> Result<Parts<'a>, String> {
        Ok(Parts {
            kind: typed(raw.kind, "field 'type' must be a string")?,
            topic: typed(raw.topic, "field 'topic' must be a string")?,
            client_id: typed(raw.client_id, "field 'client_id' must be a string")?,
            last_n: count(raw.last_n, "last_n")?,
            since: count(raw.since, "since")?,
            epoch: typed(raw.epoch, "field 'epoch' must be a string")?,
            request_id: raw.request_id,
            message: match raw.message {
                None => None,
                Some(m) if !m.get().starts_with('{') => {
                    return Err("message must be an object with 'id' and 'payload'".into());
                }
                Some(m) => {
                    let fields: RawMessage<'a> = serde_json::from_str(m.get())
                        .map_err(|e| format!("invalid 'message': {e}"))?;
                    Some(MessageParts {
                        id: typed(fields.id, "message.id must be a string holding a UUID")?,
                        payload: fields.payload,
                    })
                }
            },
        })
    })();
    match parts {
        Ok(parts) => match checked(parts) {
            // Every field typed fine on its own: report what the typed parse said.
            Incoming { request: Ok(_), .. } => Incoming {
                request: Err(format!("invalid message: {typed_err}")),
                ..echo
            },
            refused => refused,
        },
        Err(message) => Incoming {
            request: Err(message),
            ..echo
        },
    }
}

#[derive(Deserialize)]
struct RawMessage<'a> {
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    payload: Option<&'a RawValue>,
}

/// A field that must be a non-negative integer.
fn count(raw: Option<&RawValue>, name: &str) -> Result<Option<u64>, String> {
    raw.map(|n| {
        serde_json::from_str::<u64>(n.get()).map_err(|_| {
            format!(
                "{name} must be a non-negative integer, got {}",
                clip(n.get())
            )
        })
    })
    .transpose()
}

fn typed<'a>(raw: Option<&'a RawValue>, wrong_type: &str) -> Result<Option<Text<'a>>, String> {
    raw.map(|r| as_str(r).map(Text).map_err(|_| wrong_type.to_string()))
        .transpose()
}

/// request_id is echoed verbatim, so only a string or a number is taken, and
/// never one that strict JSON parsers would refuse.
fn echoable(raw: &str) -> bool {
    if raw.starts_with('"') {
        return !has_lone_surrogate(raw);
    }
    // A number beyond f64 (1e999) is JSON, but strict parsers refuse it.
    (raw.starts_with('-') || raw.as_bytes()[0].is_ascii_digit())
        && raw.parse::<f64>().is_ok_and(f64::is_finite)
}

/// Whether raw JSON text holds a `\uD800`–`\uDFFF` escape that is not part of
/// a valid surrogate pair. JSON's grammar allows them, but many parsers
/// (serde_json among them) refuse such text, so it is never passed on.
fn has_lone_surrogate(json: &str) -> bool {
    // Most payloads hold no backslash at all; memchr skips them in SIMD steps.
    let bytes = json.as_bytes();
    let maybe = memchr::memchr_iter(b'\\', bytes).any(|i| {
        matches!(
            bytes.get(i + 1..i + 4),
            Some([b'u', b'd' | b'D', b'8'..=b'9' | b'a'..=b'f' | b'A'..=b'F'])
        )
    });
    // Decoding every string checks the pairs; only needed when one may be there.
    maybe && serde_json::from_str::<serde_json::Value>(json).is_err()
}

/// Applies the protocol's rules to typed fields.
fn checked(p: Parts<'_>) -> Incoming<'_> {
    let raw_id = p.request_id.map(RawValue::get);
    let request_id = raw_id.filter(|r| echoable(r));
    let topic = match &p.topic {
        Some(Text(Cow::Borrowed(t))) if valid_topic(t) => Some(*t),
        _ => None,
    };
    let request = if raw_id.is_some() && request_id.is_none() {
        Err("request_id must be a string (of valid Unicode) or a number".to_string())
    } else {
        request(p)
    };
    Incoming {
        request_id,
        topic,
        request,
    }
}

fn request(p: Parts<'_>) -> Result<Request<'_>, String> {
    let kind = p
        .kind
        .ok_or("missing field 'type' (subscribe, unsubscribe, publish or ping)")?
        .0;
    match &*kind {
        "subscribe" => {
            let replay = match (p.last_n, p.since) {
                (Some(_), Some(_)) => {
                    return Err(
                        "give last_n or since, not both: since resumes after a seq, \
                                last_n replays the most recent events"
                            .into(),
                    );
                }
                (_, Some(seq)) => Replay::Since {
                    seq,
                    epoch: p.epoch.map(|e| e.0),
                },
                (last_n, None) => Replay::Last(last_n.unwrap_or(0)),
            };
            Ok(Request::Subscribe {
                topic: topic(p.topic)?,
                client_id: client_id(p.client_id)?,
                replay,
            })
        }
        "unsubscribe" => Ok(Request::Unsubscribe {
            topic: topic(p.topic)?,
            client_id: client_id(p.client_id)?,
        }),
        "publish" => {
            let topic = topic(p.topic)?;
            let m = p
                .message
                .ok_or("missing field 'message' (an object with 'id' and 'payload')")?;
            let id = m.id.ok_or("missing field 'message.id' (a UUID)")?.0;
            if uuid::Uuid::try_parse(&id).is_err() {
                return Err(format!(
                    "message.id must be a valid UUID, got {:?}",
                    clip(&id)
                ));
            }
            let payload = m
                .payload
                .ok_or("missing field 'message.payload' (any JSON value)")?;
            if has_lone_surrogate(payload.get()) {
                return Err("message.payload holds a \\u escape of a lone surrogate, which is not valid Unicode".into());
            }
            if nests_deeper_than(payload.get(), MAX_PAYLOAD_DEPTH) {
                return Err(format!(
                    "message.payload nests arrays and objects deeper than {MAX_PAYLOAD_DEPTH} levels"
                ));
            }
            Ok(Request::Publish { topic, id, payload })
        }
        "ping" => Ok(Request::Ping),
        other => Err(format!(
            "unknown type '{}': expected subscribe, unsubscribe, publish or ping",
            clip(other)
        )),
    }
}

fn as_str(raw: &RawValue) -> Result<Cow<'_, str>, serde_json::Error> {
    match serde_json::from_str::<&str>(raw.get()) {
        Ok(s) => Ok(Cow::Borrowed(s)),
        // Escaped strings cannot be borrowed.
        Err(_) => serde_json::from_str::<String>(raw.get()).map(Cow::Owned),
    }
}

fn topic(topic: Option<Text<'_>>) -> Result<Cow<'_, str>, String> {
    let topic = topic.ok_or("missing field 'topic'")?.0;
    if valid_topic(&topic) {
        Ok(topic)
    } else {
        Err(format!(
            "invalid topic name {}: use 1 to 255 characters from A-Z a-z 0-9 . _ - :",
            clip(&format!("{topic:?}"))
        ))
    }
}

fn client_id(id: Option<Text<'_>>) -> Result<Cow<'_, str>, String> {
    let id = id.ok_or("missing field 'client_id'")?.0;
    if id.is_empty() || id.len() > MAX_CLIENT_ID {
        return Err(format!("client_id must be 1 to {MAX_CLIENT_ID} bytes long"));
    }
    Ok(id)
}

/// Deepest nesting of arrays and objects in a payload: subscribers' JSON
/// parsers commonly stop at 128 levels for a whole message.
pub const MAX_PAYLOAD_DEPTH: usize = 64;

/// Whether valid JSON text nests arrays and objects deeper than `max`.
fn nests_deeper_than(json: &str, max: usize) -> bool {
    // Cheap bounds first: nesting deeper than `max` needs more than `max`
    // openers and as many closers.
    if json.len() <= 2 * max {
        return false;
    }
    if json.bytes().filter(|&b| b == b'[' || b == b'{').count() <= max {
        return false;
    }
    nesting_depth(json) > max
}

/// The deepest nesting of `[` and `{` in valid JSON text.
fn nesting_depth(json: &str) -> usize {
    let (mut depth, mut max, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &b in json.as_bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// Topic names: 1–255 characters from `A-Z a-z 0-9 . _ - :`.
pub fn valid_topic(name: &str) -> bool {
    (1..=255).contains(&name.len()) && name.bytes().all(|b| TOPIC_BYTES[usize::from(b)])
}

/// Which bytes a topic name may hold: one look-up a byte (measured: ~50
/// fewer instructions per publish at 1 → 1 than testing the ranges).
const TOPIC_BYTES: [bool; 256] = {
    let mut allowed = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        allowed[b] = c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-' | b':');
        b += 1;
    }
    allowed
};

fn describe_json_error(text: &str, err: &serde_json::Error) -> String {
    if serde_json::from_str::<&RawValue>(text).is_ok() {
        if text.trim_start().starts_with('{') {
            // Valid JSON, but a field appeared twice.
            format!("invalid message: {err}")
        } else {
            "message must be a JSON object".to_string()
        }
    } else {
        format!("invalid JSON: {err}")
    }
}

/// A value quoted back in an error message, cut to a readable length.
fn clip(s: &str) -> String {
    const MAX: usize = 64;
    if s.len() <= MAX {
        return s.to_string();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn refused(text: &str) -> String {
        match parse(text).request {
            Err(msg) => msg,
            Ok(r) => panic!("{text} was accepted as {r:?}"),
        }
    }

    fn json_of(frame: &Bytes) -> serde_json::Value {
        let start = if frame[1] == 126 { 4 } else { 2 };
        serde_json::from_slice(&frame[start..]).unwrap()
    }

    const UUID: &str = "550e8400-e29b-41d4-a716-446655440000";

    #[test]
    fn parses_each_request() {
        let m = parse(
            r#"{"type":"subscribe","topic":"orders","client_id":"s1","last_n":5,"request_id":"r1"}"#,
        );
        assert_eq!(m.request_id, Some("\"r1\""));
        assert_eq!(m.topic, Some("orders"));
        assert!(matches!(
            m.request.unwrap(),
            Request::Subscribe { topic, client_id, replay: Replay::Last(5) } if topic == "orders" && client_id == "s1"
        ));
        let m = parse(r#"{"type":"unsubscribe","topic":"a:b","client_id":"s\u0031"}"#);
        assert_eq!(m.request_id, None);
        assert!(matches!(
            m.request.unwrap(),
            Request::Unsubscribe { topic, client_id } if topic == "a:b" && client_id == "s1"
        ));
        let text = format!(
            r#"{{"type":"publish","topic":"t","message":{{"id":"{UUID}","payload":{{"a":[1,2.5e300,"x"]}}}},"request_id":7}}"#
        );
        let m = parse(&text);
        assert_eq!(m.request_id, Some("7"));
        match m.request.unwrap() {
            Request::Publish { topic, id, payload } => {
                assert_eq!(topic, "t");
                assert_eq!(id, UUID);
                assert_eq!(payload.get(), r#"{"a":[1,2.5e300,"x"]}"#);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(r#"{"type":"ping"}"#).request,
            Ok(Request::Ping)
        ));
    }

    #[test]
    fn every_bad_request_says_what_is_wrong() {
        let pubmsg =
            |message: &str| format!(r#"{{"type":"publish","topic":"t","message":{message}}}"#);
        let cases: Vec<(String, &str)> = vec![
            ("not json".into(), "invalid JSON"),
            ("".into(), "invalid JSON"),
            ("[1,2]".into(), "JSON object"),
            ("42".into(), "JSON object"),
            ("\"s\"".into(), "JSON object"),
            (r#"{"topic":"t"}"#.into(), "missing field 'type'"),
            (r#"{"type":5}"#.into(), "'type' must be a string"),
            (r#"{"type":"dance"}"#.into(), "unknown type 'dance'"),
            (
                r#"{"type":"subscribe","client_id":"c"}"#.into(),
                "missing field 'topic'",
            ),
            (
                r#"{"type":"subscribe","topic":3,"client_id":"c"}"#.into(),
                "'topic' must be a string",
            ),
            (
                r#"{"type":"subscribe","topic":"","client_id":"c"}"#.into(),
                "invalid topic name",
            ),
            (
                r#"{"type":"subscribe","topic":"a b","client_id":"c"}"#.into(),
                "invalid topic name",
            ),
            (
                r#"{"type":"subscribe","topic":"a/b","client_id":"c"}"#.into(),
                "invalid topic name",
            ),
            (
                r#"{"type":"subscribe","topic":"é","client_id":"c"}"#.into(),
                "invalid topic name",
            ),
            (
                format!(
                    r#"{{"type":"subscribe","topic":"{}","client_id":"c"}}"#,
                    "a".repeat(256)
                ),
                "invalid topic name",
            ),
            (
                r#"{"type":"subscribe","topic":"t"}"#.into(),
                "missing field 'client_id'",
            ),
            (
                r#"{"type":"subscribe","topic":"t","client_id":1}"#.into(),
                "'client_id' must be a string",
            ),
            (
                r#"{"type":"subscribe","topic":"t","client_id":""}"#.into(),
                "client_id must be 1 to",
            ),
            (
                r#"{"type":"subscribe","topic":"t","client_id":"c","last_n":-1}"#.into(),
                "last_n must be a non-negative integer",
            ),
            (
                r#"{"type":"subscribe","topic":"t","client_id":"c","last_n":1.5}"#.into(),
                "last_n must be a non-negative integer",
            ),
            (
                r#"{"type":"subscribe","topic":"t","client_id":"c","last_n":"3"}"#.into(),
                "last_n must be a non-negative integer",
            ),
            (
                r#"{"type":"unsubscribe","topic":"t"}"#.into(),
                "missing field 'client_id'",
            ),
            (
                r#"{"type":"publish","topic":"t"}"#.into(),
                "missing field 'message'",
            ),
            (pubmsg("5"), "message must be an object"),
            (pubmsg(r#"{"payload":1}"#), "missing field 'message.id'"),
            (
                pubmsg(r#"{"id":"nope","payload":1}"#),
                "message.id must be a valid UUID",
            ),
            (
                pubmsg(r#"{"id":5,"payload":1}"#),
                "message.id must be a string",
            ),
            (
                pubmsg(&format!(r#"{{"id":"{UUID}"}}"#)),
                "missing field 'message.payload'",
            ),
            (r#"{"type":"ping","type":"ping"}"#.into(), "duplicate field"),
            (
                r#"{"type":"ping","request_id":{"a":1}}"#.into(),
                "request_id must be a string (of valid Unicode) or a number",
            ),
            (
                format!("{}1{}", "[".repeat(200), "]".repeat(200)),
                "JSON object",
            ),
            (
                pubmsg(&format!(
                    r#"{{"id":"{UUID}","payload":{}1{}}}"#,
                    "[".repeat(200),
                    "]".repeat(200)
                )),
                "deeper than 64",
            ),
            (
                pubmsg(&format!(
                    r#"{{"id":"{UUID}","payload":{}1{}}}"#,
                    "[".repeat(65),
                    "]".repeat(65)
                )),
                "deeper than 64",
            ),
        ];
        for (text, needle) in cases {
            let msg = refused(&text);
            assert!(msg.contains(needle), "{text:.80}: {msg:?} lacks {needle:?}");
        }
    }

    #[test]
    fn topic_names_take_exactly_their_characters() {
        for b in 0..=255u8 {
            let allowed = b.is_ascii_alphanumeric() || b".-_:".contains(&b);
            let name = [b'a', b, b'z'];
            let valid = std::str::from_utf8(&name).is_ok_and(valid_topic);
            assert_eq!(valid, allowed, "{b:#x}");
        }
        assert!(valid_topic(&"a".repeat(255)));
        assert!(!valid_topic(&"a".repeat(256)));
        assert!(!valid_topic(""));
        assert!(!valid_topic("é"));
    }

    #[test]
    fn nesting_depth_ignores_brackets_in_strings() {
        assert_eq!(nesting_depth("1"), 0);
        assert_eq!(nesting_depth(r#"{"a":[1,{"b":[]}]}"#), 4);
        assert_eq!(nesting_depth(r#"["[[[\"[[", {}]"#), 2);
        let ok = format!("{}1{}", "[".repeat(64), "]".repeat(64));
        assert_eq!(nesting_depth(&ok), 64);
        assert!(!nests_deeper_than(&ok, 64));
        assert!(nests_deeper_than(&format!("[{ok}]"), 64));
        // Brackets inside strings count for the cheap bound only.
        assert!(!nests_deeper_than(
            &format!("[\"{}\"]", "[".repeat(100)),
            64
        ));
    }

    #[test]
    fn lone_surrogates_are_refused_where_they_would_be_passed_on() {
        assert!(has_lone_surrogate(r#""\ud800""#));
        assert!(has_lone_surrogate(r#"{"a":"x\uDC00y"}"#));
        assert!(!has_lone_surrogate(r#""\ud83d\ude00""#));
        assert!(!has_lone_surrogate(r#""\u00e9 plain""#));
        let m = parse(r#"{"type":"ping","request_id":"\ud800"}"#);
        assert!(m.request.unwrap_err().contains("request_id"));
        assert_eq!(m.request_id, None);
        let text = format!(
            r#"{{"type":"publish","topic":"t","message":{{"id":"{UUID}","payload":"\udfff"}}}}"#
        );
        assert!(parse(&text).request.unwrap_err().contains("surrogate"));
        let ok = format!(
            r#"{{"type":"publish","topic":"t","message":{{"id":"{UUID}","payload":"\ud83d\ude00"}}}}"#
        );
        assert!(parse(&ok).request.is_ok());
    }

    #[test]
    fn errors_echo_what_they_can() {
        let m = parse(r#"{"type":"subscribe","topic":"orders","request_id":"r9"}"#);
        assert_eq!(m.request_id, Some("\"r9\""));
        assert_eq!(m.topic, Some("orders"));
        assert!(m.request.is_err());
        let m = parse(r#"{"type":"subscribe","topic":"bad name","request_id":null}"#);
        assert_eq!(m.request_id, None);
        assert_eq!(m.topic, None);
    }

    #[test]
    fn encodes_server_messages() {
        let ts = "2025-08-25T10:00:00.123Z";
        let payload = RawValue::from_string(r#"{"n":1}"#.into()).unwrap();
        let v = json_of(&event(
            "orders",
            18_446_744_073_709_551_615,
            UUID,
            &payload,
            ts,
        ));
        assert_eq!(
            v,
            serde_json::json!({"type":"event","topic":"orders","seq":u64::MAX,"message":{"id":UUID,"payload":{"n":1}},"ts":ts})
        );
        let v = json_of(&ack(Some("\"r1\""), Some("orders"), Acked::Plain, ts));
        assert_eq!(
            v,
            serde_json::json!({"type":"ack","request_id":"r1","topic":"orders","status":"ok","ts":ts})
        );
        let v = json_of(&ack(None, Some("o"), Acked::Published { seq: 0 }, ts));
        assert_eq!(
            v,
            serde_json::json!({"type":"ack","request_id":null,"topic":"o","status":"ok","seq":0,"ts":ts})
        );
        let subscribed = Acked::Subscribed {
            seq: 42,
            epoch: "k3f9a2c1",
            recovered: Some(false),
        };
        let v = json_of(&ack(Some("7"), Some("o"), subscribed, ts));
        assert_eq!(
            v,
            serde_json::json!({"type":"ack","request_id":7,"topic":"o","status":"ok","seq":42,"epoch":"k3f9a2c1","recovered":false,"ts":ts})
        );
        let subscribed = Acked::Subscribed {
            seq: 1,
            epoch: "e",
            recovered: None,
        };
        let v = json_of(&ack(None, Some("o"), subscribed, ts));
        assert!(v.get("recovered").is_none() && v["epoch"] == "e" && v["seq"] == 1);
        let v = json_of(&pong(None, ts));
        assert_eq!(
            v,
            serde_json::json!({"type":"pong","request_id":null,"ts":ts})
        );
        let v = json_of(&error(
            Some("3"),
            None,
            ErrorCode::BadRequest,
            "say \"why\"",
            ts,
        ));
        assert_eq!(
            v,
            serde_json::json!({"type":"error","request_id":3,"error":{"code":"BAD_REQUEST","message":"say \"why\""},"ts":ts})
        );
        let v = json_of(&info(Some("t"), "topic_deleted", ts));
        assert_eq!(
            v,
            serde_json::json!({"type":"info","topic":"t","msg":"topic_deleted","ts":ts})
        );
        let v = json_of(&messages_dropped(12, ts));
        assert_eq!(
            v,
            serde_json::json!({"type":"info","msg":"messages_dropped","dropped":12,"ts":ts})
        );
    }

    #[test]
    fn a_null_payload_is_a_value_and_a_missing_one_is_refused() {
        let id = "550e8400-e29b-41d4-a716-446655440000";
        let null =
            format!(r#"{{"type":"publish","topic":"t","message":{{"id":"{id}","payload":null}}}}"#);
        match parse(&null).request {
            Ok(Request::Publish { payload, .. }) => assert_eq!(payload.get(), "null"),
            other => panic!("{other:?}"),
        }
        // The slow path (a field of the wrong type elsewhere) keeps it too.
        let slow = format!(
            r#"{{"type":"publish","topic":"t","last_n":"x","message":{{"id":"{id}","payload":null}}}}"#
        );
        assert!(refused(&slow).contains("last_n"));
        let missing = format!(r#"{{"type":"publish","topic":"t","message":{{"id":"{id}"}}}}"#);
        assert!(refused(&missing).contains("missing field 'message.payload'"));
    }

    #[test]
    fn a_request_id_beyond_f64_is_not_echoed() {
        let p = parse(r#"{"type":"ping","request_id":1e999}"#);
        assert_eq!(p.request_id, None);
        assert!(p.request.is_err());
        assert_eq!(
            parse(r#"{"type":"ping","request_id":-12.5e3}"#).request_id,
            Some("-12.5e3")
        );
    }

    #[test]
    fn subscribe_takes_last_n_or_since_with_an_epoch() {
        fn replay(text: &str) -> Replay<'static> {
            match parse(text).request {
                Ok(Request::Subscribe {
                    replay: Replay::Last(n),
                    ..
                }) => Replay::Last(n),
                Ok(Request::Subscribe {
                    replay: Replay::Since { seq, epoch },
                    ..
                }) => Replay::Since {
                    seq,
                    epoch: epoch.map(|e| Cow::Owned(e.into_owned())),
                },
                other => panic!("{text}: {other:?}"),
            }
        }
        let base = r#"{"type":"subscribe","topic":"t","client_id":"c""#;
        assert_eq!(replay(&format!("{base}}}")), Replay::Last(0));
        assert_eq!(
            replay(&format!(r#"{base},"since":42,"epoch":"k3f9a2c1"}}"#)),
            Replay::Since {
                seq: 42,
                epoch: Some("k3f9a2c1".into())
            }
        );
        assert_eq!(
            replay(&format!(r#"{base},"since":0}}"#)),
            Replay::Since {
                seq: 0,
                epoch: None
            }
        );
        assert!(refused(&format!(r#"{base},"since":1,"last_n":2}}"#)).contains("not both"));
        assert!(
            refused(&format!(r#"{base},"since":-1}}"#))
                .contains("since must be a non-negative integer")
        );
        assert!(
            refused(&format!(r#"{base},"since":1,"epoch":5}}"#))
                .contains("'epoch' must be a string")
        );
    }
}
