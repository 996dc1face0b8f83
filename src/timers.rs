//! One min-heap of connection deadlines feeding the poll timeout.
//!
//! Entries are hints: when one fires, the loop recomputes the connection's real
//! deadline from its state (activity pushes deadlines later without touching
//! the heap) and re-arms it if it has not passed. Each connection keeps at most
//! a few entries: a new one is pushed only when its deadline moves earlier.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use crate::broker::ConnId;

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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn pops_due_entries_in_order() {
        let t0 = Instant::now();
        let mut timers = Timers::default();
        timers.push(t0 + Duration::from_secs(3), 3);
        timers.push(t0 + Duration::from_secs(1), 1);
        timers.push(t0 + Duration::from_secs(2), 2);
        assert_eq!(timers.next(), Some(t0 + Duration::from_secs(1)));
        let now = t0 + Duration::from_secs(2);
        assert_eq!(timers.pop_due(now).map(|e| e.1), Some(1));
        assert_eq!(timers.pop_due(now).map(|e| e.1), Some(2));
        assert_eq!(timers.pop_due(now), None);
        assert_eq!(timers.next(), Some(t0 + Duration::from_secs(3)));
    }

    #[test]
    fn entries_of_gone_connections_can_be_dropped() {
        let t0 = Instant::now();
        let mut timers = Timers::default();
        for id in 0..1000 {
            timers.push(t0 + Duration::from_secs(id), id);
        }
        timers.retain(|id| id % 100 == 7);
        assert_eq!(timers.len(), 10);
        assert_eq!(timers.next(), Some(t0 + Duration::from_secs(7)));
        assert!(timers.heap.capacity() <= 20 + 8);
    }
}
