//! Reading: HTTP requests, the WebSocket upgrade, WebSocket frames, and the
//! input of closing connections. Every read goes through one `Io` outcome;
//! what a request means is the core's to decide.

use std::time::Instant;

use bytes::Bytes;

use super::conn::{Next, State, Ws};
use super::net::{CLOSE_LINGER, Net};
use crate::core::auth::Grant;
use crate::core::rest::View;
use crate::core::{ConnId, Core};
use crate::engine::Engine;
use crate::http::{self, Parsed, Request};
use crate::io::{self, Io};
use crate::metrics::Gauges;
use crate::outbound::Kind;
use crate::refusal::{Allow, Refusal};
use crate::wire::decoder::{self, Message, Violation};
use crate::wire::frame;

/// Bytes read from one socket per loop turn, so a fast sender cannot hold the
/// loop (and every other connection's output) in its read.
const READ_CAP: usize = 256 << 10;

/// What one read of a socket gave.
enum Read {
    Bytes(usize),
    /// Nothing more this turn: it would block, the budget is spent, or it failed.
    Stop,
    /// The peer closed its side.
    Eof,
}

/// What to do after an HTTP request was answered.
enum After {
    /// Read the next request on this connection.
    Continue,
    /// Stop: the connection is closing or became a WebSocket.
    Stop,
}

/// What the read path works with for one readable connection: the loop's
/// connections and shared read buffer, the core, and what REST answers show.
pub(super) struct Reading<'a> {
    pub net: &'a mut Net,
    pub core: &'a mut Core,
    pub scratch: &'a mut [u8],
    pub shutting_down: bool,
    pub started: Instant,
    pub engine: Option<&'a Engine>,
}

impl Reading<'_> {
    pub(super) fn read(&mut self, key: usize) {
        let Some(conn) = self.net.conns.get(key) else {
            return;
        };
        match conn.state {
            State::Http(_) => self.read_http(key),
            State::WebSocket(_) => self.read_ws(key),
            State::Closing(_) => self.read_closing(key),
            State::Dead => {}
        }
    }

    /// One read of `key`'s socket into the shared buffer (at most `room`
    /// bytes), within what the turn allows it. Bytes read are counted; a
    /// failed socket is killed; a spent budget reads again next turn.
    fn read_some(&mut self, key: usize, budget: &mut usize, room: usize) -> Read {
        if *budget == 0 {
            self.net.again.push(key);
            return Read::Stop;
        }
        let Some(conn) = self.net.conns.get_mut(key) else {
            return Read::Stop;
        };
        let room = room.min(self.scratch.len());
        match io::read(&mut conn.socket, &mut self.scratch[..room]) {
            Io::Progress(n) => {
                self.net.io.bytes_in += n as u64;
                *budget = budget.saturating_sub(n);
                conn.last_seen = self.net.now;
                Read::Bytes(n)
            }
            Io::WouldBlock => Read::Stop,
            Io::Closed => Read::Eof,
            Io::Failed(_) => {
                self.net.kill(key);
                Read::Stop
            }
        }
    }

    /// A closing connection's input is discarded; its EOF ends it.
    fn read_closing(&mut self, key: usize) {
        let mut budget = READ_CAP;
        loop {
            match self.read_some(key, &mut budget, usize::MAX) {
                Read::Bytes(_) => {}
                Read::Stop => return,
                Read::Eof => {
                    // The peer hung up: with nothing left to send, we are done.
                    let conn = &self.net.conns[key];
                    let lingering = matches!(&conn.state, State::Closing(c) if c.lingering);
                    if lingering || conn.outbound.is_empty() {
                        self.net.kill(key);
                    }
                    return;
                }
            }
        }
    }

    fn read_http(&mut self, key: usize) {
        // Requests that arrived while an earlier one waited on Redis
        // (cluster mode): only a connection with bytes buffered can hold one.
        if let Some(State::Http(http)) = self.net.conns.get(key).map(|c| &c.state)
            && !http.buf.is_empty()
        {
            self.handle_http(key);
        }
        let max_buffered = http::MAX_HEAD + self.net.config.max_body_size + 1;
        let mut budget = READ_CAP;
        loop {
            let limit = self.net.config.outbound_limit;
            let Some(conn) = self.net.conns.get_mut(key) else {
                return;
            };
            if conn.outbound.len() > limit {
                conn.read_paused = true;
                return;
            }
            let State::Http(http) = &conn.state else {
                return;
            };
            if http.buf.len() >= max_buffered {
                return;
            }
            let room = max_buffered - http.buf.len();
            match self.read_some(key, &mut budget, room) {
                Read::Bytes(n) => {
                    let now = self.net.now;
                    let State::Http(http) = &mut self.net.conns[key].state else {
                        return;
                    };
                    http.buf.extend_from_slice(&self.scratch[..n]);
                    if http.started.is_none() {
                        http.started = Some(now);
                        self.net.schedule(key);
                    }
                    self.handle_http(key);
                }
                Read::Stop => return,
                Read::Eof => {
                    // Half-closed by the client: answer what is complete, then close.
                    self.handle_http(key);
                    if let Some(conn) = self.net.conns.get(key) {
                        if conn.outbound.is_empty() {
                            self.net.kill(key);
                        } else {
                            self.net.close_after_queue(key);
                        }
                    }
                    return;
                }
            }
        }
    }

    /// Handles every complete request in the connection's buffer, in order.
    fn handle_http(&mut self, key: usize) {
        loop {
            let now = self.net.now;
            let max_body = self.net.config.max_body_size;
            let Some(conn) = self.net.conns.get_mut(key) else {
                return;
            };
            let State::Http(http) = &mut conn.state else {
                return;
            };
            if http.awaiting.is_some() {
                return;
            }
            match http::parse(&http.buf, max_body) {
                Parsed::Partial => {
                    if http.buf.is_empty() {
                        http.started = None;
                    }
                    return;
                }
                Parsed::Reject(why) => {
                    self.core.counters.reject(&why);
                    self.net.close_http(key, http::refusal(&why, true));
                    return;
                }
                Parsed::Request(req, used) => {
                    http.buf.drain(..used);
                    http.started = (!http.buf.is_empty()).then_some(now);
                    self.net.io.http_requests += 1;
                    self.net.queue_flush(key);
                    if let After::Stop = self.handle_request(key, &req) {
                        return;
                    }
                }
            }
        }
    }

    /// Answers one request: a REST call goes to the core, `/ws` upgrades.
    fn handle_request(&mut self, key: usize, req: &Request) -> After {
        let close = !req.keep_alive || self.shutting_down;
        let grant = match self.core.authorize(req) {
            Ok(grant) => grant,
            Err(why) => {
                self.core.counters.reject(&why);
                return self.answer(key, http::refusal(&why, close), close);
            }
        };
        if req.path == "/ws" {
            return self.handshake(key, req, close, grant);
        }
        let view = View {
            io: self.net.io,
            gauges: self.gauges(),
            engine: self.engine.map(|e| e.stats),
        };
        let ts = self.net.stamp();
        let id = self.net.conns[key].id;
        let reply = self.core.rest(id, req, &view, ts.as_str(), self.net);
        if reply.pending {
            // Answered by `Net::reply` once Redis has decided.
            if let State::Http(http) = &mut self.net.conns[key].state {
                http.awaiting = Some(close);
                http.started = None;
            }
            return After::Stop;
        }
        self.answer(key, super::net::rest_response(&reply, close), close)
    }

    fn answer(&mut self, key: usize, response: Bytes, close: bool) -> After {
        if close {
            self.net.close_http(key, response);
            return After::Stop;
        }
        if let Some(conn) = self.net.conns.get_mut(key) {
            conn.push(response, Kind::Control);
        }
        After::Continue
    }

    fn handshake(&mut self, key: usize, req: &Request, close: bool, grant: Grant) -> After {
        if req.method != "GET" {
            let why = Refusal::MethodNotAllowed(Allow::Get);
            return self.answer(key, http::refusal(&why, close), close);
        }
        let refused = http::handshake_problem(req)
            .or_else(|| self.shutting_down.then_some(Refusal::ShuttingDown));
        if let Some(why) = refused {
            self.core.counters.reject(&why);
            self.net.close_http(key, http::refusal(&why, true));
            return After::Stop;
        }
        let ws_key = req.ws_key.as_deref().unwrap_or_default();
        if let Some(conn) = self.net.conns.get(key) {
            self.core.open_ws(conn.id, grant);
        }
        self.upgrade(key, http::switching_protocols(ws_key));
        After::Stop
    }

    fn upgrade(&mut self, key: usize, switching: Bytes) {
        let now = self.net.now;
        let Some(conn) = self.net.conns.get_mut(key) else {
            return;
        };
        let State::Http(http) = &mut conn.state else {
            return;
        };
        // Frames may have arrived with the handshake: they are read first.
        let held = std::mem::take(&mut http.buf);
        conn.push(switching, Kind::Control);
        conn.last_seen = now;
        let ws = Ws {
            held,
            ..Ws::default()
        };
        self.net.transition(key, Next::Upgrade(ws));
        self.net.queue_flush(key);
        if self.decode(key, 0) {
            self.read_ws(key);
        }
    }

    fn read_ws(&mut self, key: usize) {
        let mut budget = READ_CAP;
        loop {
            let limit = self.net.config.outbound_limit;
            let Some(conn) = self.net.conns.get_mut(key) else {
                return;
            };
            if !matches!(conn.state, State::WebSocket(_)) {
                return;
            }
            if conn.outbound.len() > limit {
                conn.read_paused = true;
                return;
            }
            let n = match self.read_some(key, &mut budget, usize::MAX) {
                Read::Bytes(n) => n,
                Read::Stop => return,
                // Gone without a close frame: nothing to say to it.
                Read::Eof => return self.net.kill(key),
            };
            let open = self.decode(key, n);
            self.net.queue_flush(key);
            if !open {
                return;
            }
        }
    }

    /// Handles every whole message in the bytes `key` holds followed by the
    /// first `fresh` bytes of the scratch buffer, and keeps the bytes of a
    /// frame not yet whole. Returns whether it is still an open WebSocket.
    fn decode(&mut self, key: usize, fresh: usize) -> bool {
        let max = self.net.config.max_message_size;
        let Some(conn) = self.net.conns.get_mut(key) else {
            return false;
        };
        let id = conn.id;
        let State::WebSocket(ws) = &mut conn.state else {
            return false;
        };
        // Taken out while the core runs; put back below if still open.
        let Ws {
            mut held,
            mut decoder,
        } = std::mem::take(ws);
        // The usual case: whole frames in the scratch buffer, read in place.
        let in_scratch = held.is_empty();
        if !in_scratch {
            held.extend_from_slice(&self.scratch[..fresh]);
        }
        let buf: &mut [u8] = if in_scratch {
            &mut self.scratch[..fresh]
        } else {
            &mut held
        };
        // The turn's stamp, formatted once for every message of this read
        // (measured: ~210 fewer instructions per publish at 1 → 1).
        let stamp = self.net.stamp();
        let ts = stamp.as_str();
        let (mut at, mut violation, mut open) = (0, None, true);
        while open {
            match decoder.next(&mut buf[at..], max) {
                Ok(None) => break,
                Ok(Some((message, used))) => {
                    at += used;
                    if let Some(message) = message {
                        open = on_message(self.core, self.net, id, message, ts);
                    }
                }
                Err(v) => {
                    violation = Some(v);
                    break;
                }
            }
        }
        if let Some(v) = violation {
            let why = match v {
                Violation::TooBig => Refusal::MessageTooBig,
                Violation::Utf8 => Refusal::InvalidUtf8,
                Violation::Protocol => Refusal::ProtocolViolation,
            };
            self.core.counters.reject(&why);
            self.core.close(id, why, self.net);
            return false;
        }
        if !open {
            return false;
        }
        if in_scratch {
            held.extend_from_slice(&self.scratch[at..fresh]);
        } else {
            held.drain(..at);
            // A big frame's buffer is not kept for an idle connection.
            if held.is_empty() {
                held = Vec::new();
            }
        }
        match self.net.live(id).map(|c| &mut c.state) {
            Some(State::WebSocket(ws)) => {
                *ws = Ws { held, decoder };
                true
            }
            _ => false,
        }
    }

    fn gauges(&self) -> Gauges {
        Gauges {
            http_connections: self.net.conns.len() - self.net.ws_count,
            ws_connections: self.net.ws_count,
            subscriptions: self.core.broker.subscription_count(),
            topics: self.core.broker.topic_count(),
            uptime_seconds: self.started.elapsed().as_secs_f64(),
        }
    }
}

/// One client message, handed to the core; returns whether the connection is
/// still an open WebSocket.
fn on_message(core: &mut Core, net: &mut Net, id: ConnId, message: Message<'_>, ts: &str) -> bool {
    match message {
        Message::Text(text) => core.on_text(id, text, ts, net),
        Message::Binary => core.on_binary(id, ts, net),
        Message::Ping(data) => {
            if let Some(conn) = net.live(id) {
                conn.push(frame::pong_frame(data), Kind::Control);
            }
        }
        Message::Pong => {}
        Message::Close(close) => {
            // Answer the close, then hang up.
            if let Some(conn) = net.live(id) {
                conn.push(decoder::close_reply(close), Kind::Control);
            }
            net.transition(id.key(), Next::Close(net.now + CLOSE_LINGER));
            core.remove_conn(id);
        }
    }
    net.live(id)
        .is_some_and(|c| matches!(c.state, State::WebSocket(_)))
}
