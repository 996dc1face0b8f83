//! The bench's payloads, and a quick look at each server message without
//! building a JSON tree. Frames come from [`crate::wire::frame`].

use memchr::memmem;

/// What a server message means to the bench.
#[derive(Debug, PartialEq, Eq)]
pub enum Msg<'a> {
    /// An event carrying a bench payload.
    Event(Stamp),
    /// An event the bench did not publish.
    ForeignEvent,
    Ack,
    Error(&'a str),
    Dropped(u64),
    Info,
    Pong,
    Unknown,
}

/// Who sent an event, its number in that publisher's stream, and when (ns
/// since the bench started).
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub struct Stamp {
    pub publisher: u64,
    pub seq: u64,
    pub sent: u64,
}

/// Writes the bench payload: `{"_bp":P,"_bs":S,"_bt":T,"pad":"…"}`, padded
/// with `x` to `size` bytes when it fits.
pub fn write_payload(out: &mut Vec<u8>, stamp: Stamp, size: usize) {
    let start = out.len();
    out.extend_from_slice(b"{\"_bp\":");
    push_u64(out, stamp.publisher);
    out.extend_from_slice(b",\"_bs\":");
    push_u64(out, stamp.seq);
    out.extend_from_slice(b",\"_bt\":");
    push_u64(out, stamp.sent);
    out.extend_from_slice(b",\"pad\":\"");
    let used = out.len() - start + 2;
    out.resize(out.len() + size.saturating_sub(used), b'x');
    out.extend_from_slice(b"\"}");
}

pub use crate::wire::push_u64;

/// The digits at the start of `s` (after optional spaces) as a number.
fn leading_u64(s: &[u8]) -> Option<u64> {
    let s = &s[s.iter().take_while(|b| **b == b' ').count()..];
    let digits = s.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 19 {
        return None;
    }
    Some(
        s[..digits]
            .iter()
            .fold(0, |n, d| n * 10 + (d - b'0') as u64),
    )
}

/// The string value after `key` (which ends in `:`), allowing spaces.
fn string_after<'a>(text: &'a [u8], key: &memmem::Finder) -> Option<&'a str> {
    let at = key.find(text)? + key.needle().len();
    let rest = &text[at..];
    let rest = &rest[rest.iter().position(|b| *b == b'"')? + 1..];
    let end = memchr::memchr(b'"', rest)?;
    std::str::from_utf8(&rest[..end]).ok()
}

/// Finds the fields the bench looks at; built once, reused for every message.
pub struct Reader {
    kind: memmem::Finder<'static>,
    publisher: memmem::Finder<'static>,
    seq: memmem::Finder<'static>,
    sent: memmem::Finder<'static>,
    code: memmem::Finder<'static>,
    msg: memmem::Finder<'static>,
    dropped: memmem::Finder<'static>,
}

impl Default for Reader {
    fn default() -> Self {
        Reader {
            kind: memmem::Finder::new(b"\"type\":"),
            publisher: memmem::Finder::new(b"\"_bp\":"),
            seq: memmem::Finder::new(b"\"_bs\":"),
            sent: memmem::Finder::new(b"\"_bt\":"),
            code: memmem::Finder::new(b"\"code\":"),
            msg: memmem::Finder::new(b"\"msg\":"),
            dropped: memmem::Finder::new(b"\"dropped\":"),
        }
    }
}

impl Reader {
    pub fn read<'a>(&self, text: &'a [u8]) -> Msg<'a> {
        match string_after(text, &self.kind) {
            Some("event") => match self.stamp(text) {
                Some(stamp) => Msg::Event(stamp),
                None => Msg::ForeignEvent,
            },
            Some("ack") => Msg::Ack,
            Some("error") => Msg::Error(string_after(text, &self.code).unwrap_or("UNKNOWN")),
            Some("pong") => Msg::Pong,
            Some("info") => match string_after(text, &self.msg) {
                Some("messages_dropped") => self
                    .number(text, &self.dropped)
                    .map_or(Msg::Info, Msg::Dropped),
                _ => Msg::Info,
            },
            _ => Msg::Unknown,
        }
    }

    fn number(&self, text: &[u8], key: &memmem::Finder) -> Option<u64> {
        let at = key.find(text)? + key.needle().len();
        leading_u64(&text[at..])
    }

    fn stamp(&self, text: &[u8]) -> Option<Stamp> {
        let at = self.publisher.find(text)? + self.publisher.needle().len();
        let publisher = leading_u64(&text[at..])?;
        fast_tail(&text[at..], publisher).or_else(|| {
            Some(Stamp {
                publisher,
                seq: self.number(text, &self.seq)?,
                sent: self.number(text, &self.sent)?,
            })
        })
    }
}

/// Servers that pass the payload through untouched keep the three fields
/// together, as written: read the other two right behind the first.
fn fast_tail(rest: &[u8], publisher: u64) -> Option<Stamp> {
    let rest = &rest[memchr::memchr(b',', rest)?..];
    let rest = rest.strip_prefix(b",\"_bs\":")?;
    let seq = leading_u64(rest)?;
    let rest = &rest[memchr::memchr(b',', rest)?..];
    let rest = rest.strip_prefix(b",\"_bt\":")?;
    Some(Stamp {
        publisher,
        seq,
        sent: leading_u64(rest)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_has_the_asked_size_and_reads_back() {
        let stamp = Stamp {
            publisher: 3,
            seq: 123_456,
            sent: 987_654_321,
        };
        let mut out = Vec::new();
        write_payload(&mut out, stamp, 128);
        assert_eq!(out.len(), 128);
        assert!(serde_json::from_slice::<serde_json::Value>(&out).is_ok());
        let event = [
            b"{\"type\":\"event\",\"topic\":\"t\",\"message\":{\"id\":\"x\",\"payload\":"
                .as_slice(),
            &out,
            b"},\"ts\":\"2026-01-01T00:00:00.000Z\"}",
        ]
        .concat();
        assert_eq!(Reader::default().read(&event), Msg::Event(stamp));
        // A payload re-serialized with spaces and another key order still reads.
        let spaced =
            br#"{"message": {"payload": {"_bt": 5, "_bs": 2, "_bp": 1}}, "type": "event"}"#;
        let want = Stamp {
            publisher: 1,
            seq: 2,
            sent: 5,
        };
        assert_eq!(Reader::default().read(spaced), Msg::Event(want));
    }

    #[test]
    fn server_messages_are_told_apart() {
        let r = Reader::default();
        assert_eq!(r.read(br#"{"type":"ack","status":"ok"}"#), Msg::Ack);
        assert_eq!(
            r.read(br#"{"type":"error","error":{"code":"SLOW_CONSUMER","message":"m"}}"#),
            Msg::Error("SLOW_CONSUMER")
        );
        assert_eq!(
            r.read(br#"{"type":"info","msg":"messages_dropped","dropped":42}"#),
            Msg::Dropped(42)
        );
        assert_eq!(r.read(br#"{"type":"info","msg":"ping"}"#), Msg::Info);
        assert_eq!(r.read(br#"{"type":"pong"}"#), Msg::Pong);
        assert_eq!(
            r.read(br#"{"type":"event","message":{"payload":1}}"#),
            Msg::ForeignEvent
        );
        assert_eq!(r.read(b"not json"), Msg::Unknown);
    }
}
