//! Cluster mode's link to Redis: two more sockets in the loop, one for
//! commands (scripts, pipelined, answered in order) and one in subscribe mode
//! (events and topic changes from every node). No threads, no blocking.
//!
//! The core sends [`Command`]s; the engine turns them into Redis commands,
//! and Redis's replies and messages into [`Event`]s for the core. It decides
//! nothing about clients: that is the core's job.

mod link;
pub mod resp;
pub mod scripts;
pub mod url;

use std::collections::{HashSet, VecDeque};
use std::rc::Rc;
use std::time::{Duration, Instant};

use mio::Token;

use crate::core::ConnId;
use link::Link;
pub use link::check_credentials;
use resp::Value;
use scripts::Script;
pub use url::RedisUrl;

pub const CMD_TOKEN: Token = Token(usize::MAX - 4);
pub const SUB_TOKEN: Token = Token(usize::MAX - 5);

/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
const MIN_BACKOFF: Duration = Duration::from_millis(100);

/// Which request a reply answers: a connection and its request's number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    pub conn: ConnId,
    pub id: u64,
}

/// What the core asks of the cluster.
#[derive(Debug)]
pub enum Command {
    /// Assign a seq, keep and fan out the event `head + seq + tail`.
    Publish {
        slot: Slot,
        topic: Box<str>,
        head: Vec<u8>,
        tail: Vec<u8>,
        /// Create the topic with this epoch if it does not exist (auto-create).
        create: Option<Box<str>>,
    },
    /// Follow a topic's events, then read its state.
    Follow {
        topic: Box<str>,
        create: Option<Box<str>>,
    },
    /// Read a followed topic's state again (a gap was seen, or the link came back).
    Resync {
        topic: Box<str>,
    },
    Unfollow {
        topic: Box<str>,
    },
    /// `slot` is `None` for a re-registration after Redis lost its data.
    Create {
        slot: Option<Slot>,
        topic: Box<str>,
        epoch: Box<str>,
    },
    Delete {
        slot: Slot,
        topic: Box<str>,
    },
    /// Publish this node's subscription counts and read every topic's.
    Sync {
        counts: Vec<(Box<str>, usize)>,
    },
}

/// Why a cluster request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The topic does not exist.
    NotFound,
    /// Redis cannot be reached, or did not answer in time.
    Unavailable,
    /// Sent to Redis, which did not answer (the link broke, or the request
    /// timed out): it may have been carried out.
    Unconfirmed,
    /// Redis lost the cluster's data (restarted without persistence).
    Lost,
}

/// A topic's state as Redis holds it.
#[derive(Debug)]
pub struct Snapshot {
    pub epoch: Box<str>,
    pub seq: u64,
    /// The kept events (JSON text), oldest first.
    pub history: Vec<Vec<u8>>,
}

/// What the cluster tells the core.
#[derive(Debug)]
pub enum Event {
    Published {
        slot: Slot,
        result: Result<u64, Failure>,
    },
    /// A Follow or Resync finished.
    Synced {
        topic: Box<str>,
        result: Result<Snapshot, Failure>,
    },
    /// An event of a followed topic, from any node.
    Message {
        topic: Box<str>,
        seq: u64,
        json: Vec<u8>,
    },
    Created {
        slot: Slot,
        result: Result<bool, Failure>,
    },
    Deleted {
        slot: Slot,
        result: Result<bool, Failure>,
    },
    /// A topic was created or deleted, on any node.
    TopicCreated(Box<str>),
    TopicDeleted(Box<str>),
    /// Every topic: name, seq and cluster-wide subscriptions.
    Stats(Vec<(Box<str>, u64, u64)>),
    /// The link came up (again): followed topics are subscribed again.
    Up,
    Down,
}

/// What each reply on the command link answers, in order.
#[derive(Debug)]
enum Waiting {
    /// AUTH or SELECT: an error means the link is unusable.
    Setup,
    /// SCRIPT LOAD: an error means the cluster's scripts cannot run here.
    Load,
    /// The PING after the set-up: its answer means the link works.
    Ping,
    Publish(Slot, Instant),
    Read(Box<str>, Instant),
    Create(Option<Slot>, Instant),
    Delete(Slot, Instant),
    Sync,
    /// Timed out: the core was told; the reply is dropped.
    Expired,
}

/// Loads every script on the command link: what follows it there may use them.
fn load_scripts(out: &mut Vec<u8>, waiting: &mut VecDeque<Waiting>) {
    for script in Script::ALL {
        resp::command(out, &[b"SCRIPT", b"LOAD", script.text().as_bytes()]);
        waiting.push_back(Waiting::Load);
    }
}

/// Counters for `/metrics`.
#[derive(Debug, Default, Clone, Copy)]
pub struct EngineStats {
    pub up: bool,
    pub reconnects: u64,
    /// The last publish's round trip.
    pub rtt: Duration,
    pub events_in: u64,
    pub events_out: u64,
}

pub struct Engine {
    url: RedisUrl,
    prefix: String,
    pub node: String,
    timeout: Duration,
    cmd: Link,
    sub: Link,
    waiting: VecDeque<Waiting>,
    /// Topics whose events channel we subscribe to.
    followed: HashSet<Box<str>>,
    events: Vec<Event>,
    pub stats: EngineStats,
    retry_at: Option<Instant>,
    /// A connection attempt in progress, and when it is given up.
    connecting: Option<Instant>,
    backoff: Duration,
    down_logged: bool,
    /// Each script's digest for `EVALSHA`, in `Script::ALL` order.
    digests: [[u8; 40]; 5],
    names: Rc<Names>,
}

/// The names that do not depend on a topic, made once: a publish formatted
/// four of them, and every event from Redis two. Shared (`Rc`) so that a
/// command can hold them while it writes to the link.
struct Names {
    /// `P:topics`, the set of every topic.
    topics: Vec<u8>,
    /// `P:cluster`, whose absence tells that Redis lost the cluster's data.
    marker: Vec<u8>,
    /// `P:control`, the channel of create and delete notices.
    control: Vec<u8>,
    /// `P:{`, how every topic's event channel begins.
    channel_start: Vec<u8>,
    /// The history's length (`--history`), as the scripts take it.
    keep: String,
}

impl Engine {
    pub fn new(
        url: RedisUrl,
        prefix: String,
        history: usize,
        timeout: Duration,
        now: Instant,
    ) -> Engine {
        let node = {
            let mut buf = uuid::Uuid::encode_buffer();
            uuid::Uuid::new_v4().simple().encode_lower(&mut buf)[..8].to_string()
        };
        let names = Rc::new(Names {
            topics: format!("{prefix}:topics").into_bytes(),
            marker: format!("{prefix}:cluster").into_bytes(),
            control: format!("{prefix}:control").into_bytes(),
            channel_start: format!("{prefix}:{{").into_bytes(),
            keep: history.to_string(),
        });
        Engine {
            url,
            prefix,
            node,
            timeout,
            cmd: Link::new(CMD_TOKEN),
            sub: Link::new(SUB_TOKEN),
            waiting: VecDeque::new(),
            followed: HashSet::new(),
            events: Vec::new(),
            stats: EngineStats::default(),
            retry_at: Some(now),
            connecting: None,
            backoff: MIN_BACKOFF,
            down_logged: false,
            digests: scripts::digests(),
            names,
        }
    }

    pub fn is_up(&self) -> bool {
        self.stats.up
    }

    /// Events for the core since the last call.
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    fn key(&self, topic: &str, what: &str) -> Vec<u8> {
        format!("{}:{{{topic}}}:{what}", self.prefix).into_bytes()
    }

    fn eval(&mut self, script: Script, keys: &[&[u8]], args: &[&[u8]], waiting: Waiting) {
        let nkeys = keys.len().to_string();
        let digest = &self.digests[script as usize];
        let mut all: Vec<&[u8]> = vec![b"EVALSHA", digest, nkeys.as_bytes()];
        all.extend_from_slice(keys);
        all.extend_from_slice(args);
        resp::command(&mut self.cmd.out, &all);
        self.waiting.push_back(waiting);
    }

    /// Carries out one command of the core (failing it at once when the link is down).
    pub fn submit(&mut self, command: Command, now: Instant) {
        let up = self.stats.up;
        match command {
            Command::Publish {
                slot,
                topic,
                head,
                tail,
                create,
            } => {
                if !up {
                    return self.events.push(Event::Published {
                        slot,
                        result: Err(Failure::Unavailable),
                    });
                }
                let names = Rc::clone(&self.names);
                let (meta, history) = (self.key(&topic, "meta"), self.key(&topic, "history"));
                let channel = self.key(&topic, "events");
                let create = create.unwrap_or_default();
                self.eval(
                    Script::Publish,
                    &[&names.topics, &meta, &history, &names.marker],
                    &[
                        &head,
                        &tail,
                        names.keep.as_bytes(),
                        &channel,
                        create.as_bytes(),
                        topic.as_bytes(),
                        &names.control,
                    ],
                    Waiting::Publish(slot, now),
                );
                self.stats.events_out += 1;
            }
            Command::Follow { topic, create } => {
                if !up {
                    return self.events.push(Event::Synced {
                        topic,
                        result: Err(Failure::Unavailable),
                    });
                }
                if self.followed.insert(topic.clone()) {
                    let channel = self.key(&topic, "events");
                    resp::command(&mut self.sub.out, &[b"SUBSCRIBE", &channel]);
                }
                // The subscribe is sent first: whatever is published after the
                // snapshot arrives as a message, and the core merges by seq.
                self.read(topic, create.unwrap_or_default().as_bytes(), now);
            }
            Command::Resync { topic } => {
                if up {
                    self.read(topic, b"", now);
                }
            }
            Command::Unfollow { topic } => {
                if self.followed.remove(&topic) && up {
                    let channel = self.key(&topic, "events");
                    resp::command(&mut self.sub.out, &[b"UNSUBSCRIBE", &channel]);
                }
            }
            Command::Create { slot, topic, epoch } => {
                if !up {
                    if let Some(slot) = slot {
                        self.events.push(Event::Created {
                            slot,
                            result: Err(Failure::Unavailable),
                        });
                    }
                    return;
                }
                let names = Rc::clone(&self.names);
                let meta = self.key(&topic, "meta");
                self.eval(
                    Script::Create,
                    &[&names.topics, &meta, &names.marker],
                    &[topic.as_bytes(), epoch.as_bytes(), &names.control],
                    Waiting::Create(slot, now),
                );
            }
            Command::Delete { slot, topic } => {
                if !up {
                    return self.events.push(Event::Deleted {
                        slot,
                        result: Err(Failure::Unavailable),
                    });
                }
                let names = Rc::clone(&self.names);
                let (meta, history) = (self.key(&topic, "meta"), self.key(&topic, "history"));
                let subs = self.key(&topic, "subs");
                self.eval(
                    Script::Delete,
                    &[&names.topics, &meta, &history, &subs],
                    &[topic.as_bytes(), &names.control],
                    Waiting::Delete(slot, now),
                );
            }
            Command::Sync { counts } => {
                // One sync in flight at a time is enough.
                if !up || self.waiting.iter().any(|w| matches!(w, Waiting::Sync)) {
                    return;
                }
                let names = Rc::clone(&self.names);
                let now_ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis())
                    .to_string();
                let counts: Vec<(Box<str>, String)> = counts
                    .into_iter()
                    .map(|(t, n)| (t, n.to_string()))
                    .collect();
                let prefix = self.prefix.clone();
                let node = self.node.clone();
                let mut args: Vec<&[u8]> = vec![
                    prefix.as_bytes(),
                    node.as_bytes(),
                    now_ms.as_bytes(),
                    b"3000",
                ];
                for (t, n) in &counts {
                    args.push(t.as_bytes());
                    args.push(n.as_bytes());
                }
                self.eval(Script::Sync, &[&names.topics], &args, Waiting::Sync);
            }
        }
    }

    fn read(&mut self, topic: Box<str>, create: &[u8], now: Instant) {
        let names = Rc::clone(&self.names);
        let (meta, history) = (self.key(&topic, "meta"), self.key(&topic, "history"));
        let name = topic.clone();
        self.eval(
            Script::Read,
            &[&names.topics, &meta, &history, &names.marker],
            &[create, name.as_bytes(), &names.control],
            Waiting::Read(topic, now),
        );
    }

    /// One reply on the command link; an error means the link is unusable.
    fn on_reply(&mut self, value: Value, now: Instant) -> Result<(), String> {
        let Some(w) = self.waiting.pop_front() else {
            return Err("Redis sent a reply nobody asked for".into());
        };
        let failed = matches!(value, Value::Error(_));
        if let Value::Error(e) = &value {
            log::warn!("redis error: {e}");
            // The script cache was flushed (SCRIPT FLUSH): this request and
            // those already sent behind it fail; the ones after the reload
            // run. (Retrying could reorder them behind later ones.)
            let reloading = self.waiting.iter().any(|w| matches!(w, Waiting::Load));
            if e.starts_with("NOSCRIPT") && !reloading {
                load_scripts(&mut self.cmd.out, &mut self.waiting);
            }
        }
        match w {
            Waiting::Setup if failed => {
                return Err("Redis refused the credentials or the database".into());
            }
            Waiting::Setup => {}
            Waiting::Load if failed => {
                return Err("Redis refused to load the cluster's scripts (SCRIPT LOAD)".into());
            }
            Waiting::Load => {}
            Waiting::Ping if failed => return Err("Redis refused PING".into()),
            Waiting::Ping => {
                self.cmd.answered = true;
                self.linked();
            }
            Waiting::Publish(slot, sent) => {
                self.stats.rtt = now.saturating_duration_since(sent);
                let result = match value.as_int() {
                    Some(-1) => Err(Failure::NotFound),
                    Some(seq) if seq > 0 && !failed => Ok(seq as u64),
                    _ => Err(Failure::Unavailable),
                };
                self.events.push(Event::Published { slot, result });
            }
            Waiting::Read(topic, _) => {
                let items = value.items();
                let result = if failed {
                    Err(Failure::Unavailable)
                } else if items.len() == 1 {
                    Err(Failure::Lost)
                } else if items.len() < 2 {
                    Err(Failure::NotFound)
                } else {
                    Ok(Snapshot {
                        epoch: String::from_utf8_lossy(items[0].as_bytes().unwrap_or_default())
                            .into(),
                        seq: items[1].as_int().unwrap_or(0).max(0) as u64,
                        history: items[2..]
                            .iter()
                            .filter_map(|v| v.as_bytes().map(<[u8]>::to_vec))
                            .collect(),
                    })
                };
                self.events.push(Event::Synced { topic, result });
            }
            Waiting::Create(slot, _) => {
                if let Some(slot) = slot {
                    let result = match value.as_int() {
                        Some(n) if !failed => Ok(n == 1),
                        _ => Err(Failure::Unavailable),
                    };
                    self.events.push(Event::Created { slot, result });
                }
            }
            Waiting::Delete(slot, _) => {
                let result = match value.as_int() {
                    Some(n) if !failed => Ok(n == 1),
                    _ => Err(Failure::Unavailable),
                };
                self.events.push(Event::Deleted { slot, result });
            }
            Waiting::Sync => {
                let items = value.items();
                let stats = items
                    .chunks_exact(3)
                    .filter_map(|c| {
                        let name = std::str::from_utf8(c[0].as_bytes()?).ok()?;
                        Some((
                            name.into(),
                            c[1].as_int()?.max(0) as u64,
                            c[2].as_int()?.max(0) as u64,
                        ))
                    })
                    .collect();
                self.events.push(Event::Stats(stats));
            }
            Waiting::Expired => {}
        }
        Ok(())
    }

    /// A push on the subscribe link: `message`, or a (un)subscribe confirmation.
    fn on_message(&mut self, value: Value) {
        let items = value.items();
        if items.first().and_then(Value::as_bytes) == Some(b"subscribe") {
            // The first confirmation shows the subscribe link works.
            self.sub.answered = true;
            return self.linked();
        }
        if items.len() != 3 || items[0].as_bytes() != Some(b"message") {
            return;
        }
        let (Some(channel), Some(data)) = (items[1].as_bytes(), items[2].as_bytes()) else {
            return;
        };
        if channel == self.names.control.as_slice() {
            let text = String::from_utf8_lossy(data);
            match text.split_once(' ') {
                Some(("created", t)) => self.events.push(Event::TopicCreated(t.into())),
                Some(("deleted", t)) => self.events.push(Event::TopicDeleted(t.into())),
                _ => {}
            }
            return;
        }
        // `P:{topic}:events` carries "<seq> <event>".
        let Some(topic) = channel
            .strip_prefix(self.names.channel_start.as_slice())
            .and_then(|rest| rest.strip_suffix(b"}:events"))
            .and_then(|t| std::str::from_utf8(t).ok())
        else {
            return;
        };
        let Some(space) = data.iter().position(|b| *b == b' ') else {
            return;
        };
        let Some(seq) = std::str::from_utf8(&data[..space])
            .ok()
            .and_then(|s| s.parse().ok())
        else {
            return;
        };
        self.stats.events_in += 1;
        self.events.push(Event::Message {
            topic: topic.into(),
            seq,
            json: data[space + 1..].to_vec(),
        });
    }
}
