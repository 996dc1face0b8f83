//! Writing: every connection with pending output is flushed once per turn,
//! several frames per `writev`, at most `WRITE_CAP` bytes each, and registers
//! for WRITABLE only while bytes remain.

use std::net::Shutdown;

use mio::Token;

use super::conn::State;
use super::net::Net;
use crate::core::drop_notice;
use crate::outbound::{Flush, Kind};

/// Bytes written to one socket per loop turn, so one fast reader cannot starve the rest.
const WRITE_CAP: usize = 1 << 20;

impl Net {
    pub fn flush_all(&mut self) {
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
        if conn.is_dead() {
            return;
        }
        if !conn.write_blocked {
            let mut result = self.write_out(key, WRITE_CAP);
            // drop-oldest: the queue drained, so tell the client what it lost.
            let conn = &self.conns[key];
            if result == Flush::Drained && conn.outbound.dropped > 0 && !conn.is_closing() {
                let ts = self.stamp();
                let conn = &mut self.conns[key];
                if let Some(notice) = drop_notice(&mut conn.outbound, ts.as_str()) {
                    conn.push(notice, Kind::Control);
                    result = self.write_out(key, WRITE_CAP);
                }
            }
            let conn = &mut self.conns[key];
            match result {
                Flush::Closed => {
                    self.kill(key);
                    return;
                }
                Flush::Pending => {}
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
        let conn = &mut self.conns[key];
        if conn.read_paused && conn.outbound.len() <= self.config.outbound_limit {
            conn.read_paused = false;
            self.again.push(key);
        }
        let wanted = conn.wanted_interest();
        if wanted != conn.interest {
            conn.interest = wanted;
            if self
                .registry
                .reregister(&mut conn.socket, Token(key), wanted)
                .is_err()
            {
                self.kill(key);
            }
        }
    }
}
