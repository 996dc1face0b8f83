//! One client connection: its socket, its outbound queue, and its state
//! (`Http` → `WebSocket` → `Closing` → `Dead`), each state owning its buffers.
//! [`Conn::transition`] is the one place a state changes.

use std::time::Instant;

use bytes::Bytes;
use mio::Interest;
use mio::net::TcpStream;

use crate::config::Config;
use crate::core::ConnId;
use crate::outbound::{Kind, Outbound};
use crate::wire::decoder::Decoder;

pub enum State {
    /// Reading HTTP requests (REST, or a handshake not yet complete).
    Http(Http),
    WebSocket(Ws),
    /// Sending what is queued, then hanging up; nothing read is acted on.
    Closing(Closing),
    /// Gone: removed from the slab at the end of the loop turn.
    Dead,
}

#[derive(Default)]
pub struct Http {
    /// Bytes of requests not yet handled.
    pub buf: Vec<u8>,
    /// When the request now arriving started (slow requests are cut off).
    pub started: Option<Instant>,
    /// Cluster mode: a request is waiting on Redis (and whether its answer
    /// closes the connection); the requests behind it wait their turn.
    pub awaiting: Option<bool>,
}

/// An open WebSocket's reading state.
#[derive(Default)]
pub struct Ws {
    /// Bytes of a frame not yet whole (empty between frames, the usual case).
    pub held: Vec<u8>,
    pub decoder: Decoder,
}

pub struct Closing {
    pub deadline: Instant,
    /// Whatever is queued has been written and our side is shut: waiting for the peer's EOF.
    pub lingering: bool,
    /// It was a WebSocket (it still counts as one until it is gone).
    pub websocket: bool,
}

/// A state change asked of a connection.
pub enum Next {
    Upgrade(Ws),
    /// Close once what is queued is sent, by `deadline` at the latest.
    Close(Instant),
    Kill,
}

/// What a transition changed, for the loop's counts.
#[derive(Debug, PartialEq, Eq)]
pub enum Changed {
    Nothing,
    /// It became a WebSocket.
    Upgraded,
    /// It started closing.
    Closing,
    /// It is gone; `websocket` when it had been one.
    Died {
        websocket: bool,
    },
}

pub struct Conn {
    pub id: ConnId,
    pub socket: TcpStream,
    pub outbound: Outbound,
    pub state: State,
    /// Last time bytes arrived.
    pub last_seen: Instant,
    /// The earliest timer entry scheduled for this connection.
    pub timer_at: Option<Instant>,
    /// Interest currently registered with the poll.
    pub interest: Interest,
    /// The last write hit `WouldBlock`: wait for WRITABLE.
    pub write_blocked: bool,
    /// In the loop's list of connections to flush this turn.
    pub flush_queued: bool,
    /// Reading stopped because the outbound queue is over its limit.
    pub read_paused: bool,
}

impl Conn {
    pub fn new(id: ConnId, socket: TcpStream, now: Instant) -> Conn {
        Conn {
            id,
            socket,
            outbound: Outbound::default(),
            state: State::Http(Http::default()),
            last_seen: now,
            timer_at: None,
            interest: Interest::READABLE,
            write_blocked: false,
            flush_queued: false,
            read_paused: false,
        }
    }

    /// Performs a state change; illegal ones (upgrading anything but an HTTP
    /// connection, reviving a dead one) change nothing.
    pub fn transition(&mut self, next: Next) -> Changed {
        let websocket = self.is_websocket();
        match (next, &mut self.state) {
            (_, State::Dead) => Changed::Nothing,
            (Next::Kill, _) => {
                self.state = State::Dead;
                Changed::Died { websocket }
            }
            (Next::Upgrade(ctx), State::Http(_)) => {
                self.state = State::WebSocket(ctx);
                Changed::Upgraded
            }
            (Next::Upgrade(_), _) => Changed::Nothing,
            (Next::Close(deadline), State::Closing(c)) => {
                c.deadline = c.deadline.min(deadline);
                Changed::Nothing
            }
            (Next::Close(deadline), _) => {
                self.state = State::Closing(Closing {
                    deadline,
                    lingering: false,
                    websocket,
                });
                Changed::Closing
            }
        }
    }

    /// Open as a WebSocket, or closing after having been one.
    pub fn is_websocket(&self) -> bool {
        match &self.state {
            State::WebSocket(_) => true,
            State::Closing(c) => c.websocket,
            State::Http(_) | State::Dead => false,
        }
    }

    /// When this connection must be dealt with, derived from its state.
    pub fn deadline(&self, config: &Config) -> Instant {
        match &self.state {
            State::Http(Http {
                started: Some(t), ..
            }) => *t + config.request_timeout,
            State::Http(_) => self.last_seen + config.keepalive_timeout,
            State::WebSocket(_) => self.last_seen + config.idle_timeout,
            State::Closing(c) => c.deadline,
            State::Dead => self.last_seen,
        }
    }

    /// The interest this connection needs: always readable (requests, frames,
    /// EOF), writable only while bytes wait on a full socket.
    pub fn wanted_interest(&self) -> Interest {
        if self.write_blocked {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        }
    }

    pub fn is_closing(&self) -> bool {
        matches!(self.state, State::Closing(_))
    }

    pub fn is_dead(&self) -> bool {
        matches!(self.state, State::Dead)
    }

    /// Puts this connection (slab slot `key`) on the turn's flush list, once.
    pub fn want_flush(&mut self, key: usize, to_flush: &mut Vec<usize>) {
        if !self.flush_queued && !self.is_dead() {
            self.flush_queued = true;
            to_flush.push(key);
        }
    }

    pub fn push(&mut self, bytes: Bytes, kind: Kind) {
        self.outbound.push(bytes, kind);
    }
}
