//! Client messages (parsed and validated) and server messages (encoded as
//! WebSocket text frames), per `protocol.md` §1. No I/O.
//!
//! Parsing borrows from the frame's text: fields are first captured as raw JSON
//! and then checked one by one, so every error names the field at fault, and a
//! publish's payload is carried through verbatim without building a value tree.

use std::borrow::Cow;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::outbound::FrameBuilder;

/// Error codes of §1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    BadRequest,
    TopicNotFound,
    SlowConsumer,
    Unauthorized,
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "BAD_REQUEST",
            ErrorCode::TopicNotFound => "TOPIC_NOT_FOUND",
            ErrorCode::SlowConsumer => "SLOW_CONSUMER",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::Internal => "INTERNAL",
        }
    }
}

/// A valid client request.
#[derive(Debug)]
pub enum Request<'a> {
    Subscribe {
        topic: &'a str,
        client_id: Cow<'a, str>,
        last_n: u64,
    },
    Unsubscribe {
        topic: &'a str,
        client_id: Cow<'a, str>,
    },
    Publish {
        topic: &'a str,
        /// The `message.id` as it was sent (raw JSON string, validated as a UUID).
        id: &'a RawValue,
        /// The `message.payload`, raw JSON, passed through verbatim.
        payload: &'a RawValue,
    },
    Ping,
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

#[derive(Deserialize)]
struct Fields<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<&'a RawValue>,
    #[serde(borrow)]
    topic: Option<&'a RawValue>,
    #[serde(borrow)]
    client_id: Option<&'a RawValue>,
    #[serde(borrow)]
    last_n: Option<&'a RawValue>,
    #[serde(borrow)]
    request_id: Option<&'a RawValue>,
    #[serde(borrow)]
    message: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct MessageFields<'a> {
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    #[serde(borrow)]
    payload: Option<&'a RawValue>,
}

/// Largest `client_id` accepted, in bytes.
pub const MAX_CLIENT_ID: usize = 256;

/// Parses one text message from a client.
pub fn parse(text: &str) -> Incoming<'_> {
    let fields: Fields<'_> = match serde_json::from_str(text) {
        Ok(f) => f,
        Err(err) => {
            return Incoming {
                request_id: None,
                topic: None,
                request: Err(describe_json_error(text, &err)),
            };
        }
    };
    // request_id is echoed verbatim, so only a string or a number is taken.
    let raw_id = fields.request_id.map(RawValue::get);
    let request_id = raw_id
        .filter(|r| r.starts_with('"') || r.starts_with('-') || r.as_bytes()[0].is_ascii_digit());
    let topic = fields
        .topic
        .and_then(|t| as_str(t).ok())
        .and_then(|t| match t {
            Cow::Borrowed(t) if valid_topic(t) => Some(t),
            _ => None,
        });
    let request = if raw_id.is_some() && request_id.is_none() {
        Err("request_id must be a string or a number".to_string())
    } else {
        request(&fields)
    };
    Incoming {
        request_id,
        topic,
        request,
    }
}

fn request<'a>(f: &Fields<'a>) -> Result<Request<'a>, String> {
    let kind = match f.kind {
        None => {
            return Err("missing field 'type' (subscribe, unsubscribe, publish or ping)".into());
        }
        Some(k) => as_str(k).map_err(|_| "field 'type' must be a string".to_string())?,
    };
    match &*kind {
        "subscribe" => Ok(Request::Subscribe {
            topic: topic(f.topic)?,
            client_id: client_id(f.client_id)?,
            last_n: match f.last_n {
                None => 0,
                Some(n) => serde_json::from_str::<u64>(n.get()).map_err(|_| {
                    format!(
                        "last_n must be a non-negative integer, got {}",
                        clip(n.get())
                    )
                })?,
            },
        }),
        "unsubscribe" => Ok(Request::Unsubscribe {
            topic: topic(f.topic)?,
            client_id: client_id(f.client_id)?,
        }),
        "publish" => {
            let topic = topic(f.topic)?;
            if let Some(c) = f.client_id {
                as_str(c).map_err(|_| "client_id must be a string".to_string())?;
            }
            let message = f
                .message
                .ok_or("missing field 'message' (an object with 'id' and 'payload')")?;
            let m: MessageFields<'_> = serde_json::from_str(message.get()).map_err(|e| {
                if message.get().starts_with('{') {
                    format!("invalid 'message': {e}")
                } else {
                    "message must be an object with 'id' and 'payload'".to_string()
                }
            })?;
            let id = m.id.ok_or("missing field 'message.id' (a UUID)")?;
            let id_text = as_str(id).map_err(|_| "message.id must be a string holding a UUID")?;
            if uuid::Uuid::try_parse(&id_text).is_err() {
                return Err(format!(
                    "message.id must be a valid UUID, got {}",
                    clip(id.get())
                ));
            }
            let payload = m
                .payload
                .ok_or("missing field 'message.payload' (any JSON value)")?;
            if nesting_depth(payload.get()) > MAX_PAYLOAD_DEPTH {
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

fn topic(raw: Option<&RawValue>) -> Result<&str, String> {
    let raw = raw.ok_or("missing field 'topic'")?;
    match as_str(raw) {
        Ok(Cow::Borrowed(t)) if valid_topic(t) => Ok(t),
        Ok(t) => Err(format!(
            "invalid topic name {}: use 1 to 255 characters from A-Z a-z 0-9 . _ - :",
            clip(&format!("{t:?}"))
        )),
        Err(_) => Err("field 'topic' must be a string".into()),
    }
}

fn client_id(raw: Option<&RawValue>) -> Result<Cow<'_, str>, String> {
    let raw = raw.ok_or("missing field 'client_id'")?;
    let id = as_str(raw).map_err(|_| "field 'client_id' must be a string".to_string())?;
    if id.is_empty() || id.len() > MAX_CLIENT_ID {
        return Err(format!("client_id must be 1 to {MAX_CLIENT_ID} bytes long"));
    }
    Ok(id)
}

/// Deepest nesting of arrays and objects in a payload: subscribers' JSON
/// parsers commonly stop at 128 levels for a whole message.
pub const MAX_PAYLOAD_DEPTH: usize = 64;

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
    (1..=255).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'))
}

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

// ---- server → client ----

fn open(kind: &str, capacity: usize) -> FrameBuilder {
    let mut f = FrameBuilder::with_capacity(capacity);
    let out = f.payload();
    out.extend_from_slice(b"{\"type\":\"");
    out.extend_from_slice(kind.as_bytes());
    out.push(b'"');
    f
}

fn field_request_id(out: &mut Vec<u8>, request_id: Option<&str>) {
    out.extend_from_slice(b",\"request_id\":");
    out.extend_from_slice(request_id.unwrap_or("null").as_bytes());
}

fn field_topic(out: &mut Vec<u8>, topic: Option<&str>) {
    if let Some(t) = topic {
        // Valid topic names need no escaping.
        out.extend_from_slice(b",\"topic\":\"");
        out.extend_from_slice(t.as_bytes());
        out.push(b'"');
    }
}

fn close(mut f: FrameBuilder, ts: &str) -> Bytes {
    let out = f.payload();
    out.extend_from_slice(b",\"ts\":\"");
    out.extend_from_slice(ts.as_bytes());
    out.extend_from_slice(b"\"}");
    f.text()
}

/// `{"type":"event","topic":…,"message":{"id":…,"payload":…},"ts":…}`
pub fn event(topic: &str, id: &RawValue, payload: &RawValue, ts: &str) -> Bytes {
    let mut f = open(
        "event",
        80 + topic.len() + id.get().len() + payload.get().len(),
    );
    let out = f.payload();
    field_topic(out, Some(topic));
    out.extend_from_slice(b",\"message\":{\"id\":");
    out.extend_from_slice(id.get().as_bytes());
    out.extend_from_slice(b",\"payload\":");
    out.extend_from_slice(payload.get().as_bytes());
    out.push(b'}');
    close(f, ts)
}

/// `{"type":"ack","request_id":…,"topic":…,"status":"ok","ts":…}`
pub fn ack(request_id: Option<&str>, topic: Option<&str>, ts: &str) -> Bytes {
    let mut f = open("ack", 96);
    let out = f.payload();
    field_request_id(out, request_id);
    field_topic(out, topic);
    out.extend_from_slice(b",\"status\":\"ok\"");
    close(f, ts)
}

/// `{"type":"pong","request_id":…,"ts":…}`
pub fn pong(request_id: Option<&str>, ts: &str) -> Bytes {
    let mut f = open("pong", 64);
    field_request_id(f.payload(), request_id);
    close(f, ts)
}

/// `{"type":"error","request_id":…,"topic":…,"error":{"code":…,"message":…},"ts":…}`
pub fn error(
    request_id: Option<&str>,
    topic: Option<&str>,
    code: ErrorCode,
    message: &str,
    ts: &str,
) -> Bytes {
    let mut f = open("error", 128 + message.len());
    let out = f.payload();
    field_request_id(out, request_id);
    field_topic(out, topic);
    out.extend_from_slice(b",\"error\":{\"code\":\"");
    out.extend_from_slice(code.as_str().as_bytes());
    out.extend_from_slice(b"\",\"message\":");
    push_json_string(out, message);
    out.push(b'}');
    close(f, ts)
}

/// `{"type":"info","topic":…,"msg":…,"ts":…}`
pub fn info(topic: Option<&str>, msg: &str, ts: &str) -> Bytes {
    let mut f = open("info", 80);
    let out = f.payload();
    field_topic(out, topic);
    out.extend_from_slice(b",\"msg\":");
    push_json_string(out, msg);
    close(f, ts)
}

/// `{"type":"info","msg":"messages_dropped","dropped":N,"ts":…}`
pub fn messages_dropped(dropped: u64, ts: &str) -> Bytes {
    let mut f = open("info", 96);
    let out = f.payload();
    out.extend_from_slice(b",\"msg\":\"messages_dropped\",\"dropped\":");
    out.extend_from_slice(dropped.to_string().as_bytes());
    close(f, ts)
}

fn push_json_string(out: &mut Vec<u8>, s: &str) {
    // Writing a str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

#[cfg(test)]
mod tests {
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
            Request::Subscribe { topic: "orders", client_id, last_n: 5 } if client_id == "s1"
        ));
        let m = parse(r#"{"type":"unsubscribe","topic":"a:b","client_id":"s\u0031"}"#);
        assert_eq!(m.request_id, None);
        assert!(matches!(
            m.request.unwrap(),
            Request::Unsubscribe { topic: "a:b", client_id } if client_id == "s1"
        ));
        let text = format!(
            r#"{{"type":"publish","topic":"t","message":{{"id":"{UUID}","payload":{{"a":[1,2.5e300,"x"]}}}},"request_id":7}}"#
        );
        let m = parse(&text);
        assert_eq!(m.request_id, Some("7"));
        match m.request.unwrap() {
            Request::Publish { topic, id, payload } => {
                assert_eq!(topic, "t");
                assert_eq!(id.get(), format!("\"{UUID}\""));
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
                "request_id must be a string or a number",
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
    fn nesting_depth_ignores_brackets_in_strings() {
        assert_eq!(nesting_depth("1"), 0);
        assert_eq!(nesting_depth(r#"{"a":[1,{"b":[]}]}"#), 4);
        assert_eq!(nesting_depth(r#"["[[[\"[[", {}]"#), 2);
        let ok = format!("{}1{}", "[".repeat(64), "]".repeat(64));
        assert_eq!(nesting_depth(&ok), 64);
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
        let id = RawValue::from_string(format!("\"{UUID}\"")).unwrap();
        let payload = RawValue::from_string(r#"{"n":1}"#.into()).unwrap();
        let v = json_of(&event("orders", &id, &payload, ts));
        assert_eq!(
            v,
            serde_json::json!({"type":"event","topic":"orders","message":{"id":UUID,"payload":{"n":1}},"ts":ts})
        );
        let v = json_of(&ack(Some("\"r1\""), Some("orders"), ts));
        assert_eq!(
            v,
            serde_json::json!({"type":"ack","request_id":"r1","topic":"orders","status":"ok","ts":ts})
        );
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
}
