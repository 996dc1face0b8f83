//! The loop: one thread, one mio poll, every socket. It moves bytes and never
//! decides what a message means: that is the core's job (`crate::core`).
//!
//! Each turn: handle readiness (reading hands requests to the core, which only
//! enqueues output), run due timers, flush every connection with pending
//! output once, then reap the connections that died. Interest is derived from
//! each connection's state.
//!
//! - `accept.rs`: accepting, admission, reaping
//! - `read.rs`: reading HTTP and WebSocket input and handing it to the core
//! - `flush.rs`: writing queued output
//! - `timers.rs`: the deadline heap, timeouts and the heartbeat
//! - `shutdown.rs`: graceful shutdown
//! - `net.rs`: the connections and what the core's effects do to them
//! - `conn.rs`: one connection and its states

mod accept;
mod conn;
mod flush;
mod net;
mod read;
mod shutdown;
mod timers;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};

use crate::config::Config;
use crate::core::Core;
use crate::engine::{CMD_TOKEN, Engine, SUB_TOKEN};
use net::Net;
use read::Reading;

const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX - 2);
const SIGNALS: Token = Token(usize::MAX - 3);

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
    check_redis(&config)?;
    let listener = bind(&config)?;
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
    check_redis(&config)?;
    let listener = bind(&config)?;
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

/// Cluster mode: a Redis that refuses the credentials (or the database) is a
/// start-up error; one that cannot be reached yet is not (the node starts
/// degraded and keeps trying).
fn check_redis(config: &Config) -> io::Result<()> {
    let Some(url) = &config.redis else {
        return Ok(());
    };
    crate::engine::check_credentials(url, Duration::from_secs(2))
        .map_err(|why| io::Error::new(io::ErrorKind::PermissionDenied, why))
}

/// Binds the listener; the error names the address that could not be bound.
fn bind(config: &Config) -> io::Result<TcpListener> {
    let addr = SocketAddr::new(config.host, config.port);
    TcpListener::bind(addr).map_err(|e| {
        let what = match e.kind() {
            io::ErrorKind::AddrInUse => "address already in use".to_string(),
            io::ErrorKind::AddrNotAvailable => "no such local address".to_string(),
            io::ErrorKind::PermissionDenied => "permission denied (a port below 1024?)".to_string(),
            _ => e.to_string(),
        };
        io::Error::new(e.kind(), format!("cannot listen on {addr}: {what}"))
    })
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
    core: Core,
    net: Net,
    started: Instant,
    next_heartbeat: Instant,
    shutdown_deadline: Option<Instant>,
    /// When the first SIGTERM/SIGINT arrived: a repeat within `SIGNAL_REPEAT` is the same request.
    first_signal: Option<Instant>,
    /// Accepting paused: out of file descriptors.
    accept_blocked: bool,
    /// The loop's one read buffer, shared by every connection.
    scratch: Box<[u8]>,
    /// Cluster mode: the link to Redis, and when the core next shares its counts.
    engine: Option<Engine>,
    next_sync: Instant,
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
        let now = Instant::now();
        let engine = config.redis.clone().map(|url| {
            let prefix = config.redis_prefix.clone();
            Engine::new(url, prefix, config.history, config.request_timeout, now)
        });
        let node = engine.as_ref().map(|e| e.node.clone());
        Ok(Server {
            listener: Some(listener),
            signals: None,
            control,
            core: Core::with_cluster(&config, node),
            next_heartbeat: now + config.heartbeat,
            net: Net::new(poll.registry().try_clone()?, config, now),
            poll,
            started: now,
            shutdown_deadline: None,
            first_signal: None,
            accept_blocked: false,
            scratch: vec![0; 64 << 10].into_boxed_slice(),
            engine,
            next_sync: now,
        })
    }

    /// One poll turn after another: events, timers, flush, reap.
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
            self.net.now = Instant::now();
            self.net.wall_ms = crate::clock::now_millis();
            for key in std::mem::take(&mut self.net.again) {
                self.read(key);
                self.net.queue_flush(key);
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
                        if let Some(stopped) = self.signal() {
                            return Ok(stopped);
                        }
                    }
                    token @ (CMD_TOKEN | SUB_TOKEN) => {
                        if let Some(engine) = &mut self.engine {
                            let now = self.net.now;
                            engine.ready(self.poll.registry(), token, &mut self.scratch, now);
                        }
                    }
                    Token(key) => {
                        if event.is_writable() {
                            if let Some(conn) = self.net.conns.get_mut(key) {
                                conn.write_blocked = false;
                            }
                            self.net.queue_flush(key);
                        }
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            self.read(key);
                        }
                    }
                }
            }
            self.run_timers();
            self.run_engine();
            self.net.flush_all();
            self.reap();
            if let Some(deadline) = self.shutdown_deadline
                && (self.net.conns.is_empty() || self.net.now >= deadline)
            {
                log::info!(
                    "shutdown complete ({} connections left)",
                    self.net.conns.len()
                );
                return Ok(Stopped::Gracefully);
            }
        }
    }

    fn poll_timeout(&self) -> Option<Duration> {
        if !self.net.again.is_empty() {
            return Some(Duration::ZERO);
        }
        let mut next = self.next_heartbeat;
        if let Some(t) = self.net.timers.next() {
            next = next.min(t);
        }
        if let Some(t) = self.shutdown_deadline {
            next = next.min(t);
        }
        if let Some(engine) = &self.engine {
            next = next.min(self.next_sync);
            if let Some(t) = engine.next_deadline() {
                next = next.min(t);
            }
        }
        // mio rounds the timeout up to whole milliseconds.
        Some(next.saturating_duration_since(Instant::now()))
    }

    /// Cluster mode: hands the core's commands to the engine and the
    /// engine's events to the core until both are quiet, then writes to Redis.
    fn run_engine(&mut self) {
        let Some(engine) = &mut self.engine else {
            return;
        };
        let now = self.net.now;
        if now >= self.next_sync {
            self.next_sync = now + Duration::from_secs(1);
            self.core.cluster_tick(&mut self.net);
        }
        engine.tick(self.poll.registry(), now);
        loop {
            for command in std::mem::take(&mut self.net.commands) {
                engine.submit(command, now);
            }
            let events = engine.take_events();
            if events.is_empty() {
                break;
            }
            let ts = self.net.stamp();
            for event in events {
                self.core.on_engine(event, ts.as_str(), &mut self.net);
            }
        }
        engine.flush(self.poll.registry(), now);
    }

    /// A readable connection (or one with input left from an earlier turn).
    fn read(&mut self, key: usize) {
        Reading {
            net: &mut self.net,
            core: &mut self.core,
            scratch: &mut self.scratch,
            shutting_down: self.shutdown_deadline.is_some(),
            started: self.started,
            engine: self.engine.as_ref(),
        }
        .read(key);
    }
}
