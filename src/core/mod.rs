//! The core: what every client request and REST call means, with no sockets.
//!
//! The loop hands in plain inputs — a connection id, a parsed request or a
//! frame's text, the current timestamp — and the core answers through an
//! [`Effects`] sink: frames to queue on connections, connections to close with
//! a [`Refusal`]. It never reads or writes a socket, so it is unit-tested and
//! exercised by a seeded simulation (`sim.rs`) without one.
//!
//! [`Core::fan_out`] is the one path by which an event reaches subscribers.

pub mod auth;
pub mod broker;
pub mod cluster;
mod flow;
pub mod rest;
#[cfg(test)]
mod sim;

use bytes::Bytes;

use crate::config::{Config, OverflowPolicy};
use crate::http::Request;
use crate::metrics::Counters;
use crate::outbound::Outbound;
use crate::protocol::{self, Acked, ErrorCode, Replay, Request as Msg};
use crate::refusal::Refusal;

use auth::{Grant, Grants, Keys, Op};
pub use broker::Broker;
use flow::Tally;
pub use flow::drop_notice;

/// A connection: its slab key, and a generation so that a recycled slot never
/// receives what was meant for the connection that held it before.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    key: u32,
    generation: u32,
}

impl ConnId {
    pub fn new(key: usize, generation: u32) -> ConnId {
        ConnId {
            key: key as u32,
            generation,
        }
    }

    /// The slot in the loop's slab.
    pub fn key(self) -> usize {
        self.key as usize
    }
}

impl std::fmt::Display for ConnId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.key, self.generation)
    }
}

/// What a core call makes happen, carried out by the loop (or by a model in tests).
pub trait Effects {
    /// Queues a frame that is never dropped (an answer, a notice) on `to`, if it is still open.
    fn send(&mut self, to: ConnId, frame: Bytes);
    /// Queues, like [`Effects::send`], a text frame whose JSON `write`
    /// appends: the loop writes it straight into the connection's queue.
    fn send_json(&mut self, to: ConnId, write: impl FnOnce(&mut Vec<u8>)) {
        let mut frame = crate::wire::frame::FrameBuilder::with_capacity(128);
        write(frame.payload());
        self.send(to, frame.text());
    }
    /// The outbound queue of `to` if it is an open WebSocket that takes events.
    fn outbox(&mut self, to: ConnId) -> Option<&mut Outbound>;
    /// Lets the peer take what it will of `to`'s queue now, before the
    /// overflow policy judges it (a burst within one turn is not a slow consumer).
    fn drain(&mut self, to: ConnId);
    /// Closes `conn` for `why` once what is queued has gone out.
    fn close(&mut self, conn: ConnId, why: Refusal);
    /// Cluster mode: a command for the engine (Redis).
    fn engine(&mut self, _command: crate::engine::Command) {}
    /// Cluster mode: the answer to a REST request that waited on Redis.
    fn reply(&mut self, _conn: ConnId, _reply: rest::Reply) {}
}

/// The overflow policy's settings (§3).
#[derive(Clone, Copy, Debug)]
pub struct Flow {
    pub limit: usize,
    pub policy: OverflowPolicy,
}

pub struct Core {
    pub broker: Broker,
    pub counters: Counters,
    flow: Flow,
    keys: Keys,
    /// The grants of WebSockets opened with a limited key (§6). A connection
    /// with full access has no entry, so without limited keys this stays
    /// empty and no request pays for a lookup.
    grants: Grants,
    /// Cluster mode (`--redis`): what the core tracks of the shared broker.
    pub cluster: Option<cluster::Cluster>,
}

impl Core {
    pub fn new(config: &Config) -> Core {
        Core::with_cluster(config, None)
    }

    /// A core in cluster mode when `node` is given (the engine's node name).
    pub fn with_cluster(config: &Config, node: Option<String>) -> Core {
        Core {
            broker: Broker::new(config.history, config.auto_create_topics),
            counters: Counters::default(),
            flow: Flow {
                limit: config.outbound_limit,
                policy: config.overflow_policy,
            },
            keys: Keys::new(
                &config.api_keys,
                &config.publish_keys,
                &config.subscribe_keys,
            ),
            grants: Grants::default(),
            cluster: node.map(|n| cluster::Cluster::new(n, config.auto_create_topics)),
        }
    }

    /// Whether an HTTP request (REST or handshake) may proceed (§6), and
    /// with what grant. A limited key may only read: every REST request but a
    /// `GET` (creating, deleting topics) needs full access.
    pub fn authorize(&self, req: &Request) -> Result<Grant, Refusal> {
        // The dashboard page is static and holds no data; it asks for a key itself.
        let exempt =
            req.method == "GET" && matches!(req.path.as_str(), "/health" | "/dashboard" | "/");
        if self.keys.is_empty() || exempt {
            return Ok(Grant::Full);
        }
        let presented = req.api_key.clone().or_else(|| {
            (req.path == "/ws")
                .then(|| req.query_param("api_key"))
                .flatten()
        });
        let grant = presented
            .and_then(|k| self.keys.grant(&k))
            .ok_or(Refusal::Unauthorized)?;
        if grant != Grant::Full && req.path != "/ws" && req.method != "GET" {
            return Err(Refusal::Forbidden("forbidden".into()));
        }
        Ok(grant)
    }

    /// A WebSocket opened (upgraded) with `grant`, which holds for its lifetime.
    pub fn open_ws(&mut self, conn: ConnId, grant: Grant) {
        if grant != Grant::Full {
            self.grants.insert(conn, grant);
        }
    }

    /// Whether `conn`'s key lets it make `request` (§6). Paid once per
    /// publish or (un)subscription, never per delivered event.
    fn permit(&mut self, conn: ConnId, request: &Msg) -> Result<(), Refusal> {
        if self.grants.is_empty() {
            return Ok(());
        }
        let Some((op, topic)) = Op::of(request) else {
            return Ok(());
        };
        if self.grants.allows(&self.keys, conn, op, topic) {
            Ok(())
        } else {
            Err(Refusal::Forbidden(op.refused(topic).into()))
        }
    }

    /// One client message (the text of a frame) from `conn`: exactly one answer, then its effects.
    pub fn on_text(&mut self, conn: ConnId, text: &str, ts: &str, fx: &mut impl Effects) {
        let incoming = protocol::parse(text);
        let rid = incoming.request_id;
        let request = match incoming.request {
            Ok(request) => request,
            Err(message) => {
                let why = Refusal::BadRequest(message.into());
                return self.refuse(conn, rid, incoming.topic, why, ts, fx);
            }
        };
        // Before anything is acted on: a refused publish reaches nobody, and a
        // refused subscribe does not create its topic.
        if let Err(why) = self.permit(conn, &request) {
            return self.refuse(conn, rid, incoming.topic, why, ts, fx);
        }
        match request {
            Msg::Ping => self.answer(conn, protocol::pong(rid, ts), fx),
            Msg::Subscribe {
                topic,
                client_id,
                replay,
            } if self.cluster.is_some() => {
                self.cluster_subscribe(conn, rid, &topic, &client_id, &replay, ts, fx)
            }
            Msg::Publish { topic, id, payload } if self.cluster.is_some() => {
                self.cluster_publish(conn, rid, &topic, &id, payload, ts, fx)
            }
            Msg::Unsubscribe { topic, .. } if self.cluster.is_some() => {
                self.cluster_unsubscribe(conn, rid, &topic, ts, fx)
            }
            Msg::Subscribe {
                topic,
                client_id,
                replay,
            } => self.subscribe(conn, rid, &topic, &client_id, &replay, ts, fx),
            Msg::Unsubscribe { topic, .. } => match self.broker.unsubscribe(conn, &topic) {
                Ok(()) => self.answer(conn, protocol::ack(rid, Some(&topic), Acked::Plain, ts), fx),
                Err(_) => self.refuse(
                    conn,
                    rid,
                    None,
                    Refusal::TopicNotFound(topic.into()),
                    ts,
                    fx,
                ),
            },
            Msg::Publish { topic, id, payload } => {
                let event = |seq| protocol::event(&topic, seq, &id, payload, ts);
                let Ok((t, frame)) = self.broker.publish(&topic, event) else {
                    let why = Refusal::TopicNotFound(topic.into());
                    return self.refuse(conn, rid, None, why, ts, fx);
                };
                self.counters.published += 1;
                // The ack goes first, so a publisher subscribed to its topic sees it before the event.
                let acked = Acked::Published { seq: t.seq };
                fx.send_json(conn, |out| {
                    protocol::ack_json(out, rid, Some(&topic), acked, ts);
                });
                let tally = flow::offer_all(t.subscribers(), &frame, self.flow, ts, fx);
                self.settle(&topic, tally);
            }
        }
    }

    /// A binary frame: refused, the connection stays open.
    pub fn on_binary(&mut self, conn: ConnId, ts: &str, fx: &mut impl Effects) {
        let why =
            Refusal::BadRequest("binary frames are not supported: send JSON in text frames".into());
        self.refuse(conn, None, None, why, ts, fx);
    }

    /// Delivers one event frame to every subscriber of `topic` under the
    /// overflow policy: one shared frame, one queue push each. This is the
    /// one path by which events reach subscribers.
    pub fn fan_out(&mut self, topic: &str, frame: &Bytes, ts: &str, fx: &mut impl Effects) {
        let Some(t) = self.broker.topic(topic) else {
            return;
        };
        let tally = flow::offer_all(t.subscribers(), frame, self.flow, ts, fx);
        self.settle(topic, tally);
    }

    /// A REST request (§5), already authorized. Subscribers of a deleted topic are told.
    pub fn rest(
        &mut self,
        conn: ConnId,
        req: &Request,
        view: &rest::View,
        ts: &str,
        fx: &mut impl Effects,
    ) -> rest::Reply {
        if let Some(reply) = self.cluster_rest(conn, req, fx) {
            return reply;
        }
        let cluster = self.cluster.as_ref();
        let reply = rest::route(req, &mut self.broker, &self.counters, view, cluster);
        if let Some((topic, conns)) = &reply.deleted {
            let info = protocol::info(Some(topic), "topic_deleted", ts);
            for conn in conns {
                fx.send(*conn, info.clone());
            }
        }
        reply
    }

    /// Forgets every subscription, and the grant, of a connection that closes or went away.
    /// Closes a WebSocket for `why` (close frame, then hang up) and forgets
    /// its subscriptions.
    pub fn close(&mut self, conn: ConnId, why: Refusal, fx: &mut impl Effects) {
        fx.close(conn, why);
        self.remove_conn(conn);
    }

    pub fn remove_conn(&mut self, conn: ConnId) {
        self.broker.remove_conn(conn);
        self.grants.remove(&conn);
        self.cluster_remove(conn);
    }

    #[allow(clippy::too_many_arguments)]
    fn subscribe(
        &mut self,
        conn: ConnId,
        rid: Option<&str>,
        topic: &str,
        client_id: &str,
        replay: &Replay<'_>,
        ts: &str,
        fx: &mut impl Effects,
    ) {
        let done = match self.broker.subscribe(conn, topic, client_id, replay) {
            Ok(done) => done,
            Err(_) => {
                let why = Refusal::TopicNotFound(topic.into());
                return self.refuse(conn, rid, None, why, ts, fx);
            }
        };
        let acked = Acked::Subscribed {
            seq: done.seq,
            epoch: &done.epoch,
            recovered: done.recovered,
        };
        fx.send(conn, protocol::ack(rid, Some(topic), acked, ts));
        let mut tally = Tally::default();
        for frame in &done.replay {
            tally.add(conn, flow::offer(fx, conn, frame, self.flow, ts));
        }
        if let Some(other) = done.replaced {
            fx.send(
                other,
                protocol::info(Some(topic), "subscription_replaced", ts),
            );
        }
        self.settle(topic, tally);
    }

    /// Counts what a fan-out did and forgets the slow consumers it closed.
    fn settle(&mut self, topic: &str, tally: Tally) {
        self.counters.delivered += tally.delivered;
        self.counters.dropped += tally.dropped;
        self.counters.slow_consumer_disconnects += tally.disconnected.len() as u64;
        if tally.dropped == 0 && tally.disconnected.is_empty() {
            return;
        }
        if let Some(t) = self.broker.topic_mut(topic) {
            t.dropped += tally.dropped;
            t.slow_disconnects += tally.disconnected.len() as u64;
        }
        // The connections were closed when judged; their subscriptions go now,
        // after the walk over the subscriber list.
        for conn in tally.disconnected {
            self.broker.remove_conn(conn);
            log::debug!("connection {conn}: slow consumer disconnected");
        }
    }

    /// Answers a request with an `error` (the connection stays open).
    fn refuse(
        &mut self,
        conn: ConnId,
        rid: Option<&str>,
        topic: Option<&str>,
        why: Refusal,
        ts: &str,
        fx: &mut impl Effects,
    ) {
        self.counters.reject(&why);
        let code = why.error_code().unwrap_or(ErrorCode::Internal);
        let topic = topic.or(why.topic());
        let error = protocol::error(rid, topic, code, &why.message(), ts);
        self.answer(conn, error, fx);
    }
}

#[cfg(test)]
mod cluster_tests;
#[cfg(test)]
mod peers;
#[cfg(test)]
mod tests;
