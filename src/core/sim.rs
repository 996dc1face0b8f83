//! A seeded simulation of the core (Sōzu style): thousands of virtual
//! connections subscribe, unsubscribe, publish, disconnect, take over each
//! other's client ids, delete and re-create topics and read slowly or not at
//! all, checked against a simple model after every step.
//!
//! `PUBSUBD_SIM_SEED=N cargo test sim` replays one seed; a failure prints the
//! seed and the step.

use std::collections::{HashMap, VecDeque};

use super::peers::{Peer, Peers, Reader, TS, request, view};
use super::{ConnId, Core};
use crate::config::{Config, OverflowPolicy};

// ---- the simulation ----

const TOPICS: [&str; 16] = [
    "a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m", "n", "o", "p",
];
const HISTORY: usize = 16;
const LIMIT: usize = 4096;

/// splitmix64: small, seedable, good enough to draw test steps.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// What a connection should see, by the model.
#[derive(Default)]
struct Expect {
    /// Event numbers and their seqs, in the order they must arrive
    /// (drop-oldest may skip some).
    events: Vec<(u64, u64)>,
    /// The answers due, in order.
    answers: VecDeque<Answer>,
    /// Index into `events` after the last one received.
    next: usize,
    /// Events received.
    got: usize,
    /// Events the `messages_dropped` notices reported.
    notices: u64,
}

/// A topic by the model: subscribers (connection → client_id), the event
/// numbers it keeps, and its last seq.
#[derive(Default)]
struct Topic {
    subs: HashMap<ConnId, String>,
    history: VecDeque<u64>,
    seq: u64,
}

/// An answer due: its request_id, and for acks what they must carry.
struct Answer {
    rid: String,
    seq: Option<u64>,
    recovered: Option<bool>,
}

fn answer(rid: u64) -> Answer {
    Answer {
        rid: rid.to_string(),
        seq: None,
        recovered: None,
    }
}

struct Model {
    /// Per topic: subscribers (connection → client_id) and kept history.
    topics: HashMap<&'static str, Topic>,
    expect: HashMap<ConnId, Expect>,
    /// The number the next event carries in its payload.
    next_event: u64,
}

struct Sim {
    rng: Rng,
    core: Core,
    fx: Peers,
    model: Model,
    policy: OverflowPolicy,
    generation: u32,
    max_frame: usize,
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let mut rng = Rng(seed);
        let policy = if rng.below(2) == 0 {
            OverflowPolicy::Disconnect
        } else {
            OverflowPolicy::DropOldest
        };
        let config = Config {
            history: HISTORY,
            outbound_limit: LIMIT,
            overflow_policy: policy,
            ..Config::default()
        };
        Sim {
            rng,
            core: Core::new(&config),
            fx: Peers::default(),
            model: Model {
                topics: HashMap::new(),
                expect: HashMap::new(),
                next_event: 0,
            },
            policy,
            generation: 0,
            max_frame: 0,
        }
    }

    fn connect(&mut self, key: usize) -> ConnId {
        self.generation += 1;
        let id = ConnId::new(key, self.generation);
        let reader = match self.rng.below(10) {
            0 => Reader::Stalled,
            1..=2 => Reader::Slow(1 + self.rng.below(600)),
            _ => Reader::Fast,
        };
        self.fx.peers.insert(id, Peer::new(reader));
        self.model.expect.insert(id, Expect::default());
        id
    }

    fn step(&mut self, n: u64, conns: &mut [ConnId]) {
        let slot = self.rng.below(conns.len());
        let id = conns[slot];
        let topic = TOPICS[self.rng.below(TOPICS.len())];
        // A connection over its limit is not read (§3): it sends nothing.
        let paused = self.fx.peers[&id].out.len() > LIMIT || self.fx.peers[&id].closed.is_some();
        match self.rng.below(100) {
            0..=1 => self.disconnect(slot, conns),
            2 => self.create(topic),
            3 => self.delete(topic),
            _ if paused => {}
            4..=19 => self.subscribe(id, n, topic),
            20..=24 => self.unsubscribe(id, n, topic),
            25..=27 => self.ping(id, n),
            _ => self.publish(id, n, topic),
        }
        let mut touched = std::mem::take(&mut self.fx.touched);
        touched.sort_unstable();
        touched.dedup();
        for id in &touched {
            if let Some(peer) = self.fx.peers.get_mut(id) {
                let room = peer.room();
                peer.read(room);
            }
        }
        self.settle_closed(&touched);
        self.check(n, Some(&touched));
        self.fx.touched = touched;
        self.fx.touched.clear();
    }

    fn disconnect(&mut self, slot: usize, conns: &mut [ConnId]) {
        let id = conns[slot];
        self.core.remove_conn(id);
        self.fx.peers.remove(&id);
        self.model.expect.remove(&id);
        for t in self.model.topics.values_mut() {
            t.subs.remove(&id);
        }
        conns[slot] = self.connect(id.key());
    }

    fn create(&mut self, topic: &'static str) {
        let body = format!("{{\"name\":\"{topic}\"}}");
        let reply = self.core.rest(
            ConnId::new(0, 0),
            &request("POST", "/topics", &body),
            &view(),
            TS,
            &mut self.fx,
        );
        let exists = self.model.topics.contains_key(topic);
        assert_eq!(reply.status, if exists { 409 } else { 201 });
        self.model.topics.entry(topic).or_default();
    }

    fn delete(&mut self, topic: &'static str) {
        let path = format!("/topics/{topic}");
        let reply = self.core.rest(
            ConnId::new(0, 0),
            &request("DELETE", &path, ""),
            &view(),
            TS,
            &mut self.fx,
        );
        let removed = self.model.topics.remove(topic);
        assert_eq!(reply.status, if removed.is_some() { 200 } else { 404 });
    }

    fn subscribe(&mut self, id: ConnId, n: u64, topic: &'static str) {
        // Client ids are drawn from a small pool so takeovers happen.
        let client = format!("c{}", self.rng.below(400));
        let seq = self.model.topics.get(topic).map_or(0, |t| t.seq);
        // last_n, or since: behind, level with, or ahead of the topic, in its
        // epoch or (as after a re-creation) in another one.
        let (field, since) = match self.rng.below(3) {
            0 => (format!(r#""last_n":{}"#, self.rng.below(HISTORY + 4)), None),
            _ => {
                let since = (seq + 3).saturating_sub(self.rng.below(HISTORY * 2) as u64);
                let foreign = self.rng.below(8) == 0;
                let epoch = if foreign {
                    r#","epoch":"zzzzzzzz""#
                } else {
                    ""
                };
                (format!(r#""since":{since}{epoch}"#), Some((since, foreign)))
            }
        };
        let text = format!(
            r#"{{"type":"subscribe","topic":"{topic}","client_id":"{client}",{field},"request_id":"{n}"}}"#
        );
        self.core.on_text(id, &text, TS, &mut self.fx);
        let expect = self.model.expect.get_mut(&id).expect("a live connection");
        let Some(t) = self.model.topics.get_mut(topic) else {
            expect.answers.push_back(answer(n));
            return;
        };
        // The replay: the last N kept, or every kept event after the point
        // resumed from (the topic's start for a foreign epoch or a client ahead).
        let kept = t.history.len();
        let again = t.subs.contains_key(&id);
        let (count, recovered) = match since {
            None => (field[9..].parse::<usize>().unwrap_or(0).min(kept), None),
            Some((since, foreign)) => {
                let after = if foreign || since > t.seq { 0 } else { since };
                let count = ((t.seq - after) as usize).min(kept);
                // Subscribed already on this connection: no replay, so
                // complete only when nothing came after the point.
                let complete = if again {
                    after >= t.seq
                } else {
                    after + kept as u64 >= t.seq
                };
                (count, Some(complete))
            }
        };
        expect.answers.push_back(Answer {
            rid: n.to_string(),
            seq: Some(t.seq),
            recovered,
        });
        let holder = t
            .subs
            .iter()
            .find(|(c, name)| **name == client && **c != id);
        if let Some((&other, _)) = holder {
            t.subs.remove(&other);
        }
        if t.subs.insert(id, client).is_none() {
            let first = t.seq + 1 - kept as u64;
            let replay = t.history.iter().enumerate().skip(kept - count);
            expect
                .events
                .extend(replay.map(|(i, e)| (*e, first + i as u64)));
        }
    }

    fn unsubscribe(&mut self, id: ConnId, n: u64, topic: &'static str) {
        let text = format!(
            r#"{{"type":"unsubscribe","topic":"{topic}","client_id":"x","request_id":"{n}"}}"#
        );
        self.core.on_text(id, &text, TS, &mut self.fx);
        self.expect(id).answers.push_back(answer(n));
        if let Some(t) = self.model.topics.get_mut(topic) {
            t.subs.remove(&id);
        }
    }

    fn ping(&mut self, id: ConnId, n: u64) {
        let text = format!(r#"{{"type":"ping","request_id":"{n}"}}"#);
        self.core.on_text(id, &text, TS, &mut self.fx);
        self.expect(id).answers.push_back(answer(n));
    }

    fn publish(&mut self, id: ConnId, n: u64, topic: &'static str) {
        let event = self.model.next_event;
        let pad = "x".repeat(self.rng.below(300));
        let text = format!(
            r#"{{"type":"publish","topic":"{topic}","message":{{"id":"00000000-0000-4000-8000-000000000000","payload":{{"n":{event},"pad":"{pad}"}}}},"request_id":"{n}"}}"#
        );
        self.max_frame = self.max_frame.max(text.len() + 64);
        self.core.on_text(id, &text, TS, &mut self.fx);
        let Some(t) = self.model.topics.get_mut(topic) else {
            self.expect(id).answers.push_back(answer(n));
            return;
        };
        self.model.next_event += 1;
        t.seq += 1;
        if t.history.len() == HISTORY {
            t.history.pop_front();
        }
        t.history.push_back(event);
        let seq = t.seq;
        let subs: Vec<ConnId> = t.subs.keys().copied().collect();
        self.expect(id).answers.push_back(Answer {
            rid: n.to_string(),
            seq: Some(seq),
            recovered: None,
        });
        for sub in subs {
            self.expect(sub).events.push((event, seq));
        }
    }

    fn expect(&mut self, id: ConnId) -> &mut Expect {
        self.model.expect.get_mut(&id).expect("a live connection")
    }

    /// Slow consumers the core closed this step lose their subscriptions, and
    /// the event that overflowed their queue was never theirs.
    fn settle_closed(&mut self, touched: &[ConnId]) {
        for id in touched {
            if self.fx.peers.get(id).is_none_or(|p| p.closed.is_none()) {
                continue;
            }
            for t in self.model.topics.values_mut() {
                t.subs.remove(id);
            }
        }
    }

    /// Checks what every peer received since the last check against the model.
    /// `None` checks every peer, with the end-of-run accounting.
    fn check(&mut self, step: u64, touched: Option<&[ConnId]>) {
        let last = touched.is_none();
        let all: Vec<ConnId> = match touched {
            Some(_) => Vec::new(),
            None => self.fx.peers.keys().copied().collect(),
        };
        let ids = touched.unwrap_or(&all);
        for id in ids {
            let Some(peer) = self.fx.peers.get_mut(id) else {
                continue;
            };
            let x = self.model.expect.get_mut(id).expect("a live connection");
            assert!(
                peer.out.len() <= LIMIT + self.max_frame.max(512),
                "step {step}: {id} holds {} queued bytes, over the limit plus a frame",
                peer.out.len()
            );
            for msg in peer.received.drain(..) {
                let answer = match msg["type"].as_str() {
                    Some("event") => {
                        let n = msg["message"]["payload"]["n"].as_u64();
                        let seq = msg["seq"].as_u64();
                        let at = x.events[x.next..]
                            .iter()
                            .position(|(e, s)| Some(*e) == n && Some(*s) == seq);
                        let Some(at) = at else {
                            panic!(
                                "step {step}: {id} got event {n:?} (seq {seq:?}) out of order, \
                                 twice, with a wrong seq, or not meant for it (next expected: {:?})",
                                &x.events[x.next..]
                            );
                        };
                        // Only drop-oldest may skip events.
                        assert!(
                            at == 0 || self.policy == OverflowPolicy::DropOldest,
                            "step {step}: {id} missed events {:?}",
                            &x.events[x.next..x.next + at]
                        );
                        x.next += at + 1;
                        x.got += 1;
                        false
                    }
                    Some("ack" | "pong") => true,
                    Some("error") if msg["error"]["code"] == "SLOW_CONSUMER" => {
                        assert_eq!(self.policy, OverflowPolicy::Disconnect, "step {step}");
                        assert!(
                            peer.closed.is_some(),
                            "step {step}: {id} told but not closed"
                        );
                        false
                    }
                    Some("error") => true,
                    Some("info") => {
                        if msg["msg"] == "messages_dropped" {
                            x.notices += msg["dropped"].as_u64().unwrap_or(0);
                        }
                        false
                    }
                    other => panic!("step {step}: {id} got an unexpected message {other:?}"),
                };
                if answer {
                    let want = x.answers.pop_front();
                    assert_eq!(
                        msg["request_id"].as_str(),
                        want.as_ref().map(|a| a.rid.as_str()),
                        "step {step}: {id}: answers must come once each, in request order"
                    );
                    if let Some(want) = want.filter(|_| msg["type"] == "ack") {
                        assert_eq!(msg["seq"].as_u64(), want.seq, "step {step}: {id}: {msg}");
                        assert_eq!(
                            msg["recovered"].as_bool(),
                            want.recovered,
                            "step {step}: {id}: {msg}"
                        );
                    }
                }
            }
            let missing = (x.next - x.got) as u64;
            if peer.reader == Reader::Fast {
                assert!(
                    peer.closed.is_none(),
                    "step {step}: fast reader {id} was closed"
                );
                assert_eq!(x.next, x.events.len(), "step {step}: fast reader {id} lags");
                assert!(
                    x.answers.is_empty(),
                    "step {step}: fast reader {id} unanswered"
                );
            }
            match self.policy {
                // Whatever was reported dropped is missing (the newest never is).
                OverflowPolicy::DropOldest => assert!(
                    missing <= peer.notified + peer.out.dropped,
                    "step {step}: {id} missed {missing} events, told of {} ({} pending), reader {:?}",
                    peer.notified,
                    peer.out.dropped,
                    peer.reader
                ),
                OverflowPolicy::Disconnect => {
                    assert_eq!(missing, 0, "step {step}: {id}");
                    assert!(peer.out.dropped == 0 && x.notices == 0, "step {step}: {id}");
                }
            }
            if last && peer.closed.is_none() {
                // Everything has been read: the accounting is exact. Under
                // drop-oldest even the newest events may have gone, when
                // answers alone filled the queue.
                let lost = (x.events.len() - x.got) as u64;
                assert_eq!(
                    lost, x.notices,
                    "step {step}: {id} lost {lost} events and was told of {} ({:?}, policy {:?})",
                    x.notices, peer.reader, self.policy
                );
                assert!(x.answers.is_empty(), "step {step}: {id} unanswered");
            }
        }
    }
}

fn run(seed: u64, steps: u64) {
    let result = std::panic::catch_unwind(|| {
        let mut sim = Sim::new(seed);
        let mut conns: Vec<ConnId> = (0..2000).map(|k| sim.connect(k)).collect();
        for topic in TOPICS {
            sim.create(topic);
        }
        for n in 0..steps {
            sim.step(n, &mut conns);
        }
        // In the end every reader takes everything, the stalled and slow ones
        // too: nothing may be left unaccounted for.
        for peer in sim.fx.peers.values_mut() {
            peer.read(usize::MAX);
        }
        sim.check(steps, None);
        sim.core.broker.subscription_count()
    });
    if let Err(panic) = result {
        eprintln!("simulation failed: replay with PUBSUBD_SIM_SEED={seed} cargo test sim");
        std::panic::resume_unwind(panic);
    }
}

#[test]
fn sim_random_seeds() {
    if let Some(seed) = std::env::var("PUBSUBD_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        return run(seed, 100_000);
    }
    let base = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    for i in 0..4 {
        run(base.wrapping_add(i), 100_000);
    }
}

#[test]
fn sim_known_seeds() {
    // Both policies, fixed, so a regression shows on every run.
    for seed in [1, 2, 3] {
        run(seed, 20_000);
    }
}
