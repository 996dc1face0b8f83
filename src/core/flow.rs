//! The overflow policy (§3): whether an event joins a subscriber's queue,
//! pushes older events out, or gets the subscriber disconnected.

use bytes::Bytes;

use super::broker::Subscriber;
use super::{ConnId, Effects, Flow};
use crate::config::OverflowPolicy;
use crate::outbound::{Kind, Outbound};
use crate::protocol;
use crate::refusal::Refusal;

/// What offering one event to one connection did.
#[derive(Debug, PartialEq, Eq)]
pub enum Offer {
    Queued,
    /// drop-oldest: `dropped` events went (the new one among them when `!queued`).
    Dropped {
        queued: bool,
        dropped: u64,
    },
    /// disconnect: the connection is closing as a slow consumer.
    Disconnected,
    /// Not an open WebSocket (closing, or gone).
    Skipped,
}

/// What one fan-out did.
#[derive(Debug, Default)]
pub struct Tally {
    pub delivered: u64,
    pub dropped: u64,
    pub disconnected: Vec<ConnId>,
}

impl Tally {
    pub fn add(&mut self, conn: ConnId, offer: Offer) {
        match offer {
            Offer::Queued => self.delivered += 1,
            Offer::Dropped { queued, dropped } => {
                self.delivered += u64::from(queued);
                self.dropped += dropped;
            }
            Offer::Disconnected => self.disconnected.push(conn),
            Offer::Skipped => {}
        }
    }
}

/// Offers one event frame to every subscriber.
pub fn offer_all(
    subscribers: &[Subscriber],
    frame: &Bytes,
    flow: Flow,
    ts: &str,
    fx: &mut impl Effects,
) -> Tally {
    let mut tally = Tally::default();
    for sub in subscribers {
        tally.add(sub.conn, offer(fx, sub.conn, frame, flow, ts));
    }
    tally
}

/// Offers one event (live or replayed) to one connection's queue.
pub fn offer(fx: &mut impl Effects, conn: ConnId, frame: &Bytes, flow: Flow, ts: &str) -> Offer {
    let Some(out) = fx.outbox(conn) else {
        return Offer::Skipped;
    };
    if out.len() + frame.len() <= flow.limit {
        out.push(frame.clone(), Kind::Event);
        return Offer::Queued;
    }
    // The limit is for bytes the client has not taken: let the kernel take
    // what it will before judging.
    fx.drain(conn);
    let Some(out) = fx.outbox(conn) else {
        return Offer::Skipped;
    };
    if out.len() + frame.len() <= flow.limit {
        out.push(frame.clone(), Kind::Event);
        return Offer::Queued;
    }
    match flow.policy {
        OverflowPolicy::Disconnect => {
            let why = Refusal::SlowConsumer;
            let code = protocol::ErrorCode::SlowConsumer;
            fx.send(conn, protocol::error(None, None, code, &why.message(), ts));
            fx.close(conn, why);
            Offer::Disconnected
        }
        OverflowPolicy::DropOldest => {
            let mut dropped = out.drop_oldest_events(frame.len(), flow.limit) as u64;
            let queued = out.len() + frame.len() <= flow.limit;
            if queued {
                out.push(frame.clone(), Kind::Event);
            } else {
                dropped += 1;
            }
            out.dropped += dropped;
            Offer::Dropped { queued, dropped }
        }
    }
}

/// Once a queue has drained, the `messages_dropped` notice for the events
/// drop-oldest took from it since the client was last told.
pub fn drop_notice(out: &mut Outbound, ts: &str) -> Option<Bytes> {
    if out.dropped == 0 || !out.is_empty() {
        return None;
    }
    let notice = protocol::messages_dropped(out.dropped, ts);
    out.dropped = 0;
    Some(notice)
}
