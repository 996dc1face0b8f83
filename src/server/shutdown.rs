//! Graceful shutdown (§7): stop accepting, tell every WebSocket, answer the
//! requests already arriving, flush for up to the shutdown timeout.

use super::conn::{Next, State};
use super::{Server, Stopped};
use crate::outbound::Kind;
use crate::protocol;
use crate::refusal::Refusal;
use std::time::Duration;

/// A signal this soon after the first is the same request, not a second one:
/// `timeout`, `tini -g` and a terminal's Ctrl-C deliver one signal both to the
/// process and to its process group, microseconds apart.
pub(super) const SIGNAL_REPEAT: Duration = Duration::from_secs(1);

impl Server {
    /// SIGTERM or SIGINT: the first begins a graceful shutdown; one that comes
    /// later than `SIGNAL_REPEAT` after it (or during a shutdown begun by the
    /// library handle) ends the loop at once.
    pub(super) fn signal(&mut self) -> Option<Stopped> {
        let count = self.signals.as_mut().map_or(0, |s| s.pending().count());
        if count == 0 {
            return None;
        }
        let now = self.net.now;
        match self.first_signal {
            None if self.shutdown_deadline.is_none() => {
                log::info!("signal received: shutting down gracefully");
                self.first_signal = Some(now);
                self.begin_shutdown();
                None
            }
            Some(first) if now.duration_since(first) < SIGNAL_REPEAT => {
                log::info!(
                    "signal repeated within {} ms of the first: taken as the same request, still shutting down gracefully",
                    SIGNAL_REPEAT.as_millis()
                );
                None
            }
            _ => {
                log::warn!("second signal: exiting at once");
                Some(Stopped::Forced)
            }
        }
    }

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
                    self.core.close(id, Refusal::ServerShutdown, &mut self.net);
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
