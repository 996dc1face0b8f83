//! Server messages, encoded as WebSocket text frames (`protocol.md` §1): one
//! JSON serialization and one frame per message, sized to its JSON so it is
//! built in one allocation.

use bytes::Bytes;
use serde_json::value::RawValue;

use crate::wire::frame::FrameBuilder;
use crate::wire::push_u64;

use super::ErrorCode;

/// Starts a server message; `capacity` should cover the whole JSON text so the
/// frame is built in one allocation.
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
    field_ts(f.payload(), ts);
    f.text()
}

/// `,"ts":…}`: the last field, and the end of the object.
fn field_ts(out: &mut Vec<u8>, ts: &str) {
    out.extend_from_slice(b",\"ts\":\"");
    out.extend_from_slice(ts.as_bytes());
    out.extend_from_slice(b"\"}");
}

/// `{"type":"event","topic":…,"seq":N,"message":{"id":…,"payload":…},"ts":…}`
///
/// `id` must be a validated UUID: its characters need no escaping.
pub fn event(topic: &str, seq: u64, id: &str, payload: &RawValue, ts: &str) -> Bytes {
    let mut f = FrameBuilder::recycled(160 + topic.len() + id.len() + payload.get().len());
    let out = f.payload();
    event_head(out, topic);
    push_u64(out, seq);
    event_tail(out, id, payload, ts);
    f.text()
}

/// An event's JSON without its seq, in the two parts that go before and
/// after it: in cluster mode Redis assigns the seq and joins them.
pub fn event_parts(topic: &str, id: &str, payload: &RawValue, ts: &str) -> (Vec<u8>, Vec<u8>) {
    let mut head = Vec::with_capacity(40 + topic.len());
    event_head(&mut head, topic);
    let mut tail = Vec::with_capacity(100 + id.len() + payload.get().len());
    event_tail(&mut tail, id, payload, ts);
    (head, tail)
}

/// `{"type":"event","topic":…,"seq":`
fn event_head(out: &mut Vec<u8>, topic: &str) {
    out.extend_from_slice(b"{\"type\":\"event\"");
    field_topic(out, Some(topic));
    out.extend_from_slice(b",\"seq\":");
}

/// `,"message":{"id":…,"payload":…},"ts":…}`
fn event_tail(out: &mut Vec<u8>, id: &str, payload: &RawValue, ts: &str) {
    out.extend_from_slice(b",\"message\":{\"id\":\"");
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(b"\",\"payload\":");
    out.extend_from_slice(payload.get().as_bytes());
    out.extend_from_slice(b"},\"ts\":\"");
    out.extend_from_slice(ts.as_bytes());
    out.extend_from_slice(b"\"}");
}

/// What an `ack` adds to `status`.
#[derive(Debug, Clone, Copy)]
pub enum Acked<'a> {
    /// An unsubscribe.
    Plain,
    /// A publish: the event's `seq`.
    Published { seq: u64 },
    /// A subscribe: the topic's current `seq` and `epoch`, and with `since`,
    /// whether everything after it is being sent.
    Subscribed {
        seq: u64,
        epoch: &'a str,
        recovered: Option<bool>,
    },
}

/// `{"type":"ack","request_id":…,"topic":…,"status":"ok",…,"ts":…}`
pub fn ack(request_id: Option<&str>, topic: Option<&str>, acked: Acked<'_>, ts: &str) -> Bytes {
    let mut f = FrameBuilder::with_capacity(
        128 + request_id.map_or(4, str::len) + topic.map_or(0, str::len),
    );
    ack_json(f.payload(), request_id, topic, acked, ts);
    f.text()
}

/// Appends the JSON text of an [`ack`] to `out`.
pub fn ack_json(
    out: &mut Vec<u8>,
    request_id: Option<&str>,
    topic: Option<&str>,
    acked: Acked<'_>,
    ts: &str,
) {
    out.extend_from_slice(b"{\"type\":\"ack\"");
    field_request_id(out, request_id);
    field_topic(out, topic);
    out.extend_from_slice(b",\"status\":\"ok\"");
    match acked {
        Acked::Plain => {}
        Acked::Published { seq } => {
            out.extend_from_slice(b",\"seq\":");
            push_u64(out, seq);
        }
        Acked::Subscribed {
            seq,
            epoch,
            recovered,
        } => {
            out.extend_from_slice(b",\"seq\":");
            push_u64(out, seq);
            out.extend_from_slice(b",\"epoch\":");
            push_json_string(out, epoch);
            if let Some(r) = recovered {
                out.extend_from_slice(if r {
                    b",\"recovered\":true"
                } else {
                    b",\"recovered\":false"
                });
            }
        }
    }
    field_ts(out, ts);
}

/// `{"type":"pong","request_id":…,"ts":…}`
pub fn pong(request_id: Option<&str>, ts: &str) -> Bytes {
    let mut f = open("pong", 64 + request_id.map_or(4, str::len));
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
    let mut f = open(
        "error",
        160 + message.len() + request_id.map_or(4, str::len) + topic.map_or(0, str::len),
    );
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
    let mut f = open("info", 80 + msg.len() + topic.map_or(0, str::len));
    let out = f.payload();
    field_topic(out, topic);
    out.extend_from_slice(b",\"msg\":");
    push_json_string(out, msg);
    close(f, ts)
}

/// `{"type":"info","topic":…,"msg":"events_lost","from_seq":A,"to_seq":B,"ts":…}`
pub fn events_lost(topic: &str, from: u64, to: u64, ts: &str) -> Bytes {
    let mut f = open("info", 128 + topic.len());
    let out = f.payload();
    field_topic(out, Some(topic));
    out.extend_from_slice(b",\"msg\":\"events_lost\",\"from_seq\":");
    push_u64(out, from);
    out.extend_from_slice(b",\"to_seq\":");
    push_u64(out, to);
    close(f, ts)
}

/// `{"type":"info","topic":…,"msg":"epoch_changed","epoch":…,"ts":…}`: the
/// topic goes on in a new epoch (cluster mode: Redis lost its data, or the
/// topic was re-created while this node could not hear it); `seq` restarts.
pub fn epoch_changed(topic: &str, epoch: &str, ts: &str) -> Bytes {
    let mut f = open("info", 128 + topic.len() + epoch.len());
    let out = f.payload();
    field_topic(out, Some(topic));
    out.extend_from_slice(b",\"msg\":\"epoch_changed\",\"epoch\":");
    push_json_string(out, epoch);
    close(f, ts)
}

/// `{"type":"info","msg":"messages_dropped","dropped":N,"ts":…}`
pub fn messages_dropped(dropped: u64, ts: &str) -> Bytes {
    let mut f = open("info", 112);
    let out = f.payload();
    out.extend_from_slice(b",\"msg\":\"messages_dropped\",\"dropped\":");
    push_u64(out, dropped);
    close(f, ts)
}

fn push_json_string(out: &mut Vec<u8>, s: &str) {
    // Writing a str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}
