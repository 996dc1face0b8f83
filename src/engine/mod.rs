//! Cluster mode's link to Redis: two more sockets in the loop, one for
//! commands (scripts, pipelined, answered in order) and one in subscribe mode
//! (events and topic changes from every node). No threads, no blocking.
//!
//! The core sends [`Command`]s; the engine turns them into Redis commands,
//! and Redis's replies and messages into [`Event`]s for the core. It decides
//! nothing about clients: that is the core's job.

pub mod resp;
pub mod scripts;
pub mod url;

use std::collections::{HashSet, VecDeque};
use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

use crate::core::ConnId;
use crate::io::{self, Io};
use resp::{Decoded, Value};
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
    Publish(Slot, Instant),
    Read(Box<str>, Instant),
    Create(Option<Slot>, Instant),
    Delete(Slot, Instant),
    Sync,
    /// Timed out: the core was told; the reply is dropped.
    Expired,
}

struct Link {
    token: Token,
    socket: Option<TcpStream>,
    connected: bool,
    out: Vec<u8>,
    inbuf: Vec<u8>,
    /// Replies to AUTH/SELECT still to come on the subscribe link.
    setup_replies: usize,
}

impl Link {
    fn new(token: Token) -> Link {
        Link {
            token,
            socket: None,
            connected: false,
            out: Vec::new(),
            inbuf: Vec::new(),
            setup_replies: 0,
        }
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
    history: usize,
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
        Engine {
            url,
            prefix,
            node,
            history,
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

    fn marker(&self) -> Vec<u8> {
        format!("{}:cluster", self.prefix).into_bytes()
    }

    fn topics_key(&self) -> Vec<u8> {
        format!("{}:topics", self.prefix).into_bytes()
    }

    fn control(&self) -> Vec<u8> {
        format!("{}:control", self.prefix).into_bytes()
    }

    fn eval(&mut self, script: &str, keys: &[&[u8]], args: &[&[u8]], waiting: Waiting) {
        let nkeys = keys.len().to_string();
        let mut all: Vec<&[u8]> = vec![b"EVAL", script.as_bytes(), nkeys.as_bytes()];
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
                let (topics, meta, history, marker) = (
                    self.topics_key(),
                    self.key(&topic, "meta"),
                    self.key(&topic, "history"),
                    self.marker(),
                );
                let keep = self.history.to_string();
                let channel = self.key(&topic, "events");
                let control = self.control();
                let create = create.unwrap_or_default();
                self.eval(
                    scripts::PUBLISH,
                    &[&topics, &meta, &history, &marker],
                    &[
                        &head,
                        &tail,
                        keep.as_bytes(),
                        &channel,
                        create.as_bytes(),
                        topic.as_bytes(),
                        &control,
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
                let (topics, meta, control, marker) = (
                    self.topics_key(),
                    self.key(&topic, "meta"),
                    self.control(),
                    self.marker(),
                );
                self.eval(
                    scripts::CREATE,
                    &[&topics, &meta, &marker],
                    &[topic.as_bytes(), epoch.as_bytes(), &control],
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
                let keys = [
                    self.topics_key(),
                    self.key(&topic, "meta"),
                    self.key(&topic, "history"),
                    self.key(&topic, "subs"),
                ];
                let control = self.control();
                let keys: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
                self.eval(
                    scripts::DELETE,
                    &keys,
                    &[topic.as_bytes(), &control],
                    Waiting::Delete(slot, now),
                );
            }
            Command::Sync { counts } => {
                // One sync in flight at a time is enough.
                if !up || self.waiting.iter().any(|w| matches!(w, Waiting::Sync)) {
                    return;
                }
                let topics = self.topics_key();
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
                self.eval(scripts::SYNC, &[&topics], &args, Waiting::Sync);
            }
        }
    }

    fn read(&mut self, topic: Box<str>, create: &[u8], now: Instant) {
        let (topics, meta, history, control, marker) = (
            self.topics_key(),
            self.key(&topic, "meta"),
            self.key(&topic, "history"),
            self.control(),
            self.marker(),
        );
        let name = topic.clone();
        self.eval(
            scripts::READ,
            &[&topics, &meta, &history, &marker],
            &[create, name.as_bytes(), &control],
            Waiting::Read(topic, now),
        );
    }

    // ---- the sockets ----

    /// When the loop must call `tick` next.
    pub fn next_deadline(&self) -> Option<Instant> {
        let oldest = self.waiting.iter().find_map(|w| match w {
            Waiting::Publish(_, t)
            | Waiting::Read(_, t)
            | Waiting::Create(_, t)
            | Waiting::Delete(_, t) => Some(*t + self.timeout),
            _ => None,
        });
        [self.retry_at, oldest, self.connecting]
            .into_iter()
            .flatten()
            .min()
    }

    /// Reconnects when it is time, and fails requests Redis has not answered in time.
    pub fn tick(&mut self, registry: &Registry, now: Instant) {
        if self.retry_at.is_some_and(|t| t <= now) {
            self.retry_at = None;
            self.connect(registry, now);
        }
        if self.connecting.is_some_and(|t| t <= now) {
            return self.link_failed(registry, now, "connecting timed out");
        }
        for i in 0..self.waiting.len() {
            let expired = match &self.waiting[i] {
                Waiting::Publish(_, t)
                | Waiting::Read(_, t)
                | Waiting::Create(_, t)
                | Waiting::Delete(_, t) => *t + self.timeout <= now,
                _ => false,
            };
            if expired {
                let w = std::mem::replace(&mut self.waiting[i], Waiting::Expired);
                self.fail(w);
            }
        }
    }

    fn connect(&mut self, registry: &Registry, now: Instant) {
        let addr: Option<SocketAddr> = (self.url.host.as_str(), self.url.port)
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next());
        let Some(addr) = addr else {
            return self.link_failed(registry, now, "cannot resolve the Redis host");
        };
        let mut failed = None;
        for link in [&mut self.cmd, &mut self.sub] {
            let registered = TcpStream::connect(addr).and_then(|mut socket| {
                let _ = socket.set_nodelay(true);
                let interest = Interest::READABLE | Interest::WRITABLE;
                registry.register(&mut socket, link.token, interest)?;
                Ok(socket)
            });
            match registered {
                Ok(socket) => {
                    link.socket = Some(socket);
                    link.connected = false;
                    link.out.clear();
                    link.inbuf.clear();
                    link.setup_replies = 0;
                }
                Err(e) => failed = Some(e.to_string()),
            }
        }
        if let Some(why) = failed {
            return self.link_failed(registry, now, &why);
        }
        // AUTH and SELECT go first on both links.
        let url = self.url.clone();
        for (link, on_cmd) in [(&mut self.cmd, true), (&mut self.sub, false)] {
            let mut setup = 0;
            if let Some(password) = &url.password {
                match &url.user {
                    Some(user) => resp::command(
                        &mut link.out,
                        &[b"AUTH", user.as_bytes(), password.as_bytes()],
                    ),
                    None => resp::command(&mut link.out, &[b"AUTH", password.as_bytes()]),
                }
                setup += 1;
            }
            if url.db != 0 {
                resp::command(&mut link.out, &[b"SELECT", url.db.to_string().as_bytes()]);
                setup += 1;
            }
            if on_cmd {
                for _ in 0..setup {
                    self.waiting.push_back(Waiting::Setup);
                }
            } else {
                link.setup_replies = setup;
            }
        }
        let control = self.control();
        let mut channels: Vec<Vec<u8>> = vec![control];
        channels.extend(self.followed.iter().map(|t| self.key(t, "events")));
        let mut args: Vec<&[u8]> = vec![b"SUBSCRIBE"];
        args.extend(channels.iter().map(Vec::as_slice));
        resp::command(&mut self.sub.out, &args);
        self.connecting = Some(now + self.timeout);
    }

    /// Both links connected: the cluster is reachable (again).
    fn linked(&mut self) {
        if self.stats.up || !self.cmd.connected || !self.sub.connected {
            return;
        }
        self.connecting = None;
        self.stats.up = true;
        if self.down_logged {
            log::info!("redis {} is reachable again", self.url);
            self.stats.reconnects += 1;
        } else {
            log::info!("cluster node {} linked to redis {}", self.node, self.url);
        }
        self.down_logged = false;
        self.backoff = MIN_BACKOFF;
        self.events.push(Event::Up);
    }

    fn link_failed(&mut self, registry: &Registry, now: Instant, why: &str) {
        if !self.down_logged {
            log::warn!(
                "redis {} is unreachable ({why}): retrying in the background",
                self.url
            );
            self.down_logged = true;
        }
        for link in [&mut self.cmd, &mut self.sub] {
            if let Some(mut s) = link.socket.take() {
                let _ = registry.deregister(&mut s);
            }
            link.connected = false;
            link.out.clear();
            link.inbuf.clear();
        }
        self.connecting = None;
        let was_up = std::mem::replace(&mut self.stats.up, false);
        for w in std::mem::take(&mut self.waiting) {
            self.fail(w);
        }
        if was_up {
            self.events.push(Event::Down);
        }
        self.retry_at = Some(now + self.backoff);
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }

    /// Tells the core a request will not be answered.
    fn fail(&mut self, w: Waiting) {
        let no = Failure::Unavailable;
        let event = match w {
            Waiting::Publish(slot, _) => Event::Published {
                slot,
                result: Err(no),
            },
            Waiting::Read(topic, _) => Event::Synced {
                topic,
                result: Err(no),
            },
            Waiting::Create(Some(slot), _) => Event::Created {
                slot,
                result: Err(no),
            },
            Waiting::Delete(slot, _) => Event::Deleted {
                slot,
                result: Err(no),
            },
            _ => return,
        };
        self.events.push(event);
    }

    /// Readiness on one of the engine's sockets.
    pub fn ready(&mut self, registry: &Registry, token: Token, scratch: &mut [u8], now: Instant) {
        let on_cmd = token == CMD_TOKEN;
        let result = {
            let link = if on_cmd { &mut self.cmd } else { &mut self.sub };
            pump(link, scratch)
        };
        if let Err(why) = result {
            return self.link_failed(registry, now, &why);
        }
        self.linked();
        loop {
            let link = if on_cmd { &mut self.cmd } else { &mut self.sub };
            let (value, used) = match resp::decode(&link.inbuf) {
                Decoded::Value(v, used) => (v, used),
                Decoded::Partial => break,
                Decoded::Invalid(why) => return self.link_failed(registry, now, why),
            };
            link.inbuf.drain(..used);
            if on_cmd {
                self.on_reply(value, now);
            } else if link.setup_replies > 0 {
                link.setup_replies -= 1;
                if let Value::Error(e) = value {
                    return self.link_failed(registry, now, &format!("Redis refused: {e}"));
                }
            } else {
                self.on_message(value);
            }
        }
    }

    /// Writes what the links have queued (called once per loop turn).
    pub fn flush(&mut self, registry: &Registry, now: Instant) {
        for on_cmd in [true, false] {
            let link = if on_cmd { &mut self.cmd } else { &mut self.sub };
            if link.out.is_empty() || !link.connected {
                continue;
            }
            if let Err(why) = write_out(link) {
                return self.link_failed(registry, now, &why);
            }
        }
    }

    fn on_reply(&mut self, value: Value, now: Instant) {
        let Some(w) = self.waiting.pop_front() else {
            log::warn!("redis sent a reply nobody asked for");
            return;
        };
        let failed = matches!(value, Value::Error(_));
        if let Value::Error(e) = &value {
            log::warn!("redis error: {e}");
        }
        match w {
            Waiting::Setup => {
                if failed {
                    log::error!("redis {} refused the credentials or database", self.url);
                }
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
    }

    /// A push on the subscribe link: `message`, or a (un)subscribe confirmation.
    fn on_message(&mut self, value: Value) {
        let items = value.items();
        if items.len() != 3 || items[0].as_bytes() != Some(b"message") {
            return;
        }
        let (Some(channel), Some(data)) = (items[1].as_bytes(), items[2].as_bytes()) else {
            return;
        };
        let control = self.control();
        if channel == control.as_slice() {
            let text = String::from_utf8_lossy(data);
            match text.split_once(' ') {
                Some(("created", t)) => self.events.push(Event::TopicCreated(t.into())),
                Some(("deleted", t)) => self.events.push(Event::TopicDeleted(t.into())),
                _ => {}
            }
            return;
        }
        // `P:{topic}:events` carries "<seq> <event>".
        let prefix = format!("{}:{{", self.prefix);
        let Some(topic) = channel
            .strip_prefix(prefix.as_bytes())
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

/// Reads what a link's socket has (marking it connected on first readiness)
/// and writes what it has queued.
fn pump(link: &mut Link, scratch: &mut [u8]) -> Result<(), String> {
    let Some(socket) = link.socket.as_mut() else {
        return Ok(());
    };
    if !link.connected {
        if let Ok(Some(e)) | Err(e) = socket.take_error() {
            return Err(e.to_string());
        }
        if socket.peer_addr().is_err() {
            // Still connecting.
            return Ok(());
        }
        link.connected = true;
    }
    loop {
        match io::read(socket, scratch) {
            Io::Progress(n) => {
                link.inbuf.extend_from_slice(&scratch[..n]);
                if link.inbuf.len() > 1 << 30 {
                    return Err("a Redis reply over 1 GiB".into());
                }
            }
            Io::WouldBlock => break,
            Io::Closed => return Err("Redis closed the connection".into()),
            Io::Failed(e) => return Err(e.to_string()),
        }
    }
    write_out(link)
}

fn write_out(link: &mut Link) -> Result<(), String> {
    let Some(socket) = link.socket.as_mut() else {
        return Ok(());
    };
    while !link.out.is_empty() {
        match io::write(socket, &link.out) {
            Io::Progress(n) => {
                link.out.drain(..n);
            }
            Io::WouldBlock => break,
            Io::Closed => return Err("Redis closed the connection".into()),
            Io::Failed(e) => return Err(e.to_string()),
        }
    }
    let _ = socket.flush();
    Ok(())
}

/// Checks at start-up that Redis answers and takes the credentials, so a
/// wrong password stops the server with a clear message instead of a node
/// that is down for ever. An unreachable Redis is not an error here: the
/// node starts degraded and keeps trying.
pub fn check_credentials(url: &RedisUrl, timeout: Duration) -> Result<(), String> {
    use std::io::Read;
    let Some(addr) = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
    else {
        return Err(format!("cannot resolve the Redis host in {url}"));
    };
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, timeout) else {
        return Ok(());
    };
    let _ = s.set_read_timeout(Some(timeout));
    let mut out = Vec::new();
    let mut expected = 0;
    if let Some(password) = &url.password {
        match &url.user {
            Some(user) => resp::command(&mut out, &[b"AUTH", user.as_bytes(), password.as_bytes()]),
            None => resp::command(&mut out, &[b"AUTH", password.as_bytes()]),
        }
        expected += 1;
    }
    if url.db != 0 {
        resp::command(&mut out, &[b"SELECT", url.db.to_string().as_bytes()]);
        expected += 1;
    }
    resp::command(&mut out, &[b"PING"]);
    expected += 1;
    if s.write_all(&out).is_err() {
        return Ok(());
    }
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut got = 0;
    while got < expected {
        match resp::decode(&buf) {
            Decoded::Value(v, used) => {
                buf.drain(..used);
                got += 1;
                if let Value::Error(e) = v {
                    let what = e.split_whitespace().next().unwrap_or("ERR").to_string();
                    return Err(format!(
                        "redis {url} refused the connection's set-up ({what}): check the \
                         password, user and database in --redis"
                    ));
                }
            }
            Decoded::Invalid(_) => return Err(format!("{url} does not speak RESP")),
            Decoded::Partial => match s.read(&mut chunk) {
                Ok(0) | Err(_) => return Ok(()),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            },
        }
    }
    Ok(())
}
