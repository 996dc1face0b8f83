//! The poll loop: accept, read, dispatch, flush, timers, signals, shutdown.
//!
//! One thread owns every socket and all broker state. Each turn: handle
//! readiness (reading and dispatching requests only enqueues output), run due
//! timers, flush every connection with pending output once, then reap the
//! connections marked dead. Interest is derived from each connection's state.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;
use tungstenite::protocol::{Message, Role, WebSocketConfig, WebSocketContext};

use crate::broker::{Broker, ConnId};
use crate::clock::Clock;
use crate::config::{Config, OverflowPolicy};
use crate::conn::{Conn, Http, State, WsIo};
use crate::http::{self, Parsed, Request};
use crate::metrics::{Counters, Gauges, Rejected};
use crate::outbound::{self, Flush, Kind};
use crate::protocol::{self, ErrorCode, Request as Msg};
use crate::rest;
use crate::timers::Timers;

const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX - 2);
const SIGNALS: Token = Token(usize::MAX - 3);

/// Bytes written to one socket per loop turn, so one fast reader cannot starve the rest.
const WRITE_CAP: usize = 1 << 20;
/// Bytes read from one socket per loop turn, so a fast sender cannot hold the
/// loop (and every other connection's output) in its read.
const READ_CAP: usize = 256 << 10;
/// Client messages read from one WebSocket before they are dispatched.
const READ_BATCH: usize = 64;
/// tungstenite's per-connection read buffer (its default is 128 KiB).
const WS_READ_BUFFER: usize = 512;
/// How long a closing connection may take to read our last bytes and hang up.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

const RUN: u8 = 0;
const GRACEFUL: u8 = 1;
const IMMEDIATE: u8 = 2;

/// How the loop ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Stopped {
    /// Every connection was closed or the shutdown timeout passed.
    Gracefully,
    /// A second signal (or a dropped handle) stopped it at once.
    Forced,
}

/// A running server started by [`start`]. Dropping it stops the server at once.
pub struct ServerHandle {
    addr: SocketAddr,
    control: Arc<AtomicU8>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<io::Result<Stopped>>>,
}

impl ServerHandle {
    /// The address the listener is bound to (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Graceful shutdown, as on SIGTERM (protocol §7); waits for the loop to exit.
    pub fn shutdown(mut self) -> io::Result<()> {
        self.stop(GRACEFUL)
    }

    fn stop(&mut self, how: u8) -> io::Result<()> {
        self.control.store(how, Ordering::SeqCst);
        self.waker.wake()?;
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result.map(|_| ()),
            Some(Err(_)) => Err(io::Error::other("server thread panicked")),
            None => Ok(()),
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        let _ = self.stop(IMMEDIATE);
    }
}

/// Binds the listener and runs the server on a thread of its own.
pub fn start(config: Config) -> io::Result<ServerHandle> {
    let listener = TcpListener::bind(SocketAddr::new(config.host, config.port))?;
    let addr = listener.local_addr()?;
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    let control = Arc::new(AtomicU8::new(RUN));
    let thread_control = control.clone();
    let thread = std::thread::Builder::new()
        .name("pubsubd".into())
        .spawn(move || Server::new(poll, listener, config, thread_control)?.run())?;
    Ok(ServerHandle {
        addr,
        control,
        waker,
        thread: Some(thread),
    })
}

/// Runs the server in this thread until SIGTERM/SIGINT (a second one forces the exit).
pub fn run(config: Config) -> io::Result<Stopped> {
    raise_fd_limit(config.max_connections);
    let listener = TcpListener::bind(SocketAddr::new(config.host, config.port))?;
    let poll = Poll::new()?;
    let mut signals = signal_hook_mio::v1_0::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ])?;
    poll.registry()
        .register(&mut signals, SIGNALS, Interest::READABLE)?;
    log::info!("pubsubd listening on {}", listener.local_addr()?);
    let mut server = Server::new(poll, listener, config, Arc::new(AtomicU8::new(RUN)))?;
    server.signals = Some(signals);
    server.run()
}

/// Warns when the open-files limit cannot reach `max_connections`.
fn raise_fd_limit(max_connections: usize) {
    let limit = crate::sys::raise_fd_limit();
    if (limit as usize) < max_connections + 32 {
        log::warn!(
            "open-files limit {limit} is below --max-connections {max_connections}: accepts will fail before the limit"
        );
    }
}

struct Server {
    poll: Poll,
    listener: Option<TcpListener>,
    signals: Option<signal_hook_mio::v1_0::Signals>,
    control: Arc<AtomicU8>,
    config: Config,
    ws_config: WebSocketConfig,
    conns: Slab<Conn>,
    generation: u32,
    broker: Broker,
    counters: Counters,
    clock: Clock,
    timers: Timers,
    started: Instant,
    now: Instant,
    next_heartbeat: Instant,
    shutdown_deadline: Option<Instant>,
    /// Connections with output to flush at the end of this turn.
    to_flush: Vec<usize>,
    /// Connections to flush or read again next turn (write cap reached, reads resumed).
    again: Vec<usize>,
    to_reap: Vec<usize>,
    /// Accepting paused: out of file descriptors.
    accept_blocked: bool,
    ws_count: usize,
    scratch: Box<[u8]>,
    batch: Vec<Message>,
}

impl Server {
    fn new(
        poll: Poll,
        mut listener: TcpListener,
        config: Config,
        control: Arc<AtomicU8>,
    ) -> io::Result<Server> {
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let ws_config = WebSocketConfig::default()
            .read_buffer_size(WS_READ_BUFFER)
            .write_buffer_size(0)
            .max_write_buffer_size(usize::MAX)
            .max_message_size(Some(config.max_message_size))
            .max_frame_size(Some(config.max_message_size));
        let now = Instant::now();
        Ok(Server {
            poll,
            listener: Some(listener),
            signals: None,
            control,
            broker: Broker::new(config.history, config.auto_create_topics),
            next_heartbeat: now + config.heartbeat,
            config,
            ws_config,
            conns: Slab::new(),
            generation: 0,
            counters: Counters::default(),
            clock: Clock::default(),
            timers: Timers::default(),
            started: now,
            now,
            shutdown_deadline: None,
            to_flush: Vec::new(),
            again: Vec::new(),
            to_reap: Vec::new(),
            accept_blocked: false,
            ws_count: 0,
            scratch: vec![0; 64 << 10].into_boxed_slice(),
            batch: Vec::with_capacity(READ_BATCH),
        })
    }

    fn run(&mut self) -> io::Result<Stopped> {
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = self.poll_timeout();
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            self.now = Instant::now();
            for key in std::mem::take(&mut self.again) {
                self.read(key);
                self.queue_flush(key);
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept_all(),
                    WAKER => match self.control.load(Ordering::SeqCst) {
                        IMMEDIATE => return Ok(Stopped::Forced),
                        GRACEFUL => self.begin_shutdown(),
                        _ => {}
                    },
                    SIGNALS => {
                        let count = self.signals.as_mut().map_or(0, |s| s.pending().count());
                        if count > 0 && self.shutdown_deadline.is_some() || count > 1 {
                            log::warn!("second signal: exiting at once");
                            return Ok(Stopped::Forced);
                        }
                        if count > 0 {
                            log::info!("signal received: shutting down gracefully");
                            self.begin_shutdown();
                        }
                    }
                    Token(key) => {
                        if event.is_writable() {
                            if let Some(conn) = self.conns.get_mut(key) {
                                conn.write_blocked = false;
                            }
                            self.queue_flush(key);
                        }
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            self.read(key);
                        }
                    }
                }
            }
            self.run_timers();
            self.flush_all();
            self.reap();
            if let Some(deadline) = self.shutdown_deadline
                && (self.conns.is_empty() || self.now >= deadline)
            {
                log::info!("shutdown complete ({} connections left)", self.conns.len());
                return Ok(Stopped::Gracefully);
            }
        }
    }

    fn poll_timeout(&self) -> Option<Duration> {
        if !self.again.is_empty() {
            return Some(Duration::ZERO);
        }
        let mut next = self.next_heartbeat;
        if let Some(t) = self.timers.next() {
            next = next.min(t);
        }
        if let Some(t) = self.shutdown_deadline {
            next = next.min(t);
        }
        // mio rounds the timeout up to whole milliseconds.
        Some(next.saturating_duration_since(Instant::now()))
    }

    // ---- connections ----

    fn accept_all(&mut self) {
        loop {
            let Some(listener) = &self.listener else {
                return;
            };
            match listener.accept() {
                Ok((socket, _)) => self.admit(socket),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) => {}
                Err(e) => {
                    // Out of descriptors: wait until a connection closes.
                    log::warn!("accept failed: {e}; pausing accepts until a connection closes");
                    self.accept_blocked = true;
                    return;
                }
            }
        }
    }

    fn admit(&mut self, mut socket: TcpStream) {
        if self.conns.len() >= self.config.max_connections {
            self.counters.reject(Rejected::MaxConnections);
            let busy =
                http::json_error(503, &[], "server at max connections, try again later", true);
            let _ = socket.write(&busy);
            let _ = socket.shutdown(Shutdown::Both);
            return;
        }
        let _ = socket.set_nodelay(true);
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        self.generation = self.generation.wrapping_add(1);
        let id = key as u64 | (u64::from(self.generation) << 32);
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut socket, Token(key), Interest::READABLE)
        {
            log::warn!("could not register a connection: {e}");
            return;
        }
        entry.insert(Conn::new(id, socket, self.now));
        self.counters.connections_accepted += 1;
        self.schedule(key);
    }

    /// The slab key of a live connection id (generations guard recycled slots).
    fn key_of(&self, id: ConnId) -> Option<usize> {
        let key = (id & 0xffff_ffff) as usize;
        self.conns
            .get(key)
            .filter(|c| c.id == id && !c.dead)
            .map(|_| key)
    }

    fn kill(&mut self, key: usize) {
        if let Some(conn) = self.conns.get_mut(key)
            && !conn.dead
        {
            conn.dead = true;
            self.to_reap.push(key);
        }
    }

    fn reap(&mut self) {
        for key in std::mem::take(&mut self.to_reap) {
            if !self.conns.get(key).is_some_and(|c| c.dead) {
                continue;
            }
            let mut conn = self.conns.remove(key);
            let _ = self.poll.registry().deregister(&mut conn.socket);
            self.broker.remove_conn(conn.id);
            if conn.is_ws {
                self.ws_count -= 1;
            }
        }
        // Compact once stale entries outnumber live connections: amortized O(1).
        if self.timers.len() > 2 * self.conns.len() + 1024 {
            let conns = &self.conns;
            self.timers.retain(|id| {
                conns
                    .get((id & 0xffff_ffff) as usize)
                    .is_some_and(|c| c.id == id && !c.dead)
            });
        }
        if self.accept_blocked && self.conns.len() < self.config.max_connections {
            self.accept_blocked = false;
            self.accept_all();
        }
    }

    fn queue_flush(&mut self, key: usize) {
        if let Some(conn) = self.conns.get_mut(key)
            && !conn.flush_queued
            && !conn.dead
        {
            conn.flush_queued = true;
            self.to_flush.push(key);
        }
    }

    /// Makes sure a timer entry exists no later than the connection's deadline.
    fn schedule(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let deadline = conn.deadline(&self.config);
        if conn.timer_at.is_none_or(|t| deadline < t) {
            conn.timer_at = Some(deadline);
            self.timers.push(deadline, conn.id);
        }
    }

    /// Queues a close frame and stops reading from a WebSocket.
    fn close_ws(&mut self, key: usize, code: u16, reason: &str, linger: Duration) {
        let deadline = self.now + linger;
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.is_closing() || conn.dead {
            return;
        }
        conn.push(outbound::close_frame(code, reason), Kind::Control);
        conn.begin_closing(deadline);
        let id = conn.id;
        self.broker.remove_conn(id);
        self.queue_flush(key);
        self.schedule(key);
    }

    /// Answers an HTTP request and closes the connection after the answer.
    fn close_http(&mut self, key: usize, response: Bytes) {
        let deadline = self.now + CLOSE_LINGER;
        if let Some(conn) = self.conns.get_mut(key) {
            conn.push(response, Kind::Control);
            conn.begin_closing(deadline);
        }
        self.queue_flush(key);
        self.schedule(key);
    }

    // ---- reading ----

    fn read(&mut self, key: usize) {
        let Some(conn) = self.conns.get(key) else {
            return;
        };
        if conn.dead {
            return;
        }
        match conn.state {
            State::Http(_) => self.read_http(key),
            State::WebSocket(_) => self.read_ws(key),
            State::Closing(_) => self.read_closing(key),
        }
    }

    /// A closing connection's input is discarded; its EOF ends it.
    fn read_closing(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let mut budget = READ_CAP;
        loop {
            if budget == 0 {
                self.again.push(key);
                return;
            }
            match conn.socket.read(&mut self.scratch) {
                Ok(0) => {
                    // The peer hung up: with nothing left to send, we are done.
                    let lingering = matches!(&conn.state, State::Closing(c) if c.lingering);
                    if lingering || conn.outbound.is_empty() {
                        self.kill(key);
                    }
                    return;
                }
                Ok(n) => {
                    self.counters.bytes_in += n as u64;
                    budget = budget.saturating_sub(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    self.kill(key);
                    return;
                }
            }
        }
    }

    fn read_http(&mut self, key: usize) {
        let max_buffered = http::MAX_HEAD + self.config.max_body_size + 1;
        let mut budget = READ_CAP;
        loop {
            if budget == 0 {
                self.again.push(key);
                return;
            }
            let Some(conn) = self.conns.get_mut(key) else {
                return;
            };
            if conn.outbound.len() > self.config.outbound_limit {
                conn.read_paused = true;
                return;
            }
            let State::Http(http) = &mut conn.state else {
                return;
            };
            if http.buf.len() >= max_buffered {
                return;
            }
            let room = (max_buffered - http.buf.len()).min(self.scratch.len());
            match conn.socket.read(&mut self.scratch[..room]) {
                Ok(0) => {
                    // Half-closed by the client: answer what is complete, then close.
                    self.handle_http(key);
                    if let Some(conn) = self.conns.get_mut(key) {
                        if conn.outbound.is_empty() {
                            self.kill(key);
                        } else {
                            conn.begin_closing(self.now + CLOSE_LINGER);
                            self.schedule(key);
                        }
                    }
                    return;
                }
                Ok(n) => {
                    self.counters.bytes_in += n as u64;
                    budget = budget.saturating_sub(n);
                    conn.last_seen = self.now;
                    http.buf.extend_from_slice(&self.scratch[..n]);
                    if http.started.is_none() {
                        http.started = Some(self.now);
                        self.schedule(key);
                    }
                    self.handle_http(key);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    self.kill(key);
                    return;
                }
            }
        }
    }

    /// Handles every complete request in the connection's buffer, in order.
    fn handle_http(&mut self, key: usize) {
        loop {
            let Some(conn) = self.conns.get_mut(key) else {
                return;
            };
            let State::Http(http) = &mut conn.state else {
                return;
            };
            match http::parse(&http.buf, self.config.max_body_size) {
                Parsed::Partial => {
                    if http.buf.is_empty() {
                        http.started = None;
                    }
                    return;
                }
                Parsed::Reject(r) => {
                    self.counters.reject(Rejected::from_status(r.status));
                    self.close_http(key, http::json_error(r.status, &[], r.message, true));
                    return;
                }
                Parsed::Request(req, used) => {
                    http.buf.drain(..used);
                    http.started = (!http.buf.is_empty()).then_some(self.now);
                    self.counters.http_requests += 1;
                    self.queue_flush(key);
                    if !self.handle_request(key, &req) {
                        return;
                    }
                }
            }
        }
    }

    /// Answers one request; returns whether to go on reading HTTP requests.
    fn handle_request(&mut self, key: usize, req: &Request) -> bool {
        let close = !req.keep_alive || self.shutdown_deadline.is_some();
        let answer = |this: &mut Server, response: Bytes| {
            if close {
                this.close_http(key, response);
            } else if let Some(conn) = this.conns.get_mut(key) {
                conn.push(response, Kind::Control);
            }
            !close
        };

        // The dashboard page is static and holds no data; it asks for a key itself.
        let exempt =
            req.method == "GET" && matches!(req.path.as_str(), "/health" | "/dashboard" | "/");
        if !self.config.api_keys.is_empty() && !exempt {
            let presented = req.api_key.clone().or_else(|| {
                (req.path == "/ws")
                    .then(|| req.query_param("api_key"))
                    .flatten()
            });
            if !presented.is_some_and(|k| http::key_matches(&k, &self.config.api_keys)) {
                self.counters.reject(Rejected::Unauthorized);
                return answer(self, http::json_error(401, &[], "unauthorized", close));
            }
        }

        if req.path == "/ws" {
            if req.method != "GET" {
                return answer(
                    self,
                    http::json_error(
                        405,
                        &[("Allow", "GET")],
                        "method not allowed: use GET",
                        close,
                    ),
                );
            }
            if let Some(problem) = http::handshake_problem(req) {
                self.counters.reject(Rejected::BadHandshake);
                let headers: &[(&str, &str)] = if problem.contains("Version") {
                    &[("Sec-WebSocket-Version", "13")]
                } else {
                    &[]
                };
                self.close_http(key, http::json_error(400, headers, problem, true));
                return false;
            }
            if self.shutdown_deadline.is_some() {
                self.close_http(
                    key,
                    http::json_error(503, &[], "server shutting down", true),
                );
                return false;
            }
            let ws_key = req.ws_key.as_deref().unwrap_or_default();
            self.upgrade(key, http::switching_protocols(ws_key));
            return false;
        }

        let view = rest::View {
            counters: &self.counters,
            gauges: self.gauges(),
        };
        let reply = rest::route(req, &mut self.broker, &view);
        if let Some((topic, conns)) = &reply.deleted {
            let ts = self.stamp();
            let info = protocol::info(Some(topic), "topic_deleted", ts.as_str());
            for id in conns {
                if let Some(k) = self.key_of(*id) {
                    self.conns[k].push(info.clone(), Kind::Control);
                    self.queue_flush(k);
                }
            }
        }
        let headers: Vec<(&str, &str)> = reply
            .allow
            .map(|a| ("Allow", a))
            .into_iter()
            .chain(reply.headers.iter().copied())
            .collect();
        let response = http::response(
            reply.status,
            reply.content_type,
            &headers,
            &reply.body,
            close,
        );
        answer(self, response)
    }

    fn upgrade(&mut self, key: usize, switching: Bytes) {
        let ws_config = self.ws_config;
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let State::Http(http) = std::mem::replace(&mut conn.state, State::Http(Http::default()))
        else {
            return;
        };
        conn.push(switching, Kind::Control);
        let ctx = if http.buf.is_empty() {
            WebSocketContext::new(Role::Server, Some(ws_config))
        } else {
            WebSocketContext::from_partially_read(http.buf, Role::Server, Some(ws_config))
        };
        conn.state = State::WebSocket(Box::new(ctx));
        conn.is_ws = true;
        conn.last_seen = self.now;
        self.ws_count += 1;
        self.schedule(key);
        self.queue_flush(key);
        // Frames may have arrived with the handshake.
        self.read_ws(key);
    }

    fn read_ws(&mut self, key: usize) {
        // Bytes read into the shared scratch buffer and not yet taken by tungstenite.
        // Every exit below either consumed them all or closed the connection.
        let (mut pos, mut end) = (0, 0);
        let mut budget = READ_CAP;
        loop {
            let Some(conn) = self.conns.get_mut(key) else {
                return;
            };
            let State::WebSocket(ctx) = &mut conn.state else {
                return;
            };
            let mut io = WsIo {
                socket: &mut conn.socket,
                outbound: &mut conn.outbound,
                scratch: &mut self.scratch,
                pos,
                end,
                received: 0,
                outbound_limit: self.config.outbound_limit,
                paused: false,
                budget,
                capped: false,
            };
            let mut failure = None;
            while self.batch.len() < READ_BATCH {
                match ctx.read(&mut io) {
                    Ok(msg) => self.batch.push(msg),
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                }
            }
            // Pong and close replies tungstenite queued go out in order.
            let _ = ctx.flush(&mut io);
            (pos, end, budget) = (io.pos, io.end, io.budget);
            conn.read_paused = io.paused;
            let capped = io.capped;
            if io.received > 0 {
                self.counters.bytes_in += io.received;
                conn.last_seen = self.now;
            }
            let mut batch = std::mem::take(&mut self.batch);
            for msg in batch.drain(..) {
                self.on_message(key, msg);
            }
            self.batch = batch;
            self.queue_flush(key);
            match failure {
                None => continue,
                Some(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    if capped {
                        self.again.push(key);
                    }
                    return;
                }
                Some(e) => {
                    self.on_ws_error(key, e);
                    return;
                }
            }
        }
    }

    fn on_ws_error(&mut self, key: usize, err: tungstenite::Error) {
        use tungstenite::Error as E;
        use tungstenite::error::ProtocolError as P;
        let (code, reason, why) = match err {
            E::Capacity(_) => (1009, "message too big", Rejected::MessageTooBig),
            E::Utf8(_) => (1007, "invalid UTF-8 in a text frame", Rejected::InvalidUtf8),
            E::Protocol(P::ResetWithoutClosingHandshake) => {
                self.kill(key);
                return;
            }
            E::Protocol(_) => (1002, "protocol error", Rejected::ProtocolViolation),
            // The close handshake finished: the closing path flushes the reply.
            E::ConnectionClosed | E::AlreadyClosed
                if self.conns.get(key).is_some_and(Conn::is_closing) =>
            {
                return;
            }
            // Closed, reset, or any other I/O failure: the peer is gone.
            _ => {
                self.kill(key);
                return;
            }
        };
        self.counters.reject(why);
        self.close_ws(key, code, reason, CLOSE_LINGER);
    }

    fn on_message(&mut self, key: usize, msg: Message) {
        if !self
            .conns
            .get(key)
            .is_some_and(|c| matches!(c.state, State::WebSocket(_)))
        {
            return;
        }
        match msg {
            Message::Text(text) => self.on_text(key, text.as_str()),
            Message::Binary(_) => {
                self.counters.reject(Rejected::BadRequest);
                let ts = self.stamp();
                let answer = protocol::error(
                    None,
                    None,
                    ErrorCode::BadRequest,
                    "binary frames are not supported: send JSON in text frames",
                    ts.as_str(),
                );
                self.conns[key].push(answer, Kind::Control);
            }
            Message::Close(_) => {
                // tungstenite queued the close reply; send it and hang up.
                let deadline = self.now + CLOSE_LINGER;
                let conn = &mut self.conns[key];
                conn.begin_closing(deadline);
                let id = conn.id;
                self.broker.remove_conn(id);
                self.schedule(key);
            }
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
        }
    }

    fn on_text(&mut self, key: usize, text: &str) {
        let id = self.conns[key].id;
        let ts = self.stamp();
        let ts = ts.as_str();
        let incoming = protocol::parse(text);
        let rid = incoming.request_id;
        let answer = match incoming.request {
            Err(message) => {
                self.counters.reject(Rejected::BadRequest);
                protocol::error(rid, incoming.topic, ErrorCode::BadRequest, &message, ts)
            }
            Ok(Msg::Ping) => protocol::pong(rid, ts),
            Ok(Msg::Subscribe {
                topic,
                client_id,
                last_n,
            }) => match self.broker.subscribe(id, &topic, &client_id, last_n) {
                Err(_) => self.topic_not_found(rid, &topic, ts),
                Ok(done) => {
                    self.conns[key].push(protocol::ack(rid, Some(&topic), ts), Kind::Control);
                    for frame in &done.replay {
                        self.deliver(key, frame, &topic, ts);
                    }
                    if let Some(other) = done.replaced.and_then(|o| self.key_of(o)) {
                        let info = protocol::info(Some(&topic), "subscription_replaced", ts);
                        self.conns[other].push(info, Kind::Control);
                        self.queue_flush(other);
                    }
                    return;
                }
            },
            Ok(Msg::Unsubscribe { topic, .. }) => match self.broker.unsubscribe(id, &topic) {
                Ok(()) => protocol::ack(rid, Some(&topic), ts),
                Err(_) => self.topic_not_found(rid, &topic, ts),
            },
            Ok(Msg::Publish {
                topic,
                id: message_id,
                payload,
            }) => {
                let frame = protocol::event(&topic, &message_id, payload, ts);
                let ack = protocol::ack(rid, Some(&topic), ts);
                if self.publish(key, ack, &topic, frame, ts) {
                    return;
                }
                self.topic_not_found(rid, &topic, ts)
            }
        };
        self.conns[key].push(answer, Kind::Control);
    }

    fn topic_not_found(&mut self, rid: Option<&str>, topic: &str, ts: &str) -> Bytes {
        self.counters.reject(Rejected::TopicNotFound);
        let message = format!("topic '{topic}' does not exist: create it with POST /topics");
        protocol::error(rid, Some(topic), ErrorCode::TopicNotFound, &message, ts)
    }

    /// Records an event, acknowledges it to its publisher, and fans it out to
    /// every subscriber of `topic`: one shared frame, one queue push each. Slow
    /// consumers are marked here and dealt with after. Returns false when the
    /// topic does not exist.
    fn publish(
        &mut self,
        publisher: usize,
        ack: Bytes,
        topic: &str,
        frame: Bytes,
        ts: &str,
    ) -> bool {
        let Ok(t) = self.broker.publish(topic, frame.clone()) else {
            return false;
        };
        self.counters.published += 1;
        // The ack goes first, so a publisher subscribed to its topic sees it before the event.
        self.conns[publisher].push(ack, Kind::Control);
        let mut tally = Tally::default();
        for sub in t.subscribers() {
            let key = (sub.conn & 0xffff_ffff) as usize;
            let Some(conn) = self.conns.get_mut(key).filter(|c| c.id == sub.conn) else {
                continue;
            };
            match offer(
                conn,
                &frame,
                &self.config,
                self.now,
                ts,
                &mut self.counters.bytes_out,
            ) {
                Offer::Queued => tally.delivered += 1,
                Offer::Dropped { queued, dropped } => {
                    tally.delivered += u64::from(queued);
                    tally.dropped += dropped;
                }
                Offer::Disconnected => tally.disconnected.push(key),
                Offer::Skipped => continue,
            }
            if !conn.flush_queued {
                conn.flush_queued = true;
                self.to_flush.push(key);
            }
        }
        self.settle(topic, tally);
        true
    }

    /// Queues one event (live or replayed) to one connection under the overflow policy.
    fn deliver(&mut self, key: usize, frame: &Bytes, topic: &str, ts: &str) {
        let mut tally = Tally::default();
        match offer(
            &mut self.conns[key],
            frame,
            &self.config,
            self.now,
            ts,
            &mut self.counters.bytes_out,
        ) {
            Offer::Queued => tally.delivered += 1,
            Offer::Dropped { queued, dropped } => {
                tally.delivered += u64::from(queued);
                tally.dropped += dropped;
            }
            Offer::Disconnected => tally.disconnected.push(key),
            Offer::Skipped => {}
        }
        self.queue_flush(key);
        self.settle(topic, tally);
    }

    fn settle(&mut self, topic: &str, tally: Tally) {
        self.counters.delivered += tally.delivered;
        self.counters.dropped += tally.dropped;
        self.counters.slow_consumer_disconnects += tally.disconnected.len() as u64;
        if tally.dropped == 0 && tally.disconnected.is_empty() {
            return;
        }
        if let Some(t) = self.broker.topic_mut(topic) {
            t.dropped += tally.dropped;
            t.slow_disconnects += tally.disconnected.len() as u64;
        }
        for key in tally.disconnected {
            let id = self.conns[key].id;
            self.broker.remove_conn(id);
            self.schedule(key);
            log::debug!("connection {id:#x}: slow consumer disconnected");
        }
    }

    // ---- writing ----

    fn flush_all(&mut self) {
        let mut i = 0;
        // Flushing can queue more (a drop notice), so the list may grow while walked.
        while i < self.to_flush.len() {
            let key = self.to_flush[i];
            i += 1;
            self.flush(key);
        }
        self.to_flush.clear();
    }

    fn flush(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.flush_queued = false;
        if conn.dead {
            return;
        }
        if !conn.write_blocked {
            let before = conn.outbound.len();
            let mut result = conn.outbound.flush_to(&mut conn.socket, WRITE_CAP);
            if result == Flush::Drained && conn.dropped > 0 && !conn.is_closing() {
                // drop-oldest: the buffer drained, so tell the client what it lost.
                let notice = protocol::messages_dropped(conn.dropped, self.clock.now());
                conn.dropped = 0;
                conn.push(notice, Kind::Control);
                result = conn.outbound.flush_to(&mut conn.socket, WRITE_CAP);
            }
            self.counters.bytes_out += (before.saturating_sub(conn.outbound.len())) as u64;
            match result {
                Flush::Closed => {
                    self.kill(key);
                    return;
                }
                Flush::Pending => conn.write_blocked = true,
                Flush::Capped => self.again.push(key),
                Flush::Drained => {
                    if let State::Closing(c) = &mut conn.state
                        && !c.lingering
                    {
                        // All sent: shut our side and wait briefly for the peer's EOF.
                        c.lingering = true;
                        let _ = conn.socket.shutdown(Shutdown::Write);
                    }
                }
            }
        }
        if conn.read_paused && conn.outbound.len() <= self.config.outbound_limit {
            conn.read_paused = false;
            self.again.push(key);
        }
        let wanted = conn.wanted_interest();
        if wanted != conn.interest {
            conn.interest = wanted;
            if self
                .poll
                .registry()
                .reregister(&mut conn.socket, Token(key), wanted)
                .is_err()
            {
                self.kill(key);
            }
        }
    }

    // ---- timers ----

    fn run_timers(&mut self) {
        if self.now >= self.next_heartbeat {
            self.heartbeat();
            self.next_heartbeat = self.now + self.config.heartbeat;
        }
        while let Some((at, id)) = self.timers.pop_due(self.now) {
            let Some(key) = self.key_of(id) else {
                continue;
            };
            let conn = &mut self.conns[key];
            if conn.timer_at == Some(at) {
                conn.timer_at = None;
            }
            if conn.deadline(&self.config) > self.now {
                self.schedule(key);
                continue;
            }
            self.expire(key);
        }
    }

    fn expire(&mut self, key: usize) {
        let conn = &self.conns[key];
        match &conn.state {
            State::Http(http) if http.started.is_some() => {
                self.counters.reject(Rejected::RequestTimeout);
                let timeout = http::json_error(408, &[], "request timeout", true);
                self.close_http(key, timeout);
                if let State::Closing(c) = &mut self.conns[key].state {
                    c.deadline = self.now + Duration::from_millis(200);
                }
            }
            State::WebSocket(_) => {
                self.counters.reject(Rejected::IdleTimeout);
                self.close_ws(key, 1001, "idle timeout", Duration::from_millis(500));
            }
            // Idle keep-alive connection, or a closing one out of time.
            _ => self.kill(key),
        }
    }

    fn heartbeat(&mut self) {
        let ts = self.stamp();
        let info = protocol::info(None, "ping", ts.as_str());
        let ping = outbound::ping_frame();
        let mut keys = Vec::with_capacity(self.ws_count);
        for (key, conn) in self.conns.iter_mut() {
            if matches!(conn.state, State::WebSocket(_)) {
                conn.push(ping.clone(), Kind::Control);
                conn.push(info.clone(), Kind::Control);
                keys.push(key);
            }
        }
        for key in keys {
            self.queue_flush(key);
        }
    }

    // ---- shutdown ----

    fn begin_shutdown(&mut self) {
        if self.shutdown_deadline.is_some() {
            return;
        }
        let deadline = self.now + self.config.shutdown_timeout;
        self.shutdown_deadline = Some(deadline);
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        let ts = self.stamp();
        let info = protocol::info(None, "server_shutdown", ts.as_str());
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            let conn = &mut self.conns[key];
            match &conn.state {
                State::WebSocket(_) => {
                    conn.push(info.clone(), Kind::Control);
                    self.close_ws(key, 1001, "server shutdown", self.config.shutdown_timeout);
                }
                State::Http(http) if http.buf.is_empty() && conn.outbound.is_empty() => {
                    self.kill(key)
                }
                // A request still arriving is read and answered; the answer
                // carries `Connection: close` (see `handle_request`).
                State::Http(http) if !http.buf.is_empty() => {}
                // A response on its way finishes, then the connection closes.
                _ => {
                    conn.begin_closing(deadline);
                    if !conn.outbound.is_empty() {
                        self.queue_flush(key);
                    }
                }
            }
        }
    }

    // ---- helpers ----

    fn stamp(&mut self) -> Stamp {
        let mut s = Stamp([0; crate::clock::STAMP_LEN]);
        s.0.copy_from_slice(self.clock.now().as_bytes());
        s
    }

    fn gauges(&self) -> Gauges {
        Gauges {
            http_connections: self.conns.len() - self.ws_count,
            ws_connections: self.ws_count,
            subscriptions: self.broker.subscription_count(),
            topics: self.broker.topic_count(),
            uptime_seconds: self.started.elapsed().as_secs_f64(),
        }
    }
}

/// A copy of the clock's stamp, so it can be used while the server is borrowed.
struct Stamp([u8; crate::clock::STAMP_LEN]);

impl Stamp {
    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("1970-01-01T00:00:00.000Z")
    }
}

#[derive(Default)]
struct Tally {
    delivered: u64,
    dropped: u64,
    disconnected: Vec<usize>,
}

enum Offer {
    Queued,
    Dropped { queued: bool, dropped: u64 },
    Disconnected,
    Skipped,
}

/// Offers an event to one connection's queue under the overflow policy (§3).
fn offer(
    conn: &mut Conn,
    frame: &Bytes,
    config: &Config,
    now: Instant,
    ts: &str,
    bytes_out: &mut u64,
) -> Offer {
    if !matches!(conn.state, State::WebSocket(_)) || conn.dead {
        return Offer::Skipped;
    }
    let limit = config.outbound_limit;
    if conn.outbound.len() + frame.len() > limit && !conn.write_blocked {
        // The limit is for bytes the client has not taken: hand the kernel what
        // it will accept before judging (a burst within one loop turn is not a
        // slow consumer). A failed write is seen again by the turn's flush.
        let before = conn.outbound.len();
        if conn.outbound.flush_to(&mut conn.socket, usize::MAX) == Flush::Pending {
            conn.write_blocked = true;
        }
        *bytes_out += (before - conn.outbound.len()) as u64;
    }
    if conn.outbound.len() + frame.len() <= limit {
        conn.push(frame.clone(), Kind::Event);
        return Offer::Queued;
    }
    match config.overflow_policy {
        OverflowPolicy::Disconnect => {
            let error = protocol::error(
                None,
                None,
                ErrorCode::SlowConsumer,
                "outbound buffer overflowed: the connection is read too slowly",
                ts,
            );
            conn.push(error, Kind::Control);
            conn.push(outbound::close_frame(1008, "slow consumer"), Kind::Control);
            conn.begin_closing(now + config.slow_consumer_grace);
            Offer::Disconnected
        }
        OverflowPolicy::DropOldest => {
            let mut dropped = conn.outbound.drop_oldest_events(frame.len(), limit) as u64;
            let queued = conn.outbound.len() + frame.len() <= limit;
            if queued {
                conn.push(frame.clone(), Kind::Event);
            } else {
                dropped += 1;
            }
            conn.dropped += dropped;
            Offer::Dropped { queued, dropped }
        }
    }
}
