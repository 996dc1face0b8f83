//! One min-heap of connection deadlines feeding the poll timeout.
//!
//! Entries are hints: when one fires, the loop recomputes the connection's real
//! deadline from its state (activity pushes deadlines later without touching
//! the heap) and re-arms it if it has not passed. Each connection keeps at most
//! a few entries: a new one is pushed only when its deadline moves earlier.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use super::Server;
use super::conn::State;
use crate::core::ConnId;
use crate::http;
use crate::outbound::Kind;
use crate::protocol;
use crate::refusal::Refusal;
use crate::wire::frame;

#[derive(Debug, Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<(Instant, ConnId)>>,
}

impl Timers {
    pub fn push(&mut self, at: Instant, conn: ConnId) {
        self.heap.push(Reverse((at, conn)));
    }

    /// The earliest deadline.
    pub fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Drops the entries of connections that are gone. Without this, a heap
    /// under connection churn holds an entry per connection of the last
    /// idle-timeout period, however few are open now.
    pub fn retain(&mut self, mut alive: impl FnMut(ConnId) -> bool) {
        self.heap.retain(|Reverse((_, id))| alive(*id));
        self.heap.shrink_to(self.heap.len() * 2);
    }

    /// Removes and returns an entry that is due at `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<(Instant, ConnId)> {
        match self.heap.peek() {
            Some(Reverse((at, _))) if *at <= now => self.heap.pop().map(|Reverse(e)| e),
            _ => None,
        }
    }
}

impl Server {
    pub(super) fn run_timers(&mut self) {
        if self.net.now >= self.next_heartbeat {
            self.heartbeat();
            self.next_heartbeat = self.net.now + self.net.config.heartbeat;
        }
        while let Some((at, id)) = self.net.timers.pop_due(self.net.now) {
            let net = &mut self.net;
            let Some(conn) = net.conns.get_mut(id.key()).filter(|c| c.id == id) else {
                continue;
            };
            if conn.is_dead() {
                continue;
            }
            if conn.timer_at == Some(at) {
                conn.timer_at = None;
            }
            if conn.deadline(&net.config) > net.now {
                self.net.schedule(id.key());
                continue;
            }
            self.expire(id);
        }
    }

    fn expire(&mut self, id: ConnId) {
        let key = id.key();
        match &self.net.conns[key].state {
            State::Http(http) if http.started.is_some() => {
                let why = Refusal::RequestTimeout;
                self.core.counters.reject(&why);
                self.net.close_http(key, http::refusal(&why, true));
                // A client that sends too slowly gets little time to read the answer.
                if let State::Closing(c) = &mut self.net.conns[key].state {
                    c.deadline = self.net.now + Duration::from_millis(200);
                }
            }
            State::WebSocket(_) => {
                let why = Refusal::IdleTimeout;
                self.core.counters.reject(&why);
                self.core.close(id, why, &mut self.net);
            }
            // Idle keep-alive connection, or a closing one out of time.
            _ => self.net.kill(key),
        }
    }

    fn heartbeat(&mut self) {
        let ts = self.net.stamp();
        let info = protocol::info(None, "ping", ts.as_str());
        let ping = frame::ping_frame();
        let net = &mut self.net;
        for (key, conn) in net.conns.iter_mut() {
            if matches!(conn.state, State::WebSocket(_)) {
                conn.push(ping.clone(), Kind::Control);
                conn.push(info.clone(), Kind::Control);
                conn.want_flush(key, &mut net.to_flush);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: usize) -> ConnId {
        ConnId::new(n, 0)
    }

    #[test]
    fn pops_due_entries_in_order() {
        let t0 = Instant::now();
        let mut timers = Timers::default();
        timers.push(t0 + Duration::from_secs(3), id(3));
        timers.push(t0 + Duration::from_secs(1), id(1));
        timers.push(t0 + Duration::from_secs(2), id(2));
        assert_eq!(timers.next(), Some(t0 + Duration::from_secs(1)));
        let now = t0 + Duration::from_secs(2);
        assert_eq!(timers.pop_due(now).map(|e| e.1), Some(id(1)));
        assert_eq!(timers.pop_due(now).map(|e| e.1), Some(id(2)));
        assert_eq!(timers.pop_due(now), None);
        assert_eq!(timers.next(), Some(t0 + Duration::from_secs(3)));
    }

    #[test]
    fn entries_of_gone_connections_can_be_dropped() {
        let t0 = Instant::now();
        let mut timers = Timers::default();
        for n in 0..1000 {
            timers.push(t0 + Duration::from_secs(n as u64), id(n));
        }
        timers.retain(|c| c.key() % 100 == 7);
        assert_eq!(timers.len(), 10);
        assert_eq!(timers.next(), Some(t0 + Duration::from_secs(7)));
        assert!(timers.heap.capacity() <= 20 + 8);
    }
}
