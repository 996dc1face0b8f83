//! Graceful shutdown (§7): stop accepting, tell every WebSocket, answer the
//! requests already arriving, flush for up to the shutdown timeout.

use super::Server;
use super::conn::{Next, State};
use crate::outbound::Kind;
use crate::protocol;
use crate::refusal::Refusal;

impl Server {
    pub(super) fn begin_shutdown(&mut self) {
        if self.shutdown_deadline.is_some() {
            return;
        }
        let deadline = self.net.now + self.net.config.shutdown_timeout;
        self.shutdown_deadline = Some(deadline);
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        let ts = self.net.stamp();
        let info = protocol::info(None, "server_shutdown", ts.as_str());
        let keys: Vec<usize> = self.net.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            let conn = &mut self.net.conns[key];
            match &conn.state {
                State::WebSocket(_) => {
                    conn.push(info.clone(), Kind::Control);
                    let id = conn.id;
                    self.close_ws(id, Refusal::ServerShutdown);
                }
                State::Http(http) if http.buf.is_empty() && conn.outbound.is_empty() => {
                    self.net.kill(key)
                }
                // A request still arriving is read and answered; the answer
                // carries `Connection: close` (see `handle_request`).
                State::Http(http) if !http.buf.is_empty() => {}
                // A response on its way finishes, then the connection closes.
                _ => {
                    let pending = !conn.outbound.is_empty();
                    self.net.transition(key, Next::Close(deadline));
                    if pending {
                        self.net.queue_flush(key);
                    }
                }
            }
        }
    }
}
