//! The bench's event loop: many WebSocket clients on one `mio::Poll`, a shared
//! read buffer, and the integrity and latency accounting of every event.

use std::collections::BTreeMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};
use slab::Slab;

mod inbound;

use super::hist::Histogram;
use super::sys;
use super::wire::{self, Msg, Reader, Stamp};
use crate::io::Io;
use crate::wire::client as ws;
use crate::wire::frame;
use crate::wire::handshake;

/// Bytes read from one socket per loop turn before the others get a go.
const READ_CAP: usize = 1 << 20;
/// Longest the loop sleeps when it has nothing scheduled.
const IDLE_WAIT: Duration = Duration::from_millis(10);
/// How far back a subscriber remembers which sequence numbers it has seen,
/// to tell a late duplicate from a reordered event.
const SEEN_WINDOW: u64 = 128;

/// One server (or cluster node) to connect to.
#[derive(Clone, Debug)]
pub struct Target {
    pub addr: SocketAddr,
    /// The `Host` header.
    pub host: String,
    pub ws_path: String,
}

/// Where to connect and what to send.
pub struct Plan {
    /// Where publishers connect (publisher i to target i mod n).
    pub pub_targets: Vec<Target>,
    /// Where subscribers connect, round-robin.
    pub sub_targets: Vec<Target>,
    /// The keys publishers and subscribers send (`X-API-Key`).
    pub pub_key: Option<String>,
    pub sub_key: Option<String>,
    pub topics: Vec<String>,
    /// Payload bytes per publish.
    pub size: usize,
    /// Publishes a publisher may have unanswered.
    pub window: u64,
    /// Publishes per second per publisher; `None` = as fast as the windows allow.
    pub rate: Option<f64>,
    /// Events published but not yet received, over all subscribers, before
    /// publishers wait: keeps the bench from burying a server it cannot read
    /// fast enough, which would measure the bench instead of the server.
    pub max_backlog: u64,
    /// Each publish waits until every subscriber has it (for `conns`).
    pub lockstep: bool,
    /// Publishers there will be (subscribers keep one stream per publisher).
    pub publishers: u64,
    /// Publishes per publisher, then stop; `None` = until told.
    pub count: Option<u64>,
    /// Source addresses to spread connections over; empty = the system's choice.
    pub sources: Vec<Ipv4Addr>,
    /// Connections being opened at once.
    pub connect_batch: usize,
    pub max_frame: usize,
    /// Poll without sleeping, so the bench's own wake-ups do not show in the
    /// latencies it measures (costs a core).
    pub spin: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Subscriber {
        topic: usize,
    },
    /// Subscribes, then never reads again.
    Stalled {
        topic: usize,
    },
    Publisher {
        id: u64,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Upgrading,
    Subscribing,
    Ready,
    Closed,
}

/// One publisher's events as one subscriber sees them.
#[derive(Default, Clone)]
struct Stream {
    max: u64,
    /// Bit i: sequence number `max - i` has arrived.
    seen: u128,
}

enum Verdict {
    InOrder,
    Late,
    Duplicate,
}

impl Stream {
    fn accept(&mut self, seq: u64) -> Verdict {
        if seq > self.max {
            let shift = seq - self.max;
            self.seen = if shift >= 128 { 0 } else { self.seen << shift } | 1;
            self.max = seq;
            return Verdict::InOrder;
        }
        let back = self.max - seq;
        if back >= SEEN_WINDOW {
            return Verdict::Late;
        }
        let bit = 1u128 << back;
        if self.seen & bit != 0 {
            return Verdict::Duplicate;
        }
        self.seen |= bit;
        Verdict::Late
    }
}

struct Client {
    sock: Option<mio::net::TcpStream>,
    role: Role,
    phase: Phase,
    out: Vec<u8>,
    out_at: usize,
    /// Bytes of an incomplete handshake answer or frame.
    inbuf: Vec<u8>,
    /// Its reading state between frames (a fragmented message).
    reader: ws::Reader,
    masks: frame::Masks,
    closed_by_server: bool,
    close_code: Option<u16>,
    // A subscriber's view.
    /// Publishes to its topic acknowledged when the server closed it.
    expected_at_close: Option<u64>,
    streams: Vec<Stream>,
    distinct: u64,
    // A publisher's progress.
    sent: u64,
    answered: u64,
    due: u64,
    /// When the publish being waited for (lockstep) went out.
    lockstep_sent: Option<u64>,
}

/// Everything counted over a run.
#[derive(Default)]
pub struct Tally {
    pub sent: u64,
    pub acked: u64,
    pub received: u64,
    pub duplicates: u64,
    pub order_violations: u64,
    pub foreign: u64,
    pub dropped_reported: u64,
    pub errors: BTreeMap<String, u64>,
    pub server_closed: u64,
    pub close_codes: BTreeMap<u16, u64>,
    pub latency: Histogram,
    /// Lockstep: publish to last delivery.
    pub spread: Histogram,
    /// Events that reached stalled subscribers when they were finally read.
    pub stalled_received: u64,
}

pub struct Engine {
    plan: Plan,
    poll: Poll,
    events: Events,
    clients: Slab<Client>,
    reader: Reader,
    rbuf: Vec<u8>,
    scratch: Vec<u8>,
    start: Instant,
    again: Vec<usize>,
    publishers: Vec<usize>,
    /// Subscribers (not stalled) per topic that are still connected.
    fanout: Vec<u64>,
    /// Publishes sent and acknowledged per topic.
    topic_sent: Vec<u64>,
    topic_acked: Vec<u64>,
    /// Events sent but not yet received by the subscribers still connected.
    backlog: u64,
    pending_opens: Vec<Role>,
    opening: usize,
    publishing: bool,
    pub measuring: bool,
    pub tally: Tally,
    next_source: usize,
    /// Subscribers opened so far, to spread them over the sub targets.
    next_sub_target: usize,
}

impl Engine {
    pub fn new(plan: Plan) -> io::Result<Engine> {
        let topics = plan.topics.len();
        Ok(Engine {
            plan,
            poll: Poll::new()?,
            events: Events::with_capacity(1024),
            clients: Slab::new(),
            reader: Reader::default(),
            rbuf: vec![0; 256 << 10],
            scratch: Vec::with_capacity(4096),
            start: Instant::now(),
            again: Vec::new(),
            publishers: Vec::new(),
            fanout: vec![0; topics],
            topic_sent: vec![0; topics],
            topic_acked: vec![0; topics],
            backlog: 0,
            pending_opens: Vec::new(),
            opening: 0,
            publishing: false,
            measuring: false,
            tally: Tally::default(),
            next_source: 0,
            next_sub_target: 0,
        })
    }

    fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    /// Opens `roles` (in batches) and waits until each is subscribed or ready.
    pub fn open(&mut self, roles: &[Role], timeout: Duration) -> Result<Duration, String> {
        let began = Instant::now();
        self.pending_opens.extend(roles.iter().rev());
        let deadline = began + timeout;
        while !self.pending_opens.is_empty() || self.opening > 0 {
            while self.opening < self.plan.connect_batch {
                let Some(role) = self.pending_opens.pop() else {
                    break;
                };
                let target = self.target(role);
                self.connect(role, &target)
                    .map_err(|e| format!("cannot connect to {}: {e}", target.addr))?;
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{} connections still opening after {:.0} s",
                    self.opening + self.pending_opens.len(),
                    timeout.as_secs_f64()
                ));
            }
            self.pump(IDLE_WAIT)
                .map_err(|e| format!("poll failed: {e}"))?;
        }
        let failed = self
            .clients
            .iter()
            .filter(|(_, c)| c.phase == Phase::Closed)
            .count();
        if failed > 0 {
            return Err(format!(
                "{failed} of {} connections failed to open ({})",
                self.clients.len(),
                self.describe_errors()
            ));
        }
        Ok(began.elapsed())
    }

    fn describe_errors(&self) -> String {
        let mut parts: Vec<String> = self
            .tally
            .errors
            .iter()
            .map(|(code, n)| format!("{code} ×{n}"))
            .collect();
        if self.tally.server_closed > 0 {
            parts.push(format!("closed by server ×{}", self.tally.server_closed));
        }
        if parts.is_empty() {
            "no answer".into()
        } else {
            parts.join(", ")
        }
    }

    /// Publisher i goes to pub target i mod n; subscribers take the sub
    /// targets in turn.
    fn target(&mut self, role: Role) -> Target {
        match role {
            Role::Publisher { id } => {
                let targets = &self.plan.pub_targets;
                targets[id as usize % targets.len()].clone()
            }
            Role::Subscriber { .. } | Role::Stalled { .. } => {
                let targets = &self.plan.sub_targets;
                let target = targets[self.next_sub_target % targets.len()].clone();
                self.next_sub_target += 1;
                target
            }
        }
    }

    fn connect(&mut self, role: Role, target: &Target) -> io::Result<()> {
        let source = (!self.plan.sources.is_empty()).then(|| {
            self.next_source = (self.next_source + 1) % self.plan.sources.len();
            self.plan.sources[self.next_source]
        });
        let mut sock = sys::connect(source, target.addr)?;
        let _ = sock.set_nodelay(true);
        let entry = self.clients.vacant_entry();
        let key = entry.key();
        self.poll.registry().register(
            &mut sock,
            Token(key),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        let api_key = match role {
            Role::Publisher { .. } => &self.plan.pub_key,
            _ => &self.plan.sub_key,
        };
        let mut out = Vec::with_capacity(256);
        // The bench does not check the answer's accept key: one fixed key will do.
        let ws_key = "dGhlIHNhbXBsZSBub25jZQ==";
        handshake::write_request(
            &mut out,
            &target.ws_path,
            &target.host,
            api_key.as_deref(),
            ws_key,
        );
        entry.insert(Client {
            sock: Some(sock),
            role,
            phase: Phase::Upgrading,
            out,
            out_at: 0,
            inbuf: Vec::new(),
            reader: ws::Reader::default(),
            masks: frame::Masks::new((key as u32).wrapping_mul(0x9E37_79B9)),
            closed_by_server: false,
            close_code: None,
            expected_at_close: None,
            streams: Vec::new(),
            distinct: 0,
            sent: 0,
            answered: 0,
            due: 0,
            lockstep_sent: None,
        });
        self.opening += 1;
        if let Role::Publisher { .. } = role {
            self.publishers.push(key);
        }
        Ok(())
    }

    /// Runs the loop for `d`, publishing when `publishing`.
    pub fn run_for(&mut self, d: Duration, publishing: bool) -> io::Result<()> {
        self.set_publishing(publishing);
        let until = Instant::now() + d;
        while Instant::now() < until {
            self.pump(until.saturating_duration_since(Instant::now()))?;
        }
        Ok(())
    }

    fn set_publishing(&mut self, on: bool) {
        if on && !self.publishing {
            let now = self.now();
            for &key in &self.publishers {
                self.clients[key].due = now;
            }
        }
        self.publishing = on;
    }

    fn all_sent(&self) -> bool {
        let Some(count) = self.plan.count else {
            return false;
        };
        self.publishers
            .iter()
            .all(|&k| self.clients[k].sent >= count || self.clients[k].phase == Phase::Closed)
    }

    /// Every publish answered and every event received (or its subscriber gone).
    fn settled(&self) -> bool {
        self.backlog == 0
            && self.publishers.iter().all(|&k| {
                let c = &self.clients[k];
                c.answered >= c.sent || c.phase == Phase::Closed
            })
    }

    /// Stops publishing and waits for what is in flight, giving up after
    /// `quiet` without progress.
    pub fn drain(&mut self, quiet: Duration) -> io::Result<()> {
        self.set_publishing(false);
        self.run_while(quiet, |e| !e.settled())
    }

    /// Publishes until `count` is reached (with `--count`), then drains.
    pub fn publish_count(&mut self, quiet: Duration) -> io::Result<()> {
        self.set_publishing(true);
        self.run_while(quiet, |e| !e.all_sent())?;
        self.drain(quiet)
    }

    /// Runs the loop while `busy` holds, giving up after `quiet` without an
    /// event, answer or error arriving.
    fn run_while(&mut self, quiet: Duration, busy: impl Fn(&Engine) -> bool) -> io::Result<()> {
        let progress = |e: &Engine| {
            let t = &e.tally;
            t.received + t.acked + t.errors.values().sum::<u64>()
        };
        let mut last = progress(self);
        let mut last_progress = Instant::now();
        while busy(self) {
            self.pump(IDLE_WAIT)?;
            let now = progress(self);
            if now != last {
                last = now;
                last_progress = Instant::now();
            } else if last_progress.elapsed() >= quiet {
                break;
            }
        }
        Ok(())
    }

    /// Reads what the stalled subscribers have waiting, until they have been
    /// quiet for `quiet`.
    pub fn read_stalled(&mut self, quiet: Duration) -> io::Result<()> {
        let stalled: Vec<usize> = self
            .clients
            .iter()
            .filter(|(_, c)| matches!(c.role, Role::Stalled { .. }) && c.phase == Phase::Ready)
            .map(|(k, _)| k)
            .collect();
        let mut last = u64::MAX;
        let mut last_progress = Instant::now();
        while last_progress.elapsed() < quiet {
            for &key in &stalled {
                self.read(key, true);
            }
            self.pump(IDLE_WAIT)?;
            if self.tally.stalled_received != last {
                last = self.tally.stalled_received;
                last_progress = Instant::now();
            }
        }
        Ok(())
    }

    /// What became of each stalled subscriber: its close code, and whether
    /// the server closed it.
    pub fn stalled_outcomes(&self) -> Vec<(Option<u16>, bool)> {
        self.clients
            .iter()
            .filter(|(_, c)| matches!(c.role, Role::Stalled { .. }))
            .map(|(_, c)| (c.close_code, c.closed_by_server))
            .collect()
    }

    /// Events every subscriber should have had: each acknowledged publish to
    /// its topic (for a subscriber the server closed, those acknowledged
    /// before it closed).
    pub fn expected(&self) -> u64 {
        self.clients
            .iter()
            .filter_map(|(_, c)| match c.role {
                Role::Subscriber { topic } if c.phase != Phase::Upgrading => {
                    Some(c.expected_at_close.unwrap_or(self.topic_acked[topic]))
                }
                _ => None,
            })
            .sum()
    }

    /// Events the subscribers received, counting each once.
    pub fn distinct(&self) -> u64 {
        self.clients
            .iter()
            .filter(|(_, c)| matches!(c.role, Role::Subscriber { .. }))
            .map(|(_, c)| c.distinct)
            .sum()
    }

    pub fn connections(&self) -> usize {
        self.clients
            .iter()
            .filter(|(_, c)| c.sock.is_some())
            .count()
    }

    /// Closes every connection (a close frame, then the socket).
    pub fn close_all(&mut self) {
        let keys: Vec<usize> = self.clients.iter().map(|(k, _)| k).collect();
        for key in keys {
            let mask = self.next_mask(key);
            let client = &mut self.clients[key];
            if let Some(sock) = client.sock.as_mut() {
                let mut close = Vec::with_capacity(8);
                frame::write_close(&mut close, Some((1000, "")), mask);
                let _ = crate::io::write(sock, &close);
            }
            client.phase = Phase::Closed;
            client.sock = None;
        }
    }

    // ---- the loop ----

    fn pump(&mut self, max_wait: Duration) -> io::Result<()> {
        let mut wait = max_wait.min(IDLE_WAIT);
        if !self.again.is_empty() {
            wait = Duration::ZERO;
        } else if self.publishing && self.plan.rate.is_some() {
            let now = self.now();
            let next = self
                .publishers
                .iter()
                .map(|&k| self.clients[k].due)
                .min()
                .unwrap_or(now);
            wait = wait.min(Duration::from_nanos(next.saturating_sub(now)));
        }
        if self.plan.spin {
            wait = Duration::ZERO;
        }
        let mut events = std::mem::replace(&mut self.events, Events::with_capacity(0));
        match self.poll.poll(&mut events, Some(wait)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        for key in std::mem::take(&mut self.again) {
            self.read(key, false);
        }
        for event in events.iter() {
            let key = event.token().0;
            if event.is_writable() {
                self.flush(key);
            }
            if event.is_readable() || event.is_read_closed() || event.is_error() {
                self.read(key, false);
            }
        }
        self.events = events;
        if self.publishing {
            self.publish_due();
        }
        Ok(())
    }

    fn next_mask(&mut self, key: usize) -> [u8; 4] {
        self.clients[key].masks.next_key()
    }

    fn send_text(&mut self, key: usize, text: &[u8]) {
        let mask = self.next_mask(key);
        frame::write_frame(&mut self.clients[key].out, frame::TEXT, text, mask);
    }

    fn flush(&mut self, key: usize) {
        let Some(client) = self.clients.get_mut(key) else {
            return;
        };
        let Some(sock) = client.sock.as_mut() else {
            return;
        };
        while client.out_at < client.out.len() {
            match crate::io::write(sock, &client.out[client.out_at..]) {
                Io::Progress(n) => client.out_at += n,
                // Still connecting (Linux answers EAGAIN then), or the kernel
                // is full: WRITABLE will come.
                Io::WouldBlock => return,
                Io::Closed | Io::Failed(_) => {
                    self.lost(key);
                    return;
                }
            }
        }
        client.out.clear();
        client.out_at = 0;
        if client.out.capacity() > 64 << 10 {
            client.out.shrink_to(4096);
        }
    }

    fn publish_due(&mut self) {
        let topics = self.plan.topics.len();
        for i in 0..self.publishers.len() {
            let key = self.publishers[i];
            loop {
                let now = self.now();
                let c = &self.clients[key];
                let topic = (c.sent % topics as u64) as usize;
                let fanout = self.fanout[topic];
                let Role::Publisher { id } = c.role else {
                    break;
                };
                let blocked = c.phase != Phase::Ready
                    || c.sent - c.answered >= self.plan.window
                    || self.plan.count.is_some_and(|n| c.sent >= n)
                    || self.plan.rate.is_some() && c.due > now
                    || self.backlog > 0 && self.backlog + fanout > self.plan.max_backlog
                    || self.plan.lockstep && (self.backlog > 0 || c.sent > c.answered);
                if blocked {
                    break;
                }
                // Latency counts from the moment the publish goes out: a
                // bench that wakes late must not charge it to the server.
                let seq = c.sent + 1;
                self.write_publish(
                    key,
                    topic,
                    Stamp {
                        publisher: id,
                        seq,
                        sent: now,
                    },
                );
                let c = &mut self.clients[key];
                c.sent = seq;
                if let Some(rate) = self.plan.rate {
                    // Behind schedule (windows full), catch up at most 10 ms
                    // worth in one burst.
                    c.due = (c.due + (1e9 / rate) as u64).max(now.saturating_sub(10_000_000));
                }
                if self.plan.lockstep {
                    c.lockstep_sent = Some(now);
                }
                self.topic_sent[topic] += 1;
                self.backlog += fanout;
                self.tally.sent += 1;
            }
            self.flush(key);
        }
    }

    fn write_publish(&mut self, key: usize, topic: usize, stamp: Stamp) {
        let mut text = std::mem::take(&mut self.scratch);
        text.clear();
        text.extend_from_slice(b"{\"type\":\"publish\",\"topic\":\"");
        text.extend_from_slice(self.plan.topics[topic].as_bytes());
        // A UUID made of the publisher and sequence numbers: unique, no RNG.
        text.extend_from_slice(b"\",\"message\":{\"id\":\"");
        let id = format_uuid(stamp.publisher, stamp.seq);
        text.extend_from_slice(&id);
        text.extend_from_slice(b"\",\"payload\":");
        wire::write_payload(&mut text, stamp, self.plan.size);
        text.extend_from_slice(b"}}");
        self.send_text(key, &text);
        self.scratch = text;
    }
}

/// `PPPPPPPP-0000-4000-8000-SSSSSSSSSSSS`: a valid version-4 UUID, unique per
/// publisher and sequence number.
fn format_uuid(publisher: u64, seq: u64) -> [u8; 36] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = *b"00000000-0000-4000-8000-000000000000";
    for i in 0..8 {
        id[7 - i] = HEX[((publisher >> (4 * i)) & 0xF) as usize];
    }
    for i in 0..12 {
        id[35 - i] = HEX[((seq >> (4 * i)) & 0xF) as usize];
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_tell_duplicates_from_reordering() {
        let mut s = Stream::default();
        assert!(matches!(s.accept(1), Verdict::InOrder));
        assert!(matches!(s.accept(3), Verdict::InOrder));
        assert!(matches!(s.accept(3), Verdict::Duplicate));
        assert!(matches!(s.accept(2), Verdict::Late));
        assert!(matches!(s.accept(2), Verdict::Duplicate));
        assert!(matches!(s.accept(1), Verdict::Duplicate));
        assert!(matches!(s.accept(1000), Verdict::InOrder));
        assert!(matches!(s.accept(999), Verdict::Late));
        assert!(matches!(s.accept(4), Verdict::Late), "beyond the window");
    }

    #[test]
    fn ids_are_uuids() {
        let id = format_uuid(0xAB, 0x1234);
        let id = std::str::from_utf8(&id).unwrap();
        assert_eq!(id, "000000ab-0000-4000-8000-000000001234");
        assert!(uuid::Uuid::parse_str(id).is_ok());
    }
}
