//! The REST routes of `protocol.md` §5, as functions of the broker. No I/O.

use serde_json::json;

use super::ConnId;
use super::broker::{Broker, BrokerError};
use super::cluster::Cluster;
use crate::dashboard;
use crate::http::{self, Request};
use crate::metrics::{self, Counters, Gauges, IoCounters};
use crate::protocol::valid_topic;
use crate::refusal::{Allow, Refusal};

/// A route's answer.
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    /// Further response headers.
    pub headers: &'static [(&'static str, &'static str)],
    /// A deleted topic and the connections subscribed to it, to be told.
    pub deleted: Option<(String, Vec<ConnId>)>,
    /// Cluster mode: the answer comes once Redis has decided (`Effects::reply`).
    pub pending: bool,
}

impl Reply {
    fn json(status: u16, body: serde_json::Value) -> Reply {
        Reply {
            status,
            content_type: "application/json",
            body: body.to_string().into_bytes(),
            headers: &[],
            deleted: None,
            pending: false,
        }
    }

    pub fn pending() -> Reply {
        Reply {
            pending: true,
            ..Reply::json(0, json!(null))
        }
    }

    pub fn created(name: &str) -> Reply {
        Reply::json(201, json!({ "status": "created", "topic": name }))
    }

    pub fn deleted(name: &str) -> Reply {
        Reply::json(200, json!({ "status": "deleted", "topic": name }))
    }

    /// `{"error":"…"}` with the refusal's status and headers.
    pub fn refused(why: Refusal) -> Reply {
        Reply {
            headers: why.headers(),
            body: http::refusal_body(&why),
            ..Reply::json(why.status(), json!(null))
        }
    }

    fn not_allowed(allow: Allow) -> Reply {
        Reply::refused(Refusal::MethodNotAllowed(allow))
    }
}

/// What the routes read from the loop.
pub struct View {
    pub io: IoCounters,
    pub gauges: Gauges,
    /// Cluster mode: the link to Redis.
    pub engine: Option<crate::engine::EngineStats>,
}

pub fn route(
    req: &Request,
    broker: &mut Broker,
    counters: &Counters,
    view: &View,
    cluster: Option<&Cluster>,
) -> Reply {
    let method = req.method.as_str();
    match req.path.as_str() {
        "/topics" => match method {
            "GET" => match cluster {
                Some(c) => list_cluster_topics(c),
                None => list_topics(broker),
            },
            "POST" => create_topic(&req.body, broker),
            _ => Reply::not_allowed(Allow::GetPost),
        },
        "/health" => match method {
            "GET" => health(broker, view, cluster),
            _ => Reply::not_allowed(Allow::Get),
        },
        "/stats" => match method {
            "GET" => stats(broker, counters, view),
            _ => Reply::not_allowed(Allow::Get),
        },
        "/metrics" => match method {
            "GET" => Reply {
                content_type: "text/plain; version=0.0.4; charset=utf-8",
                body: metrics::render(counters, &view.io, &view.gauges, view.engine.as_ref())
                    .into_bytes(),
                ..Reply::json(200, json!(null))
            },
            _ => Reply::not_allowed(Allow::Get),
        },
        "/dashboard" => match method {
            "GET" => Reply {
                content_type: dashboard::CONTENT_TYPE,
                body: dashboard::PAGE.as_bytes().to_vec(),
                headers: dashboard::HEADERS,
                ..Reply::json(200, json!(null))
            },
            _ => Reply::not_allowed(Allow::Get),
        },
        "/" => match method {
            "GET" => Reply {
                headers: dashboard::REDIRECT_HEADERS,
                ..Reply::json(302, json!({ "location": "dashboard" }))
            },
            _ => Reply::not_allowed(Allow::Get),
        },
        path => match path.strip_prefix("/topics/") {
            Some(name) => match method {
                "GET" => topic_detail(name, broker, cluster),
                "DELETE" => delete_topic(name, broker),
                _ => Reply::not_allowed(Allow::GetDelete),
            },
            None => Reply::refused(Refusal::NoRoute),
        },
    }
}

fn list_topics(broker: &Broker) -> Reply {
    let topics: Vec<_> = broker
        .topics()
        .into_iter()
        .map(
            |(name, t)| json!({ "name": name, "subscribers": t.subscribers().len(), "seq": t.seq }),
        )
        .collect();
    Reply::json(200, json!({ "topics": topics }))
}

fn health(broker: &Broker, view: &View, cluster: Option<&Cluster>) -> Reply {
    let connections = view.gauges.http_connections + view.gauges.ws_connections;
    let uptime = view.gauges.uptime_seconds as u64;
    let Some(c) = cluster else {
        return Reply::json(
            200,
            json!({
                "status": "ok",
                "uptime_sec": uptime,
                "topics": broker.topic_count(),
                "subscribers": broker.subscription_count(),
                "connections": connections,
            }),
        );
    };
    // Cluster-wide topics and subscriptions, as of the last sync (≤ 1 s old).
    let subscribers: u64 = c.topics.values().map(|(_, subs)| subs).sum();
    Reply::json(
        200,
        json!({
            "status": if c.up { "ok" } else { "degraded" },
            "uptime_sec": uptime,
            "topics": c.topics.len(),
            "subscribers": subscribers,
            "connections": connections,
            "cluster": { "node": c.node, "redis": if c.up { "up" } else { "down" } },
        }),
    )
}

fn list_cluster_topics(c: &Cluster) -> Reply {
    let topics: Vec<_> = c
        .topics
        .iter()
        .map(|(name, (seq, subs))| json!({ "name": name, "subscribers": subs, "seq": seq }))
        .collect();
    Reply::json(200, json!({ "topics": topics }))
}

fn topic_detail(raw_name: &str, broker: &Broker, cluster: Option<&Cluster>) -> Reply {
    let Some(name) = http::percent_decode(raw_name) else {
        return Reply::refused(Refusal::NoSuchTopic);
    };
    // Cluster mode: the cluster's seq and subscriptions (from the last sync).
    let shared = cluster.and_then(|c| c.topics.get(name.as_str()).copied());
    let Some(t) = broker.topic(&name) else {
        // Not followed here: what the cluster knows of it, if anything.
        return match shared {
            Some((seq, subs)) => Reply::json(
                200,
                json!({ "name": name, "subscribers": subs, "messages": seq, "seq": seq }),
            ),
            None => Reply::refused(Refusal::NoSuchTopic),
        };
    };
    // The history as this node keeps (or, in cluster mode, mirrors) it.
    let subscribers = shared.map_or(t.subscribers().len() as u64, |(_, subs)| subs);
    Reply::json(
        200,
        json!({
            "name": name,
            "subscribers": subscribers,
            "messages": t.messages,
            "seq": t.seq,
            "epoch": &*t.epoch,
            "history": {
                "kept": t.history().len(),
                "capacity": broker.history_capacity(),
                "first_seq": t.first_seq(),
            },
            "dropped": t.dropped,
            "slow_consumer_disconnects": t.slow_disconnects,
        }),
    )
}

/// The valid topic name of a `POST /topics` body, or the answer that refuses it.
#[allow(clippy::result_large_err)] // Once per create; no hot path.
pub fn topic_name(body: &[u8]) -> Result<String, Reply> {
    let value: serde_json::Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return Err(bad_body(format!("invalid JSON body: {e}"))),
    };
    let Some(name) = value.get("name").and_then(|n| n.as_str()) else {
        return Err(bad_body(
            "body must be an object with a string field 'name'",
        ));
    };
    if !valid_topic(name) {
        return Err(bad_body(
            "invalid topic name: use 1 to 255 characters from A-Z a-z 0-9 . _ - :",
        ));
    }
    Ok(name.to_string())
}

fn bad_body(why: impl Into<std::borrow::Cow<'static, str>>) -> Reply {
    Reply::refused(Refusal::BadBody(why.into()))
}

fn create_topic(body: &[u8], broker: &mut Broker) -> Reply {
    let name = match topic_name(body) {
        Ok(name) => name,
        Err(reply) => return reply,
    };
    match broker.create_topic(&name) {
        Ok(()) => Reply::created(&name),
        Err(_) => Reply::refused(Refusal::TopicExists),
    }
}

fn delete_topic(raw_name: &str, broker: &mut Broker) -> Reply {
    let Some(name) = http::percent_decode(raw_name) else {
        return Reply::refused(Refusal::NoSuchTopic);
    };
    match broker.delete_topic(&name) {
        Ok(conns) => Reply {
            deleted: Some((name.clone(), conns)),
            ..Reply::deleted(&name)
        },
        Err(BrokerError::TopicNotFound | BrokerError::TopicExists) => {
            Reply::refused(Refusal::NoSuchTopic)
        }
    }
}

fn stats(broker: &Broker, c: &Counters, view: &View) -> Reply {
    let mut topics = serde_json::Map::new();
    for (name, t) in broker.topics() {
        topics.insert(
            name.to_string(),
            json!({
                "messages": t.messages,
                "subscribers": t.subscribers().len(),
                "seq": t.seq,
                "dropped": t.dropped,
                "slow_consumer_disconnects": t.slow_disconnects,
            }),
        );
    }
    Reply::json(
        200,
        json!({
            "topics": topics,
            "totals": {
                "connections": view.gauges.http_connections + view.gauges.ws_connections,
                "websocket_connections": view.gauges.ws_connections,
                "subscriptions": broker.subscription_count(),
                "published": c.published,
                "delivered": c.delivered,
                "dropped": c.dropped,
                "slow_consumer_disconnects": c.slow_consumer_disconnects,
            },
            "uptime_sec": view.gauges.uptime_seconds as u64,
        }),
    )
}
