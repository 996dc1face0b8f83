//! Cluster mode in the core (§9): publishes go through Redis, which numbers
//! them; every node follows the topics its clients subscribe to and mirrors
//! their shared history in its own broker, so replay, `since` and fan-out are
//! the single-node code, fed by the engine's events.
//!
//! Answers to one connection stay in request order although some wait on
//! Redis: while a connection has a request waiting, later answers queue
//! behind it ([`Held`]).

use std::collections::{BTreeMap, HashMap, VecDeque};

use bytes::Bytes;
use serde_json::value::RawValue;

use super::{ConnId, Core, Effects, rest};
use crate::engine::{Command, Event, Failure, Slot, Snapshot};
use crate::protocol::{self, Acked, ErrorCode, Replay};
use crate::refusal::Refusal;
use crate::wire::frame;

/// An answer, or a request, waiting its turn on one connection.
enum Held {
    Ready(Bytes),
    /// A publish Redis has not confirmed yet.
    Publish {
        id: u64,
        rid: Option<Box<str>>,
        topic: Box<str>,
    },
    /// An unsubscribe behind a held request: its effect waits its turn too.
    Unsubscribe {
        rid: Option<Box<str>>,
        topic: Box<str>,
    },
    /// A subscribe to a topic this node is still starting to follow.
    Subscribe {
        rid: Option<Box<str>>,
        topic: Box<str>,
        client_id: Box<str>,
        replay: Replay<'static>,
    },
}

/// A topic this node follows.
enum Follow {
    /// Its state is being read: events that arrive meanwhile wait here.
    Syncing(Vec<(u64, Vec<u8>)>),
    Live,
}

/// A REST request waiting on Redis.
enum RestOp {
    Create(Box<str>),
    Delete(Box<str>),
}

pub struct Cluster {
    pub node: String,
    pub up: bool,
    auto_create: bool,
    next_id: u64,
    pending: HashMap<ConnId, VecDeque<Held>>,
    follows: HashMap<Box<str>, Follow>,
    rest: HashMap<u64, RestOp>,
    /// Every topic of the cluster with its seq and cluster-wide subscriptions,
    /// from the last sync (and kept current by create/delete notices).
    pub topics: BTreeMap<Box<str>, (u64, u64)>,
}

impl Cluster {
    pub fn new(node: String, auto_create: bool) -> Cluster {
        Cluster {
            node,
            up: false,
            auto_create,
            next_id: 0,
            pending: HashMap::new(),
            follows: HashMap::new(),
            rest: HashMap::new(),
            topics: BTreeMap::new(),
        }
    }

    fn slot(&mut self, conn: ConnId) -> Slot {
        self.next_id += 1;
        Slot {
            conn,
            id: self.next_id,
        }
    }

    fn is_live(&self, topic: &str) -> bool {
        matches!(self.follows.get(topic), Some(Follow::Live))
    }
}

/// A new epoch for a topic created here.
fn epoch() -> Box<str> {
    let mut buf = uuid::Uuid::encode_buffer();
    uuid::Uuid::new_v4().simple().encode_lower(&mut buf)[..8].into()
}

impl Core {
    /// Sends an answer to `conn`, behind any of its requests still waiting on Redis.
    pub(super) fn answer(&mut self, conn: ConnId, frame: Bytes, fx: &mut impl Effects) {
        if let Some(c) = &mut self.cluster
            && let Some(queue) = c.pending.get_mut(&conn)
        {
            return queue.push_back(Held::Ready(frame));
        }
        fx.send(conn, frame);
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn cluster_publish(
        &mut self,
        conn: ConnId,
        rid: Option<&str>,
        topic: &str,
        id: &str,
        payload: &RawValue,
        ts: &str,
        fx: &mut impl Effects,
    ) {
        let Some(c) = &mut self.cluster else {
            return;
        };
        if !c.up {
            return self.refuse(conn, rid, Some(topic), Refusal::Unavailable, ts, fx);
        }
        let slot = c.slot(conn);
        let create = c.auto_create.then(epoch);
        c.pending.entry(conn).or_default().push_back(Held::Publish {
            id: slot.id,
            rid: rid.map(Into::into),
            topic: topic.into(),
        });
        let (head, tail) = protocol::event_parts(topic, id, payload, ts);
        fx.engine(Command::Publish {
            slot,
            topic: topic.into(),
            head,
            tail,
            create,
        });
    }

    /// A subscribe in cluster mode: at once when this node already follows
    /// the topic and nothing of the connection's waits; otherwise held until
    /// the topic's state has been read from Redis.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn cluster_subscribe(
        &mut self,
        conn: ConnId,
        rid: Option<&str>,
        topic: &str,
        client_id: &str,
        replay: &Replay<'_>,
        ts: &str,
        fx: &mut impl Effects,
    ) {
        let Some(c) = &mut self.cluster else {
            return;
        };
        if c.is_live(topic) && !c.pending.contains_key(&conn) {
            return self.subscribe(conn, rid, topic, client_id, replay, ts, fx);
        }
        if !c.follows.contains_key(topic) {
            if !c.up {
                return self.refuse(conn, rid, Some(topic), Refusal::Unavailable, ts, fx);
            }
            c.follows.insert(topic.into(), Follow::Syncing(Vec::new()));
            let create = c.auto_create.then(epoch);
            fx.engine(Command::Follow {
                topic: topic.into(),
                create,
            });
        }
        let replay = match replay {
            Replay::Last(n) => Replay::Last(*n),
            Replay::Since { seq, epoch } => Replay::Since {
                seq: *seq,
                epoch: epoch.as_ref().map(|e| e.to_string().into()),
            },
        };
        c.pending
            .entry(conn)
            .or_default()
            .push_back(Held::Subscribe {
                rid: rid.map(Into::into),
                topic: topic.into(),
                client_id: client_id.into(),
                replay,
            });
    }

    /// An unsubscribe in cluster mode: after whatever of the connection's
    /// requests still waits on Redis.
    pub(super) fn cluster_unsubscribe(
        &mut self,
        conn: ConnId,
        rid: Option<&str>,
        topic: &str,
        ts: &str,
        fx: &mut impl Effects,
    ) {
        if let Some(c) = &mut self.cluster
            && let Some(queue) = c.pending.get_mut(&conn)
        {
            return queue.push_back(Held::Unsubscribe {
                rid: rid.map(Into::into),
                topic: topic.into(),
            });
        }
        self.unsubscribe_now(conn, rid, topic, ts, fx);
    }

    /// Idempotent for a topic of the cluster, even one this node does not follow.
    fn unsubscribe_now(
        &mut self,
        conn: ConnId,
        rid: Option<&str>,
        topic: &str,
        ts: &str,
        fx: &mut impl Effects,
    ) {
        let known = self
            .cluster
            .as_ref()
            .is_some_and(|c| c.topics.contains_key(topic));
        match self.broker.unsubscribe(conn, topic) {
            Err(_) if !known => {
                let why = Refusal::TopicNotFound(topic.into());
                self.refuse(conn, rid, None, why, ts, fx)
            }
            _ => fx.send(conn, protocol::ack(rid, Some(topic), Acked::Plain, ts)),
        }
    }

    /// Sends what is ready at the front of `conn`'s queue, in order, and runs
    /// held subscribes whose topic is now followed.
    fn drain(&mut self, conn: ConnId, ts: &str, fx: &mut impl Effects) {
        loop {
            let Some(c) = &mut self.cluster else {
                return;
            };
            let Some(queue) = c.pending.get_mut(&conn) else {
                return;
            };
            let runnable = match queue.front() {
                None => {
                    c.pending.remove(&conn);
                    return;
                }
                Some(Held::Ready(_) | Held::Unsubscribe { .. }) => true,
                Some(Held::Publish { .. }) => false,
                Some(Held::Subscribe { topic, .. }) => {
                    matches!(c.follows.get(&**topic), Some(Follow::Live))
                }
            };
            if !runnable {
                return;
            }
            let held = queue.pop_front();
            if let Some(Held::Ready(frame)) = held {
                fx.send(conn, frame);
                continue;
            }
            // A request at the front runs now: its answer (and a subscribe's
            // replay) goes out before anything queued behind it.
            let behind = c.pending.remove(&conn);
            match held {
                Some(Held::Subscribe {
                    rid,
                    topic,
                    client_id,
                    replay,
                }) => self.subscribe(conn, rid.as_deref(), &topic, &client_id, &replay, ts, fx),
                Some(Held::Unsubscribe { rid, topic }) => {
                    self.unsubscribe_now(conn, rid.as_deref(), &topic, ts, fx)
                }
                _ => {}
            }
            if let (Some(behind), Some(c)) = (behind, &mut self.cluster)
                && !behind.is_empty()
            {
                c.pending.insert(conn, behind);
            }
        }
    }

    /// Forgets a connection's held answers (it went away).
    pub(super) fn cluster_remove(&mut self, conn: ConnId) {
        if let Some(c) = &mut self.cluster {
            c.pending.remove(&conn);
        }
    }

    /// One event from the engine.
    pub fn on_engine(&mut self, event: Event, ts: &str, fx: &mut impl Effects) {
        let Some(c) = &mut self.cluster else {
            return;
        };
        match event {
            Event::Published { slot, result } => {
                let Some(queue) = c.pending.get_mut(&slot.conn) else {
                    return;
                };
                let Some(held) = queue
                    .iter_mut()
                    .find(|h| matches!(h, Held::Publish { id, .. } if *id == slot.id))
                else {
                    return;
                };
                let Held::Publish { rid, topic, .. } =
                    std::mem::replace(held, Held::Ready(Bytes::new()))
                else {
                    return;
                };
                *held = Held::Ready(match result {
                    Ok(seq) => {
                        self.counters.published += 1;
                        protocol::ack(rid.as_deref(), Some(&topic), Acked::Published { seq }, ts)
                    }
                    Err(f) => {
                        let why = refusal(f, &topic);
                        self.counters.reject(&why);
                        let code = why.error_code().unwrap_or(ErrorCode::Internal);
                        protocol::error(rid.as_deref(), Some(&topic), code, &why.message(), ts)
                    }
                });
                self.drain(slot.conn, ts, fx);
            }
            Event::Synced { topic, result } => self.synced(&topic, result, ts, fx),
            Event::Message { topic, seq, json } => {
                match c.follows.get_mut(&*topic) {
                    None => {}
                    Some(Follow::Syncing(buffer)) => buffer.push((seq, json)),
                    Some(Follow::Live) => {
                        let last = self.broker.topic(&topic).map_or(0, |t| t.seq);
                        if seq == last + 1 {
                            self.deliver(&topic, seq, &json, ts, fx);
                        } else if seq > last + 1 {
                            // A gap (a message lost while the link was down):
                            // read the history, keep what arrives meanwhile.
                            c.follows
                                .insert(topic.clone(), Follow::Syncing(vec![(seq, json)]));
                            fx.engine(Command::Resync { topic });
                        }
                    }
                }
            }
            Event::Created { slot, result } => {
                let Some(RestOp::Create(topic)) = c.rest.remove(&slot.id) else {
                    return;
                };
                let reply = match result {
                    Ok(true) => {
                        c.topics.entry(topic.clone()).or_insert((0, 0));
                        rest::Reply::created(&topic)
                    }
                    Ok(false) => rest::Reply::refused(Refusal::TopicExists),
                    Err(_) => rest::Reply::refused(Refusal::EngineDown),
                };
                fx.reply(slot.conn, reply);
            }
            Event::Deleted { slot, result } => {
                let Some(RestOp::Delete(topic)) = c.rest.remove(&slot.id) else {
                    return;
                };
                let reply = match result {
                    Ok(true) => rest::Reply::deleted(&topic),
                    Ok(false) => rest::Reply::refused(Refusal::NoSuchTopic),
                    Err(_) => rest::Reply::refused(Refusal::EngineDown),
                };
                if result == Ok(true) {
                    self.topic_gone(&topic, ts, fx);
                }
                fx.reply(slot.conn, reply);
            }
            Event::TopicCreated(topic) => {
                c.topics.entry(topic).or_insert((0, 0));
            }
            Event::TopicDeleted(topic) => self.topic_gone(&topic, ts, fx),
            Event::Stats(stats) => {
                c.topics = stats
                    .into_iter()
                    .map(|(t, seq, subs)| (t, (seq, subs)))
                    .collect();
            }
            Event::Up => {
                c.up = true;
                // Whatever was published while the link was down is in the
                // history: read each followed topic again and fill the gap.
                let topics: Vec<Box<str>> = c.follows.keys().cloned().collect();
                for topic in topics {
                    if let Some(Follow::Live) = c.follows.get(&topic) {
                        c.follows.insert(topic.clone(), Follow::Syncing(Vec::new()));
                        fx.engine(Command::Resync { topic });
                    }
                }
            }
            Event::Down => c.up = false,
        }
    }

    /// A Follow or Resync finished: the mirror takes Redis's state, the gap
    /// is filled from the history (what it no longer holds is reported as
    /// `events_lost`), buffered events follow, and held subscribes run.
    fn synced(
        &mut self,
        topic: &str,
        result: Result<Snapshot, Failure>,
        ts: &str,
        fx: &mut impl Effects,
    ) {
        let Some(c) = &mut self.cluster else {
            return;
        };
        let buffered = match c.follows.remove(topic) {
            Some(Follow::Syncing(buffered)) => buffered,
            Some(Follow::Live) | None => Vec::new(),
        };
        let mirrored = self.broker.topic(topic).map(|t| (t.epoch.clone(), t.seq));
        match result {
            Err(failure) => {
                if mirrored.is_some() && failure == Failure::Unavailable {
                    // Redis went away during a resync: keep the mirror and
                    // its subscribers; the link's return reads it again.
                    c.follows.insert(topic.into(), Follow::Live);
                    return;
                }
                if mirrored.is_some() && failure == Failure::NotFound {
                    // Deleted while this node could not hear the notice.
                    return self.topic_gone(topic, ts, fx);
                }
                if mirrored.is_some() && failure == Failure::Lost {
                    // Redis lost the cluster's data (a restart without
                    // persistence): register the topic again, in a new
                    // epoch, and read it back.
                    c.follows.insert(topic.into(), Follow::Syncing(buffered));
                    fx.engine(Command::Create {
                        slot: None,
                        topic: topic.into(),
                        epoch: epoch(),
                    });
                    fx.engine(Command::Resync {
                        topic: topic.into(),
                    });
                    return;
                }
                fx.engine(Command::Unfollow {
                    topic: topic.into(),
                });
                self.fail_held(topic, refusal(failure, topic), ts, fx);
            }
            Ok(snapshot) => {
                c.follows.insert(topic.into(), Follow::Live);
                let first = snapshot.seq + 1 - snapshot.history.len() as u64;
                match mirrored {
                    Some((epoch, seq)) if *epoch == *snapshot.epoch => {
                        if seq + 1 < first {
                            self.events_lost(topic, seq + 1, first - 1, ts, fx);
                            if let Some(t) = self.broker.topic_mut(topic) {
                                t.seq = first - 1;
                            }
                        }
                        for (i, json) in snapshot.history.iter().enumerate() {
                            self.deliver(topic, first + i as u64, json, ts, fx);
                        }
                    }
                    Some(_) => {
                        // Another life of the topic (Redis lost its data, or
                        // it was re-created while this node could not hear
                        // it): the subscribers here are told, then get the
                        // new epoch from its start, as far as it is kept.
                        self.broker.install(topic, &snapshot.epoch, 0, Vec::new());
                        let info = protocol::epoch_changed(topic, &snapshot.epoch, ts);
                        self.tell_subscribers(topic, info, fx);
                        if first > 1 {
                            self.events_lost(topic, 1, first - 1, ts, fx);
                            if let Some(t) = self.broker.topic_mut(topic) {
                                t.seq = first - 1;
                            }
                        }
                        for (i, json) in snapshot.history.iter().enumerate() {
                            self.deliver(topic, first + i as u64, json, ts, fx);
                        }
                    }
                    None => {
                        let frames = snapshot.history.iter().map(|j| frame::text_frame(j));
                        self.broker
                            .install(topic, &snapshot.epoch, snapshot.seq, frames.collect());
                    }
                }
                let mut buffered = buffered;
                buffered.sort_by_key(|(seq, _)| *seq);
                for (seq, json) in buffered {
                    let last = self.broker.topic(topic).map_or(0, |t| t.seq);
                    if seq > last + 1 {
                        self.events_lost(topic, last + 1, seq - 1, ts, fx);
                        if let Some(t) = self.broker.topic_mut(topic) {
                            t.seq = seq - 1;
                        }
                    }
                    self.deliver(topic, seq, &json, ts, fx);
                }
                let waiting: Vec<ConnId> = self.held_on(topic);
                for conn in waiting {
                    self.drain(conn, ts, fx);
                }
            }
        }
    }

    /// Connections with a subscribe held on `topic`.
    fn held_on(&self, topic: &str) -> Vec<ConnId> {
        let Some(c) = &self.cluster else {
            return Vec::new();
        };
        c.pending
            .iter()
            .filter(|(_, q)| {
                q.iter()
                    .any(|h| matches!(h, Held::Subscribe { topic: t, .. } if &**t == topic))
            })
            .map(|(conn, _)| *conn)
            .collect()
    }

    /// Held subscribes to `topic` are answered with `why`.
    fn fail_held(&mut self, topic: &str, why: Refusal, ts: &str, fx: &mut impl Effects) {
        let conns = self.held_on(topic);
        let Some(c) = &mut self.cluster else {
            return;
        };
        let code = why.error_code().unwrap_or(ErrorCode::Internal);
        for conn in &conns {
            let Some(queue) = c.pending.get_mut(conn) else {
                continue;
            };
            for held in queue.iter_mut() {
                if let Held::Subscribe { rid, topic: t, .. } = held
                    && &**t == topic
                {
                    self.counters.reject(&why);
                    let error =
                        protocol::error(rid.as_deref(), Some(topic), code, &why.message(), ts);
                    *held = Held::Ready(error);
                }
            }
        }
        for conn in conns {
            self.drain(conn, ts, fx);
        }
    }

    /// Records and fans out one event numbered by Redis (a duplicate is ignored).
    fn deliver(&mut self, topic: &str, seq: u64, json: &[u8], ts: &str, fx: &mut impl Effects) {
        let frame = frame::text_frame(json);
        if self.broker.record(topic, seq, &frame).is_some() {
            self.fan_out(topic, &frame, ts, fx);
        }
    }

    fn events_lost(&mut self, topic: &str, from: u64, to: u64, ts: &str, fx: &mut impl Effects) {
        self.tell_subscribers(topic, protocol::events_lost(topic, from, to, ts), fx);
    }

    /// An `info` notice to every subscriber of `topic` on this node.
    fn tell_subscribers(&self, topic: &str, info: Bytes, fx: &mut impl Effects) {
        if let Some(t) = self.broker.topic(topic) {
            for sub in t.subscribers() {
                fx.send(sub.conn, info.clone());
            }
        }
    }

    /// A topic was deleted somewhere in the cluster: its subscribers here are told.
    fn topic_gone(&mut self, topic: &str, ts: &str, fx: &mut impl Effects) {
        let Some(c) = &mut self.cluster else {
            return;
        };
        c.topics.remove(topic);
        if c.follows.remove(topic).is_some() {
            fx.engine(Command::Unfollow {
                topic: topic.into(),
            });
        }
        if let Ok(conns) = self.broker.delete_topic(topic) {
            let info = protocol::info(Some(topic), "topic_deleted", ts);
            for conn in conns {
                fx.send(conn, info.clone());
            }
        }
        self.fail_held(topic, Refusal::TopicNotFound(topic.into()), ts, fx);
    }

    /// Once a second: share this node's subscription counts, learn the
    /// cluster's, and stop following topics nobody here subscribes to.
    pub fn cluster_tick(&mut self, fx: &mut impl Effects) {
        let Some(c) = &mut self.cluster else {
            return;
        };
        let mut counts = Vec::new();
        let mut idle = Vec::new();
        for (name, t) in self.broker.topics() {
            counts.push((name.into(), t.subscribers().len()));
            let held = c.pending.values().any(|q| {
                q.iter()
                    .any(|h| matches!(h, Held::Subscribe { topic, .. } if &**topic == name))
            });
            if t.subscribers().is_empty() && !held && c.is_live(name) {
                idle.push(Box::<str>::from(name));
            }
        }
        fx.engine(Command::Sync { counts });
        for topic in idle {
            c.follows.remove(&topic);
            self.broker.forget(&topic);
            fx.engine(Command::Unfollow { topic });
        }
    }

    /// `POST /topics` or `DELETE /topics/{name}` in cluster mode: answered
    /// once Redis has decided (`None` when the request is answered at once).
    pub(super) fn cluster_rest(
        &mut self,
        conn: ConnId,
        req: &crate::http::Request,
        fx: &mut impl Effects,
    ) -> Option<rest::Reply> {
        let c = self.cluster.as_mut()?;
        let op = match (req.method.as_str(), req.path.as_str()) {
            ("POST", "/topics") => match rest::topic_name(&req.body) {
                Ok(name) => RestOp::Create(name.into()),
                Err(reply) => return Some(reply),
            },
            ("DELETE", path) => match path
                .strip_prefix("/topics/")
                .and_then(crate::http::percent_decode)
            {
                Some(name) => RestOp::Delete(name.into()),
                None => return Some(rest::Reply::refused(Refusal::NoSuchTopic)),
            },
            _ => return None,
        };
        if !c.up {
            return Some(rest::Reply::refused(Refusal::EngineDown));
        }
        let slot = c.slot(conn);
        let command = match &op {
            RestOp::Create(topic) => Command::Create {
                slot: Some(slot),
                topic: topic.clone(),
                epoch: epoch(),
            },
            RestOp::Delete(topic) => Command::Delete {
                slot,
                topic: topic.clone(),
            },
        };
        c.rest.insert(slot.id, op);
        fx.engine(command);
        Some(rest::Reply::pending())
    }
}

fn refusal(failure: Failure, topic: &str) -> Refusal {
    match failure {
        Failure::NotFound | Failure::Lost => Refusal::TopicNotFound(topic.into()),
        Failure::Unavailable => Refusal::Unavailable,
        Failure::Unconfirmed => Refusal::Unconfirmed,
    }
}
