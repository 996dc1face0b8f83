//! The engine's two sockets: connecting (with backoff), the AUTH/SELECT
//! set-up, reading and writing, and what an outage does to requests in flight.

use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

use super::resp::{self, Decoded, Value};
use super::{
    CMD_TOKEN, Engine, Event, Failure, MAX_BACKOFF, MIN_BACKOFF, RedisUrl, Waiting, load_scripts,
};
use crate::io::{self, Io};

pub(super) struct Link {
    pub(super) token: Token,
    pub(super) socket: Option<TcpStream>,
    pub(super) connected: bool,
    pub(super) out: Vec<u8>,
    pub(super) inbuf: Vec<u8>,
    /// Replies to AUTH/SELECT still to come on the subscribe link.
    pub(super) setup_replies: usize,
    /// Redis has answered on this link since it connected (a TCP connect
    /// alone proves nothing: a Redis at maxclients accepts, then hangs up).
    pub(super) answered: bool,
}

impl Link {
    pub(super) fn new(token: Token) -> Link {
        Link {
            token,
            socket: None,
            connected: false,
            out: Vec::new(),
            inbuf: Vec::new(),
            setup_replies: 0,
            answered: false,
        }
    }
}

impl Engine {
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
                    link.answered = false;
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
                load_scripts(&mut link.out, &mut self.waiting);
                // Its answer shows the command link works and has the scripts.
                resp::command(&mut link.out, &[b"PING"]);
                self.waiting.push_back(Waiting::Ping);
            } else {
                link.setup_replies = setup;
            }
        }
        let mut channels: Vec<Vec<u8>> = vec![self.names.control.clone()];
        channels.extend(self.followed.iter().map(|t| self.key(t, "events")));
        let mut args: Vec<&[u8]> = vec![b"SUBSCRIBE"];
        args.extend(channels.iter().map(Vec::as_slice));
        resp::command(&mut self.sub.out, &args);
        self.connecting = Some(now + self.timeout);
    }

    /// Redis has answered on both links: the cluster is reachable (again).
    pub(super) fn linked(&mut self) {
        if self.stats.up || !self.cmd.answered || !self.sub.answered {
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

    /// A link broke (Redis closed or reset it, a write failed): what Redis
    /// answered before it went still counts. The command link's replies
    /// already read, or still in its socket, are taken first, so a publish
    /// Redis did and answered gets its ack instead of `UNAVAILABLE` (and is
    /// not then delivered from the history as if it had been refused).
    /// Either link may be the first to see the end: the other's socket can
    /// still hold replies. Only while linked: during the set-up a late
    /// answer would bring the link up just to take it down.
    /// The same holds for the subscribe link: the messages Redis sent
    /// before it hung up (at its pub/sub output-buffer limit, say) are
    /// delivered, and the history refills only what came after them.
    fn link_lost(&mut self, registry: &Registry, now: Instant, why: &str) {
        if self.stats.up {
            read_what_is_left(&mut self.cmd);
            while let Decoded::Value(value, used) = resp::decode(&self.cmd.inbuf) {
                self.cmd.inbuf.drain(..used);
                if self.on_reply(value, now).is_err() {
                    break;
                }
            }
            read_what_is_left(&mut self.sub);
            while self.sub.setup_replies == 0
                && let Decoded::Value(value, used) = resp::decode(&self.sub.inbuf)
            {
                self.sub.inbuf.drain(..used);
                self.on_message(value);
            }
        }
        self.link_failed(registry, now, why);
    }

    /// A link cannot be used (broken, or Redis said something it must not):
    /// both are dropped, every request still waiting fails, and a
    /// reconnection is scheduled.
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
            // Written to the link, or about to be: Redis may have run it.
            Waiting::Publish(slot, _) => Event::Published {
                slot,
                result: Err(Failure::Unconfirmed),
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
            return self.link_lost(registry, now, &why);
        }
        loop {
            let link = if on_cmd { &mut self.cmd } else { &mut self.sub };
            let (value, used) = match resp::decode(&link.inbuf) {
                Decoded::Value(v, used) => (v, used),
                Decoded::Partial => break,
                Decoded::Invalid(why) => return self.link_failed(registry, now, why),
            };
            link.inbuf.drain(..used);
            if on_cmd {
                if let Err(why) = self.on_reply(value, now) {
                    return self.link_failed(registry, now, &why);
                }
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
                return self.link_lost(registry, now, &why);
            }
        }
    }
}

/// Reads what a broken link's socket still holds, up to its end.
fn read_what_is_left(link: &mut Link) {
    if let Some(socket) = link.socket.as_mut() {
        let mut scratch = [0u8; 16 * 1024];
        while let Io::Progress(n) = io::read(socket, &mut scratch) {
            link.inbuf.extend_from_slice(&scratch[..n]);
        }
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
            Decoded::Partial => match io::read(&mut s, &mut chunk) {
                Io::Progress(n) => buf.extend_from_slice(&chunk[..n]),
                Io::WouldBlock | Io::Closed | Io::Failed(_) => return Ok(()),
            },
        }
    }
    Ok(())
}
