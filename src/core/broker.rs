//! Topics, subscriptions, history and counters: plain owned data, no I/O.
//!
//! Methods take plain inputs and return what must be sent to whom; the server
//! loop does the sending. Connections are named by [`ConnId`], which carries a
//! generation so that a recycled slab slot never inherits a subscription.

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

use bytes::Bytes;

use crate::protocol::Replay;

pub use super::ConnId;

/// One subscription held on a topic.
#[derive(Debug, Clone)]
pub struct Subscriber {
    pub conn: ConnId,
    pub client_id: Box<str>,
}

#[derive(Debug)]
pub struct Topic {
    /// Fan-out list: iterated once per publish.
    subscribers: Vec<Subscriber>,
    /// Position of each connection in `subscribers`.
    position: HashMap<ConnId, usize>,
    /// Which connection holds each client_id, for takeover.
    by_client: HashMap<Box<str>, ConnId>,
    /// The last `history` event frames, oldest first, shared with subscriber
    /// queues. Their seqs run without a gap up to `seq`.
    history: VecDeque<Bytes>,
    /// The seq of the last event published (0: none yet).
    pub seq: u64,
    /// Made when the topic is created: a re-created topic restarts `seq` in a new epoch.
    pub epoch: Box<str>,
    /// Events published to the topic.
    pub messages: u64,
    /// Events dropped by the drop-oldest policy on this topic's subscribers.
    pub dropped: u64,
    /// Subscribers disconnected as slow consumers while receiving this topic.
    pub slow_disconnects: u64,
}

impl Topic {
    fn new() -> Topic {
        Topic {
            subscribers: Vec::new(),
            position: HashMap::new(),
            by_client: HashMap::new(),
            history: VecDeque::new(),
            seq: 0,
            epoch: new_epoch(),
            messages: 0,
            dropped: 0,
            slow_disconnects: 0,
        }
    }

    /// The seq of the oldest kept event (`seq + 1` when none is kept).
    pub fn first_seq(&self) -> u64 {
        self.seq + 1 - self.history.len() as u64
    }

    pub fn subscribers(&self) -> &[Subscriber] {
        &self.subscribers
    }

    pub fn history(&self) -> &VecDeque<Bytes> {
        &self.history
    }

    fn insert(&mut self, conn: ConnId, client_id: &str) {
        self.position.insert(conn, self.subscribers.len());
        self.subscribers.push(Subscriber {
            conn,
            client_id: client_id.into(),
        });
        self.by_client.insert(client_id.into(), conn);
    }

    /// Removes `conn`'s subscription; returns whether it held one.
    fn remove(&mut self, conn: ConnId) -> bool {
        let Some(i) = self.position.remove(&conn) else {
            return false;
        };
        let gone = self.subscribers.swap_remove(i);
        if let Some(moved) = self.subscribers.get(i) {
            self.position.insert(moved.conn, i);
        }
        if self.by_client.get(&gone.client_id) == Some(&conn) {
            self.by_client.remove(&gone.client_id);
        }
        // A crowd that came and went must not leave its memory behind: a
        // topic keeps at most four times what its subscribers need.
        let len = self.subscribers.len();
        if len < self.subscribers.capacity() / 4 {
            self.subscribers.shrink_to(len * 2);
            self.position.shrink_to(len * 2);
            self.by_client.shrink_to(len * 2);
        }
        true
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum BrokerError {
    TopicNotFound,
    TopicExists,
}

/// An epoch: 8 random hex digits.
fn new_epoch() -> Box<str> {
    let id = uuid::Uuid::new_v4();
    let mut buf = uuid::Uuid::encode_buffer();
    id.simple().encode_lower(&mut buf)[..8].into()
}

/// The seq a `since` resumes after: 0 (the topic's start) when the epoch is
/// another topic's of the same name, or when the client is ahead of the topic
/// (a restarted server): either way its seqs mean nothing here.
fn resume_after(topic: &Topic, replay: &Replay<'_>) -> u64 {
    match replay {
        Replay::Since { seq, epoch } => {
            let foreign = epoch.as_deref().is_some_and(|e| e != &*topic.epoch);
            if foreign || *seq > topic.seq { 0 } else { *seq }
        }
        Replay::Last(_) => topic.seq,
    }
}

/// What a subscribe did.
#[derive(Debug, Default)]
pub struct Subscribed {
    /// Another connection whose subscription with the same client_id was taken over.
    pub replaced: Option<ConnId>,
    /// History events to send after the ack, oldest first.
    pub replay: Vec<Bytes>,
    /// The topic's last seq and its epoch, for the ack.
    pub seq: u64,
    pub epoch: Box<str>,
    /// With `since`: whether the replay holds every event after it.
    pub recovered: Option<bool>,
}

#[derive(Debug)]
pub struct Broker {
    topics: HashMap<Rc<str>, Topic>,
    /// The topics each connection holds (names shared with the topic map).
    held: HashMap<ConnId, Vec<Rc<str>>>,
    history: usize,
    auto_create: bool,
    /// Subscriptions across all topics.
    subscriptions: usize,
}

impl Broker {
    pub fn new(history: usize, auto_create: bool) -> Self {
        Broker {
            topics: HashMap::new(),
            held: HashMap::new(),
            history,
            auto_create,
            subscriptions: 0,
        }
    }

    pub fn topic_count(&self) -> usize {
        self.topics.len()
    }

    /// Events each topic keeps for replay.
    pub fn history_capacity(&self) -> usize {
        self.history
    }

    pub fn subscription_count(&self) -> usize {
        self.subscriptions
    }

    pub fn topic(&self, name: &str) -> Option<&Topic> {
        self.topics.get(name)
    }

    pub fn topic_mut(&mut self, name: &str) -> Option<&mut Topic> {
        self.topics.get_mut(name)
    }

    /// Topics in name order.
    pub fn topics(&self) -> Vec<(&str, &Topic)> {
        let mut all: Vec<(&str, &Topic)> = self.topics.iter().map(|(n, t)| (&**n, t)).collect();
        all.sort_unstable_by(|a, b| a.0.cmp(b.0));
        all
    }

    pub fn create_topic(&mut self, name: &str) -> Result<(), BrokerError> {
        if self.topics.contains_key(name) {
            return Err(BrokerError::TopicExists);
        }
        self.topics.insert(name.into(), Topic::new());
        Ok(())
    }

    /// Deletes a topic; returns the connections that were subscribed to it.
    pub fn delete_topic(&mut self, name: &str) -> Result<Vec<ConnId>, BrokerError> {
        let (key, topic) = self
            .topics
            .remove_entry(name)
            .ok_or(BrokerError::TopicNotFound)?;
        let conns: Vec<ConnId> = topic.subscribers.iter().map(|s| s.conn).collect();
        for conn in &conns {
            self.forget_held(*conn, &key);
        }
        self.subscriptions -= conns.len();
        Ok(conns)
    }

    /// The topic for a publish or subscribe, created when auto-create is on.
    fn resolve(&mut self, name: &str) -> Result<Rc<str>, BrokerError> {
        if let Some((key, _)) = self.topics.get_key_value(name) {
            return Ok(key.clone());
        }
        if !self.auto_create {
            return Err(BrokerError::TopicNotFound);
        }
        let key: Rc<str> = name.into();
        self.topics.insert(key.clone(), Topic::new());
        Ok(key)
    }

    /// Subscribes `conn` to `name` as `client_id`, replaying kept events as
    /// `replay` asks (§2): the last N, or every one after a seq.
    ///
    /// A connection that already holds the topic keeps one delivery path and gets
    /// no replay. A client_id held by another connection is taken over.
    pub fn subscribe(
        &mut self,
        conn: ConnId,
        name: &str,
        client_id: &str,
        replay: &Replay<'_>,
    ) -> Result<Subscribed, BrokerError> {
        let key = self.resolve(name)?;
        let topic = self
            .topics
            .get_mut(&key)
            .ok_or(BrokerError::TopicNotFound)?;
        let mut done = Subscribed::default();

        let other = topic
            .by_client
            .get(client_id)
            .copied()
            .filter(|c| *c != conn);
        if let Some(other) = other {
            topic.remove(other);
            done.replaced = Some(other);
        }
        let again = topic.position.contains_key(&conn);
        if let Some(&i) = topic.position.get(&conn) {
            // Same connection again: keep one path, follow a changed client_id.
            let old = std::mem::replace(&mut topic.subscribers[i].client_id, client_id.into());
            if topic.by_client.get(&old) == Some(&conn) {
                topic.by_client.remove(&old);
            }
            topic.by_client.insert(client_id.into(), conn);
        } else {
            topic.insert(conn, client_id);
            let kept = topic.history.len() as u64;
            let n = match replay {
                Replay::Last(n) => (*n).min(kept),
                // Every kept event after the point resumed from.
                Replay::Since { .. } => (topic.seq - resume_after(topic, replay)).min(kept),
            };
            done.replay = topic
                .history
                .iter()
                .skip((kept - n) as usize)
                .cloned()
                .collect();
            self.subscriptions += 1;
            self.held.entry(conn).or_default().push(key.clone());
        }
        if let Replay::Since { .. } = replay {
            let after = resume_after(topic, replay);
            done.recovered = Some(if again {
                // No second path, so no replay: complete only if there is
                // nothing after the point to send.
                after >= topic.seq
            } else {
                // Nothing after the point is missing when the history reaches back to it.
                after + 1 >= topic.first_seq()
            });
        }
        done.seq = topic.seq;
        done.epoch = topic.epoch.clone();
        if let Some(other) = done.replaced {
            self.subscriptions -= 1;
            self.forget_held(other, &key);
        }
        Ok(done)
    }

    /// Unsubscribes `conn` from `name`; idempotent for an existing topic.
    pub fn unsubscribe(&mut self, conn: ConnId, name: &str) -> Result<(), BrokerError> {
        let key = self
            .topics
            .get_key_value(name)
            .ok_or(BrokerError::TopicNotFound)?
            .0
            .clone();
        let held = self.topics.get_mut(&key).is_some_and(|t| t.remove(conn));
        if held {
            self.subscriptions -= 1;
            self.forget_held(conn, &key);
        }
        Ok(())
    }

    /// Records a published event (creating the topic if auto-create is on):
    /// assigns its seq, builds its frame with `frame(seq)` and keeps it in the
    /// history. Returns the topic, whose `subscribers()` are the connections
    /// to deliver the frame to, and the frame.
    pub fn publish(
        &mut self,
        name: &str,
        frame: impl FnOnce(u64) -> Bytes,
    ) -> Result<(&Topic, Bytes), BrokerError> {
        if self.auto_create && !self.topics.contains_key(name) {
            self.topics.insert(name.into(), Topic::new());
        }
        let history = self.history;
        let topic = self
            .topics
            .get_mut(name)
            .ok_or(BrokerError::TopicNotFound)?;
        topic.messages += 1;
        topic.seq += 1;
        let frame = frame(topic.seq);
        if history > 0 {
            if topic.history.len() == history {
                topic.history.pop_front();
            }
            topic.history.push_back(frame.clone());
        }
        Ok((topic, frame))
    }

    /// Cluster mode: makes `name` a mirror of the shared topic — its epoch,
    /// last seq and kept event frames (oldest first) — keeping whoever is
    /// subscribed.
    pub fn install(&mut self, name: &str, epoch: &str, seq: u64, history: Vec<Bytes>) {
        let keep = self.history;
        let topic = self.topics.entry(name.into()).or_insert_with(Topic::new);
        topic.epoch = epoch.into();
        topic.seq = seq;
        let skip = history.len().saturating_sub(keep);
        topic.history = history.into_iter().skip(skip).collect();
    }

    /// Cluster mode: drops a mirrored topic nobody here subscribes to.
    pub fn forget(&mut self, name: &str) {
        if self
            .topics
            .get(name)
            .is_some_and(|t| t.subscribers.is_empty())
        {
            self.topics.remove(name);
        }
    }

    /// Cluster mode: records an event that Redis numbered `seq`, when it is
    /// the next one. Returns the topic to fan it out to, or `None` (a gap, a
    /// duplicate, or a topic not followed here).
    pub fn record(&mut self, name: &str, seq: u64, frame: &Bytes) -> Option<&Topic> {
        let history = self.history;
        let topic = self.topics.get_mut(name)?;
        if seq != topic.seq + 1 {
            return None;
        }
        topic.seq = seq;
        topic.messages += 1;
        if history > 0 {
            if topic.history.len() == history {
                topic.history.pop_front();
            }
            topic.history.push_back(frame.clone());
        }
        Some(topic)
    }

    /// Removes every subscription of a connection that went away.
    pub fn remove_conn(&mut self, conn: ConnId) {
        let Some(held) = self.held.remove(&conn) else {
            return;
        };
        for key in held {
            if let Some(topic) = self.topics.get_mut(&key)
                && topic.remove(conn)
            {
                self.subscriptions -= 1;
            }
        }
    }

    /// How many topics a connection holds.
    pub fn held_by(&self, conn: ConnId) -> usize {
        self.held.get(&conn).map_or(0, Vec::len)
    }

    fn forget_held(&mut self, conn: ConnId, key: &Rc<str>) {
        if let Some(list) = self.held.get_mut(&conn) {
            if let Some(i) = list.iter().position(|k| Rc::ptr_eq(k, key)) {
                list.swap_remove(i);
            }
            if list.is_empty() {
                self.held.remove(&conn);
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

    fn frame(n: u8) -> Bytes {
        Bytes::from(vec![n])
    }

    fn targets(b: &Broker, topic: &str) -> Vec<usize> {
        let mut v: Vec<usize> = b
            .topic(topic)
            .unwrap()
            .subscribers()
            .iter()
            .map(|s| s.conn.key())
            .collect();
        v.sort_unstable();
        v
    }

    #[test]
    fn history_is_a_ring_of_the_last_n() {
        let mut b = Broker::new(3, false);
        b.create_topic("t").unwrap();
        for n in 1..=5 {
            b.publish("t", |_| frame(n)).unwrap();
        }
        let kept: Vec<u8> = b
            .topic("t")
            .unwrap()
            .history()
            .iter()
            .map(|f| f[0])
            .collect();
        assert_eq!(kept, vec![3, 4, 5]);
        assert_eq!(b.topic("t").unwrap().messages, 5);
        let s = b.subscribe(id(1), "t", "c", &Replay::Last(2)).unwrap();
        assert_eq!(
            s.replay.iter().map(|f| f[0]).collect::<Vec<_>>(),
            vec![4, 5]
        );
        let s = b.subscribe(id(2), "t", "d", &Replay::Last(100)).unwrap();
        assert_eq!(s.replay.len(), 3);
        let s = b.subscribe(id(3), "t", "e", &Replay::Last(0)).unwrap();
        assert!(s.replay.is_empty());
    }

    #[test]
    fn a_crowd_that_leaves_takes_its_memory_along() {
        let mut b = Broker::new(1, false);
        b.create_topic("t").unwrap();
        for conn in 0..1000 {
            b.subscribe(id(conn), "t", &format!("c{conn}"), &Replay::Last(0))
                .unwrap();
        }
        for conn in 1..1000 {
            b.unsubscribe(id(conn), "t").unwrap();
        }
        let t = b.topic("t").unwrap();
        assert_eq!(targets(&b, "t"), vec![0]);
        assert!(
            t.subscribers.capacity() <= 4,
            "{}",
            t.subscribers.capacity()
        );
        assert!(t.position.capacity() <= 16 && t.by_client.capacity() <= 16);
    }

    #[test]
    fn zero_history_keeps_nothing() {
        let mut b = Broker::new(0, false);
        b.create_topic("t").unwrap();
        b.publish("t", |_| frame(1)).unwrap();
        assert!(
            b.subscribe(id(1), "t", "c", &Replay::Last(10))
                .unwrap()
                .replay
                .is_empty()
        );
    }

    #[test]
    fn fan_out_targets_follow_subscriptions() {
        let mut b = Broker::new(10, false);
        b.create_topic("a").unwrap();
        b.create_topic("b").unwrap();
        for conn in 1..=4 {
            b.subscribe(id(conn), "a", &format!("c{conn}"), &Replay::Last(0))
                .unwrap();
        }
        b.subscribe(id(9), "b", "x", &Replay::Last(0)).unwrap();
        assert_eq!(targets(&b, "a"), vec![1, 2, 3, 4]);
        assert_eq!(targets(&b, "b"), vec![9]);
        b.unsubscribe(id(2), "a").unwrap();
        assert_eq!(targets(&b, "a"), vec![1, 3, 4]);
        assert_eq!(b.subscription_count(), 4);
        assert_eq!(
            b.publish("missing", |_| frame(0)).unwrap_err(),
            BrokerError::TopicNotFound
        );
    }

    #[test]
    fn subscribing_twice_keeps_one_path() {
        let mut b = Broker::new(10, false);
        b.create_topic("t").unwrap();
        b.publish("t", |_| frame(1)).unwrap();
        b.subscribe(id(1), "t", "c", &Replay::Last(0)).unwrap();
        let again = b.subscribe(id(1), "t", "c", &Replay::Last(5)).unwrap();
        assert!(again.replay.is_empty(), "no second replay on the same path");
        assert_eq!(targets(&b, "t"), vec![1]);
        assert_eq!(b.subscription_count(), 1);
        assert_eq!(b.held_by(id(1)), 1);
    }

    #[test]
    fn client_id_on_another_connection_takes_over() {
        let mut b = Broker::new(10, false);
        b.create_topic("t").unwrap();
        b.create_topic("u").unwrap();
        b.subscribe(id(1), "t", "same", &Replay::Last(0)).unwrap();
        b.subscribe(id(1), "u", "same", &Replay::Last(0)).unwrap();
        let s = b.subscribe(id(2), "t", "same", &Replay::Last(0)).unwrap();
        assert_eq!(s.replaced, Some(id(1)));
        assert_eq!(targets(&b, "t"), vec![2]);
        // The takeover is per topic: conn 1 keeps "u".
        assert_eq!(targets(&b, "u"), vec![1]);
        assert_eq!(b.held_by(id(1)), 1);
        assert_eq!(b.subscription_count(), 2);
        // Taking it back works the same way.
        assert_eq!(
            b.subscribe(id(1), "t", "same", &Replay::Last(0))
                .unwrap()
                .replaced,
            Some(id(2))
        );
        assert_eq!(b.held_by(id(2)), 0);
    }

    #[test]
    fn changed_client_id_on_the_same_connection_is_followed() {
        let mut b = Broker::new(10, false);
        b.create_topic("t").unwrap();
        b.subscribe(id(1), "t", "old", &Replay::Last(0)).unwrap();
        b.subscribe(id(1), "t", "new", &Replay::Last(0)).unwrap();
        // "old" is free now: another connection takes nothing over with it.
        assert_eq!(
            b.subscribe(id(2), "t", "old", &Replay::Last(0))
                .unwrap()
                .replaced,
            None
        );
        assert_eq!(
            b.subscribe(id(3), "t", "new", &Replay::Last(0))
                .unwrap()
                .replaced,
            Some(id(1))
        );
    }

    #[test]
    fn unsubscribe_is_idempotent_but_needs_the_topic() {
        let mut b = Broker::new(10, false);
        b.create_topic("t").unwrap();
        assert_eq!(b.unsubscribe(id(1), "t"), Ok(()));
        b.subscribe(id(1), "t", "c", &Replay::Last(0)).unwrap();
        assert_eq!(b.unsubscribe(id(1), "t"), Ok(()));
        assert_eq!(b.unsubscribe(id(1), "t"), Ok(()));
        assert_eq!(b.subscription_count(), 0);
        assert_eq!(
            b.unsubscribe(id(1), "nope"),
            Err(BrokerError::TopicNotFound)
        );
    }

    #[test]
    fn removing_a_connection_removes_every_trace() {
        let mut b = Broker::new(10, false);
        for t in ["a", "b", "c"] {
            b.create_topic(t).unwrap();
            b.subscribe(id(7), t, "seven", &Replay::Last(0)).unwrap();
            b.subscribe(id(8), t, "eight", &Replay::Last(0)).unwrap();
        }
        b.remove_conn(id(7));
        assert_eq!(b.subscription_count(), 3);
        assert_eq!(b.held_by(id(7)), 0);
        for t in ["a", "b", "c"] {
            assert_eq!(targets(&b, t), vec![8]);
            // The client_id is free again.
            assert_eq!(
                b.subscribe(id(9), t, "seven", &Replay::Last(0))
                    .unwrap()
                    .replaced,
                None
            );
        }
        b.remove_conn(id(7));
        assert_eq!(b.subscription_count(), 6);
    }

    #[test]
    fn deleting_a_topic_reports_and_forgets_its_subscribers() {
        let mut b = Broker::new(10, false);
        b.create_topic("t").unwrap();
        b.create_topic("u").unwrap();
        b.subscribe(id(1), "t", "a", &Replay::Last(0)).unwrap();
        b.subscribe(id(2), "t", "b", &Replay::Last(0)).unwrap();
        b.subscribe(id(1), "u", "a", &Replay::Last(0)).unwrap();
        let mut gone = b.delete_topic("t").unwrap();
        gone.sort_unstable();
        assert_eq!(gone, vec![id(1), id(2)]);
        assert_eq!(b.subscription_count(), 1);
        assert_eq!(b.held_by(id(1)), 1);
        assert_eq!(b.held_by(id(2)), 0);
        assert_eq!(b.delete_topic("t"), Err(BrokerError::TopicNotFound));
        assert_eq!(b.create_topic("u"), Err(BrokerError::TopicExists));
        // A new topic of the same name starts empty.
        b.create_topic("t").unwrap();
        assert!(b.topic("t").unwrap().subscribers().is_empty());
        assert_eq!(b.topic("t").unwrap().messages, 0);
    }

    #[test]
    fn auto_create_makes_topics_on_demand() {
        let mut off = Broker::new(10, false);
        assert_eq!(
            off.subscribe(id(1), "x", "c", &Replay::Last(0))
                .unwrap_err(),
            BrokerError::TopicNotFound
        );
        assert_eq!(
            off.publish("x", |_| frame(1)).unwrap_err(),
            BrokerError::TopicNotFound
        );
        assert_eq!(off.topic_count(), 0);
        let mut on = Broker::new(10, true);
        on.subscribe(id(1), "x", "c", &Replay::Last(0)).unwrap();
        assert_eq!(on.publish("y", |_| frame(1)).unwrap().0.messages, 1);
        assert_eq!(on.topic_count(), 2);
    }

    fn since(seq: u64, epoch: Option<&str>) -> Replay<'static> {
        Replay::Since {
            seq,
            epoch: epoch.map(|e| std::borrow::Cow::Owned(e.to_string())),
        }
    }

    #[test]
    fn seq_counts_from_one_and_since_resumes_after_it() {
        let mut b = Broker::new(3, false);
        b.create_topic("t").unwrap();
        for n in 1..=5 {
            let (t, _) = b.publish("t", |seq| frame(seq as u8)).unwrap();
            assert_eq!(t.seq, n);
        }
        let t = b.topic("t").unwrap();
        assert_eq!((t.first_seq(), t.seq, t.epoch.len()), (3, 5, 8));
        let epoch = t.epoch.to_string();
        let got = |s: Subscribed| {
            (
                s.replay.iter().map(|f| f[0]).collect::<Vec<_>>(),
                s.recovered,
                s.seq,
            )
        };
        // Inside the history: everything after it, recovered.
        let s = b
            .subscribe(id(1), "t", "a", &since(3, Some(&epoch)))
            .unwrap();
        assert_eq!(got(s), (vec![4, 5], Some(true), 5));
        // Right at its edge (the oldest kept is 3): still recovered.
        let s = b.subscribe(id(2), "t", "b", &since(2, None)).unwrap();
        assert_eq!(got(s), (vec![3, 4, 5], Some(true), 5));
        // Older than the history: what is kept, not recovered.
        let s = b.subscribe(id(3), "t", "c", &since(1, None)).unwrap();
        assert_eq!(got(s), (vec![3, 4, 5], Some(false), 5));
        // Up to date: nothing to send, nothing missing.
        let s = b.subscribe(id(4), "t", "d", &since(5, None)).unwrap();
        assert_eq!(got(s), (vec![], Some(true), 5));
        // Another epoch, or ahead of the topic: from the start of this epoch.
        let s = b
            .subscribe(id(5), "t", "e", &since(4, Some("zzzzzzzz")))
            .unwrap();
        assert_eq!(got(s), (vec![3, 4, 5], Some(false), 5));
        let s = b
            .subscribe(id(6), "t", "f", &since(99, Some(&epoch)))
            .unwrap();
        assert_eq!(got(s), (vec![3, 4, 5], Some(false), 5));
        // last_n says nothing of recovery.
        let s = b.subscribe(id(7), "t", "g", &Replay::Last(1)).unwrap();
        assert_eq!(got(s), (vec![5], None, 5));
        // Again on a connection that holds the topic: no replay, so complete
        // only when nothing came after the point.
        let s = b.subscribe(id(1), "t", "a", &since(3, None)).unwrap();
        assert_eq!(got(s), (vec![], Some(false), 5));
        let s = b.subscribe(id(1), "t", "a", &since(5, None)).unwrap();
        assert_eq!(got(s), (vec![], Some(true), 5));
    }

    #[test]
    fn a_recreated_topic_starts_a_new_epoch_at_seq_zero() {
        let mut b = Broker::new(10, false);
        b.create_topic("t").unwrap();
        b.publish("t", |_| frame(1)).unwrap();
        let old = b.topic("t").unwrap().epoch.clone();
        b.delete_topic("t").unwrap();
        b.create_topic("t").unwrap();
        let t = b.topic("t").unwrap();
        assert_ne!(t.epoch, old);
        assert_eq!((t.seq, t.first_seq()), (0, 1));
        // A client of the old epoch resumes from the new start: all of it is kept.
        b.publish("t", |_| frame(2)).unwrap();
        let s = b.subscribe(id(1), "t", "a", &since(1, Some(&old))).unwrap();
        assert_eq!((s.replay.len(), s.recovered), (1, Some(true)));
    }
}
