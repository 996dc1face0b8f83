//! The loop's side of every connection: the slab, the lists of connections to
//! flush, read again and reap, the deadline heap, and the byte counters. It
//! carries out what the core decides ([`Effects`]).

use std::time::{Duration, Instant};

use bytes::Bytes;
use mio::Registry;
use slab::Slab;

use super::conn::{Changed, Conn, Next, State};
use super::timers::Timers;
use crate::clock::{self, Clock, STAMP_LEN};
use crate::config::Config;
use crate::core::rest::Reply;
use crate::core::{ConnId, Effects};
use crate::engine::Command;
use crate::http;
use crate::metrics::IoCounters;
use crate::outbound::{Flush, Kind, Outbound};
use crate::refusal::Refusal;
use crate::wire::frame;

/// How long a closing connection may take to read our last bytes and hang up.
pub const CLOSE_LINGER: Duration = Duration::from_secs(2);

pub struct Net {
    pub conns: Slab<Conn>,
    pub registry: Registry,
    pub config: Config,
    pub timers: Timers,
    /// The time of this loop turn.
    pub now: Instant,
    /// The wall-clock time of this loop turn, in ms since the Unix epoch:
    /// one clock read per turn, not one per message (measured: ~110 fewer
    /// instructions per publish at 1 → 1, where a turn holds about one).
    pub wall_ms: u64,
    pub clock: Clock,
    pub io: IoCounters,
    /// Connections that are, or were until they started closing, WebSockets.
    pub ws_count: usize,
    /// Connections with output to flush at the end of this turn.
    pub to_flush: Vec<usize>,
    /// Connections to flush or read again next turn (write cap reached, reads resumed).
    pub again: Vec<usize>,
    pub to_reap: Vec<usize>,
    /// Cluster mode: commands for the engine from this turn's core calls.
    pub commands: Vec<Command>,
    generation: u32,
}

impl Net {
    pub fn new(registry: Registry, config: Config, now: Instant) -> Net {
        Net {
            conns: Slab::new(),
            registry,
            config,
            timers: Timers::default(),
            now,
            wall_ms: clock::now_millis(),
            clock: Clock::default(),
            io: IoCounters::default(),
            ws_count: 0,
            to_flush: Vec::new(),
            again: Vec::new(),
            to_reap: Vec::new(),
            commands: Vec::new(),
            generation: 0,
        }
    }

    /// The id for the connection about to take slab slot `key`.
    pub fn next_id(&mut self, key: usize) -> ConnId {
        self.generation = self.generation.wrapping_add(1);
        ConnId::new(key, self.generation)
    }

    /// A connection that is still there (generations guard recycled slots).
    pub fn live(&mut self, id: ConnId) -> Option<&mut Conn> {
        self.live_to_flush(id).map(|(conn, _)| conn)
    }

    /// [`Net::live`], with the flush list beside it for what is queued on it.
    fn live_to_flush(&mut self, id: ConnId) -> Option<(&mut Conn, &mut Vec<usize>)> {
        let conn = self
            .conns
            .get_mut(id.key())
            .filter(|c| c.id == id && !c.is_dead())?;
        Some((conn, &mut self.to_flush))
    }

    /// The one place a connection changes state; keeps the counts, the reap
    /// list and the deadline heap in step.
    pub fn transition(&mut self, key: usize, next: Next) -> Changed {
        let Some(conn) = self.conns.get_mut(key) else {
            return Changed::Nothing;
        };
        let changed = conn.transition(next);
        match changed {
            Changed::Nothing => {}
            Changed::Upgraded => self.ws_count += 1,
            Changed::Closing => {}
            Changed::Died { websocket } => {
                self.ws_count -= usize::from(websocket);
                self.to_reap.push(key);
                return changed;
            }
        }
        self.schedule(key);
        changed
    }

    pub fn kill(&mut self, key: usize) {
        self.transition(key, Next::Kill);
    }

    pub fn queue_flush(&mut self, key: usize) {
        if let Some(conn) = self.conns.get_mut(key) {
            conn.want_flush(key, &mut self.to_flush);
        }
    }

    /// Makes sure a timer entry exists no later than the connection's deadline.
    pub fn schedule(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let deadline = conn.deadline(&self.config);
        if conn.timer_at.is_none_or(|t| deadline < t) {
            conn.timer_at = Some(deadline);
            self.timers.push(deadline, conn.id);
        }
    }

    /// How long a connection closed for `why` may take to read its last bytes.
    fn linger(&self, why: &Refusal) -> Duration {
        match why {
            Refusal::SlowConsumer => self.config.slow_consumer_grace,
            Refusal::IdleTimeout => Duration::from_millis(500),
            Refusal::ServerShutdown => self.config.shutdown_timeout,
            _ => CLOSE_LINGER,
        }
    }

    /// Answers an HTTP request and closes the connection after the answer.
    pub fn close_http(&mut self, key: usize, response: Bytes) {
        if let Some(conn) = self.conns.get_mut(key) {
            conn.push(response, Kind::Control);
        }
        self.transition(key, Next::Close(self.now + CLOSE_LINGER));
        self.queue_flush(key);
    }

    /// Stops reading a connection and hangs up once what is queued is sent.
    pub fn close_after_queue(&mut self, key: usize) {
        self.transition(key, Next::Close(self.now + CLOSE_LINGER));
    }

    /// A copy of this turn's stamp, so it can be used while the loop is borrowed.
    pub fn stamp(&mut self) -> Stamp {
        let mut s = Stamp([0; STAMP_LEN]);
        s.0.copy_from_slice(self.clock.at(self.wall_ms).as_bytes());
        s
    }

    /// Writes what `key` has queued, up to `cap` bytes; counts what went out.
    pub fn write_out(&mut self, key: usize, cap: usize) -> Flush {
        let Some(conn) = self.conns.get_mut(key) else {
            return Flush::Closed;
        };
        let before = conn.outbound.len();
        let result = conn.outbound.flush_to(&mut conn.socket, cap);
        self.io.bytes_out += before.saturating_sub(conn.outbound.len()) as u64;
        if result == Flush::Pending {
            conn.write_blocked = true;
        }
        result
    }
}

impl Effects for Net {
    fn send(&mut self, to: ConnId, frame: Bytes) {
        if let Some((conn, to_flush)) = self.live_to_flush(to) {
            conn.push(frame, Kind::Control);
            conn.want_flush(to.key(), to_flush);
        }
    }

    fn send_json(&mut self, to: ConnId, write: impl FnOnce(&mut Vec<u8>)) {
        if let Some((conn, to_flush)) = self.live_to_flush(to) {
            conn.outbound.write(|out| frame::append_text(out, write));
            conn.want_flush(to.key(), to_flush);
        }
    }

    fn outbox(&mut self, to: ConnId) -> Option<&mut Outbound> {
        let conn = self
            .conns
            .get_mut(to.key())
            .filter(|c| c.id == to && matches!(c.state, State::WebSocket(_)))?;
        conn.want_flush(to.key(), &mut self.to_flush);
        Some(&mut conn.outbound)
    }

    fn drain(&mut self, to: ConnId) {
        // A failed write is seen again by the turn's flush.
        if self.live(to).is_some_and(|c| !c.write_blocked) {
            self.write_out(to.key(), usize::MAX);
        }
    }

    fn engine(&mut self, command: Command) {
        self.commands.push(command);
    }

    fn reply(&mut self, conn: ConnId, reply: Reply) {
        let key = conn.key();
        let Some(c) = self.live(conn) else {
            return;
        };
        let State::Http(http) = &mut c.state else {
            return;
        };
        let Some(close) = http.awaiting.take() else {
            return;
        };
        let response = rest_response(&reply, close);
        if close {
            self.close_http(key, response);
        } else {
            c.push(response, Kind::Control);
            self.queue_flush(key);
            // Requests that arrived meanwhile are handled next turn.
            self.again.push(key);
        }
    }

    fn close(&mut self, conn: ConnId, why: Refusal) {
        let Some(c) = self.live(conn) else {
            return;
        };
        if c.is_closing() {
            return;
        }
        if matches!(c.state, State::WebSocket(_))
            && let Some(close) = frame::refusal_close(&why)
        {
            c.push(close, Kind::Control);
        }
        let deadline = self.now + self.linger(&why);
        self.transition(conn.key(), Next::Close(deadline));
        self.queue_flush(conn.key());
    }
}

/// The HTTP response of a REST reply.
pub fn rest_response(reply: &Reply, close: bool) -> Bytes {
    http::response(
        reply.status,
        reply.content_type,
        reply.headers,
        &reply.body,
        close,
    )
}

/// A copy of a clock stamp.
pub struct Stamp([u8; STAMP_LEN]);

impl Stamp {
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("1970-01-01T00:00:00.000Z")
    }
}
