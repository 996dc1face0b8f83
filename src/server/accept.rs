//! Accepting connections, admission at `--max-connections`, and reaping the dead.

use std::io::ErrorKind;
use std::net::Shutdown;

use mio::net::TcpStream;
use mio::{Interest, Token};

use super::Server;
use super::conn::Conn;
use crate::http;
use crate::io;
use crate::refusal::Refusal;

impl Server {
    pub(super) fn accept_all(&mut self) {
        loop {
            let Some(listener) = &self.listener else {
                return;
            };
            match listener.accept() {
                Ok((socket, _)) => self.admit(socket),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::Interrupted | ErrorKind::ConnectionAborted
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
        if self.net.conns.len() >= self.net.config.max_connections {
            let why = Refusal::MaxConnections;
            self.core.counters.reject(&why);
            let _ = io::write(&mut socket, &http::refusal(&why, true));
            let _ = socket.shutdown(Shutdown::Both);
            return;
        }
        let _ = socket.set_nodelay(true);
        let send_buffer = self.net.config.socket_send_buffer;
        if send_buffer > 0
            && let Err(e) = crate::sys::set_send_buffer(&socket, send_buffer)
        {
            log::warn!("could not set --socket-send-buffer on a connection: {e}");
        }
        let key = self.net.conns.vacant_key();
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut socket, Token(key), Interest::READABLE)
        {
            log::warn!("could not register a connection: {e}");
            return;
        }
        let id = self.net.next_id(key);
        self.net.conns.insert(Conn::new(id, socket, self.net.now));
        self.net.io.connections_accepted += 1;
        self.net.schedule(key);
    }

    /// Removes the connections that died this turn, with every trace of them.
    pub(super) fn reap(&mut self) {
        for key in std::mem::take(&mut self.net.to_reap) {
            if !self.net.conns.get(key).is_some_and(|c| c.is_dead()) {
                continue;
            }
            let mut conn = self.net.conns.remove(key);
            let _ = self.poll.registry().deregister(&mut conn.socket);
            self.core.remove_conn(conn.id);
        }
        // Compact once stale entries outnumber live connections: amortized O(1).
        if self.net.timers.len() > 2 * self.net.conns.len() + 1024 {
            let conns = &self.net.conns;
            self.net.timers.retain(|id| {
                conns
                    .get(id.key())
                    .is_some_and(|c| c.id == id && !c.is_dead())
            });
        }
        if self.accept_blocked && self.net.conns.len() < self.net.config.max_connections {
            self.accept_blocked = false;
            self.accept_all();
        }
    }
}
