//! The loop as the core's tests see it: peers with outbound queues and
//! readers that take everything, some, or nothing, in place of sockets. Used
//! by the unit tests and the simulation.

use std::collections::HashMap;
use std::io::{self, Write};

use bytes::Bytes;
use serde_json::Value;

use super::{ConnId, Effects};
use crate::http::Request;
use crate::metrics::{Gauges, IoCounters};
use crate::outbound::{Flush, Kind, Outbound};
use crate::refusal::Refusal;
use crate::wire::frame::{Parsed, parse_frame};

/// The timestamp every test message carries.
pub const TS: &str = "2026-01-01T00:00:00.000Z";

/// How much a peer's reader takes each time it reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reader {
    /// Everything, every time.
    Fast,
    /// Up to this many bytes.
    Slow(usize),
    /// Nothing.
    Stalled,
}

pub struct Peer {
    pub out: Outbound,
    pub reader: Reader,
    /// Bytes the reader has taken and not yet parsed.
    pub taken: Vec<u8>,
    /// Messages the reader received, in order.
    pub received: Vec<Value>,
    pub closed: Option<Refusal>,
    pub close_frames: usize,
    /// Drops reported in `messages_dropped` notices queued so far.
    pub notified: u64,
}

impl Peer {
    pub fn new(reader: Reader) -> Peer {
        Peer {
            out: Outbound::default(),
            reader,
            taken: Vec::new(),
            received: Vec::new(),
            closed: None,
            close_frames: 0,
            notified: 0,
        }
    }

    /// Lets the reader take what it takes, and parses the frames that arrived.
    pub fn read(&mut self, room: usize) {
        let mut sink = Sink {
            buf: &mut self.taken,
            room,
        };
        let drained = self.out.flush_to(&mut sink, usize::MAX) == Flush::Drained;
        // As the loop's flush does: once drained, tell what drop-oldest took.
        let dropped = self.out.dropped;
        if drained
            && self.closed.is_none()
            && let Some(notice) = super::drop_notice(&mut self.out, TS)
        {
            self.notified += dropped;
            self.out.push(notice, Kind::Control);
            let _ = self.out.flush_to(&mut sink, usize::MAX);
        }
        self.parse();
    }

    pub fn room(&self) -> usize {
        match self.reader {
            Reader::Fast => usize::MAX,
            Reader::Slow(n) => n,
            Reader::Stalled => 0,
        }
    }

    fn parse(&mut self) {
        let mut at = 0;
        while let Parsed::Frame(f, used) = parse_frame(&self.taken[at..], usize::MAX) {
            let payload = &self.taken[at + f.payload.start..at + f.payload.end];
            match f.opcode {
                0x1 => self.received.push(message(payload)),
                0x8 => self.close_frames += 1,
                other => panic!("unexpected opcode {other:#x}"),
            }
            at += used;
        }
        self.taken.drain(..at);
    }
}

/// A server message; events (most of the traffic) are read without a full parse.
fn message(text: &[u8]) -> Value {
    const EVENT: &[u8] = br#"{"type":"event","#;
    let number = |key: &[u8]| -> Option<u64> {
        let at = memchr::memmem::find(text, key)? + key.len();
        let digits = &text[at..];
        let end = digits.iter().position(|b| !b.is_ascii_digit())?;
        std::str::from_utf8(&digits[..end]).ok()?.parse().ok()
    };
    if text.starts_with(EVENT)
        && let Some(n) = number(br#""payload":{"n":"#)
    {
        let seq = number(br#","seq":"#);
        return serde_json::json!({"type": "event", "seq": seq, "message": {"payload": {"n": n}}});
    }
    serde_json::from_slice(text).expect("a server text frame holds JSON")
}

/// A reader's socket: takes up to `room` bytes, then would block.
struct Sink<'a> {
    buf: &'a mut Vec<u8>,
    room: usize,
}

impl Write for Sink<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(self.room);
        if n == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.buf.extend_from_slice(&data[..n]);
        self.room -= n;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The loop as the core sees it, with peers in place of sockets.
#[derive(Default)]
pub struct Peers {
    pub peers: HashMap<ConnId, Peer>,
    /// Peers something was queued on since the last `touched.clear()`.
    pub touched: Vec<ConnId>,
    /// Cluster mode: commands for the engine, and REST answers that waited.
    pub commands: Vec<crate::engine::Command>,
    pub replies: Vec<(ConnId, u16)>,
}

impl Peers {
    fn open(&mut self, id: ConnId) -> Option<&mut Peer> {
        self.touched.push(id);
        self.peers.get_mut(&id).filter(|p| p.closed.is_none())
    }
}

impl Effects for Peers {
    fn engine(&mut self, command: crate::engine::Command) {
        self.commands.push(command);
    }

    fn reply(&mut self, conn: ConnId, reply: super::rest::Reply) {
        self.replies.push((conn, reply.status));
    }

    fn send(&mut self, to: ConnId, frame: Bytes) {
        if let Some(p) = self.open(to) {
            p.out.push(frame, Kind::Control);
        }
    }

    fn send_json(&mut self, to: ConnId, write: impl FnOnce(&mut Vec<u8>)) {
        if let Some(p) = self.open(to) {
            p.out
                .write(|out| crate::wire::frame::append_text(out, write));
        }
    }

    fn outbox(&mut self, to: ConnId) -> Option<&mut Outbound> {
        self.open(to).map(|p| &mut p.out)
    }

    fn drain(&mut self, to: ConnId) {
        if let Some(p) = self.open(to) {
            let room = p.room();
            p.read(room);
        }
    }

    fn close(&mut self, conn: ConnId, why: Refusal) {
        if let Some(p) = self.open(conn) {
            if let Some(code) = why.close_code() {
                p.out.push(
                    crate::wire::frame::close_frame(code, why.close_reason()),
                    Kind::Control,
                );
            }
            p.closed = Some(why);
        }
    }
}

pub fn request(method: &str, path: &str, body: &str) -> Request {
    Request {
        method: method.into(),
        path: path.into(),
        body: body.as_bytes().to_vec(),
        keep_alive: true,
        ..Request::default()
    }
}

pub fn view() -> super::rest::View {
    super::rest::View {
        engine: None,
        io: IoCounters::default(),
        gauges: Gauges {
            http_connections: 0,
            ws_connections: 0,
            subscriptions: 0,
            topics: 0,
            uptime_seconds: 0.0,
        },
    }
}
