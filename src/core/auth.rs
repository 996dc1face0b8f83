//! Keys and what each may do (protocol §6): full access, or publish only, or
//! subscribe only, each limited to the topics its glob patterns match.
//!
//! A connection's grant is decided once, from the key of its handshake. The
//! core asks [`Keys::allows`] once per publish and once per (un)subscription,
//! never per delivered event, so roles cost nothing on the fan-out path.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

use super::ConnId;
use crate::http;
use crate::protocol::{Request as Msg, valid_topic};

/// What a client request does to a topic, as far as roles are concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Publish,
    Subscribe,
    Unsubscribe,
}

impl Op {
    /// The operation and topic of a request; `None` for one every key may make (ping).
    pub fn of<'a>(request: &'a Msg<'_>) -> Option<(Op, &'a str)> {
        match request {
            Msg::Ping => None,
            Msg::Publish { topic, .. } => Some((Op::Publish, topic)),
            Msg::Subscribe { topic, .. } => Some((Op::Subscribe, topic)),
            Msg::Unsubscribe { topic, .. } => Some((Op::Unsubscribe, topic)),
        }
    }

    /// The message of a `FORBIDDEN` answer (it names the topic, never the key).
    pub fn refused(self, topic: &str) -> String {
        let what = match self {
            Op::Publish => "publish to",
            Op::Subscribe => "subscribe to",
            Op::Unsubscribe => "unsubscribe from",
        };
        format!("this key may not {what} topic '{topic}'")
    }
}

/// `|`-separated glob patterns where `*` matches any run of characters.
/// No pattern at all means every topic.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Patterns(Vec<Glob>);

impl Patterns {
    /// Every topic.
    pub fn any() -> Patterns {
        Patterns::default()
    }

    /// `orders.*|billing.*`; the error says what is wrong.
    pub fn parse(text: &str) -> Result<Patterns, &'static str> {
        let mut patterns = Vec::new();
        for pattern in text.split('|').map(str::trim) {
            if pattern.is_empty() {
                return Err("an empty topic pattern");
            }
            // With `*` standing for any valid run, a pattern is a topic name.
            if !valid_topic(&pattern.replace('*', "x")) {
                return Err(
                    "a topic pattern is 1 to 255 characters from A-Z a-z 0-9 . _ - : and '*'",
                );
            }
            patterns.push(Glob::new(pattern));
        }
        Ok(Patterns(patterns))
    }

    pub fn matches(&self, topic: &str) -> bool {
        self.0.is_empty() || self.0.iter().any(|p| p.matches(topic))
    }
}

/// One pattern, split at its stars once, when it is configured, so that
/// matching a topic is a few comparisons.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Glob {
    /// The text before the first `*` (the whole pattern when it has none).
    head: Box<str>,
    /// The non-empty pieces between stars, and the text after the last `*`;
    /// `None` without a `*`.
    rest: Option<(Vec<Box<str>>, Box<str>)>,
}

impl Glob {
    pub fn new(pattern: &str) -> Glob {
        let Some((head, rest)) = pattern.split_once('*') else {
            return Glob {
                head: pattern.into(),
                rest: None,
            };
        };
        let (middle, tail) = rest.rsplit_once('*').unwrap_or(("", rest));
        let pieces = middle.split('*').filter(|p| !p.is_empty()).map(Box::from);
        Glob {
            head: head.into(),
            rest: Some((pieces.collect(), tail.into())),
        }
    }

    /// Whether `topic` matches, `*` matching any run of characters (the
    /// empty run too). Linear in the topic's length: the head must start
    /// the topic, the tail must end it, and the pieces between are found
    /// left to right, each at its leftmost place — with nothing but `*`,
    /// the leftmost place never loses a match.
    pub fn matches(&self, topic: &str) -> bool {
        let Some((pieces, tail)) = &self.rest else {
            return *self.head == *topic;
        };
        let (topic, head, tail) = (topic.as_bytes(), self.head.as_bytes(), tail.as_bytes());
        if topic.len() < head.len() + tail.len()
            || !topic.starts_with(head)
            || !topic.ends_with(tail)
        {
            return false;
        }
        let mut between = &topic[head.len()..topic.len() - tail.len()];
        for piece in pieces {
            match memchr::memmem::find(between, piece.as_bytes()) {
                Some(at) => between = &between[at + piece.len()..],
                None => return false,
            }
        }
        true
    }
}

/// What a key may do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// Everything: `--api-key`.
    Full,
    /// Publish to matching topics, and the read-only REST routes.
    Publish(Patterns),
    /// Subscribe to (and unsubscribe from) matching topics, and the read-only REST routes.
    Subscribe(Patterns),
}

impl Role {
    pub fn allows(&self, op: Op, topic: &str) -> bool {
        match (self, op) {
            (Role::Full, _) => true,
            (Role::Publish(p), Op::Publish) => p.matches(topic),
            (Role::Subscribe(p), Op::Subscribe | Op::Unsubscribe) => p.matches(topic),
            (Role::Publish(_) | Role::Subscribe(_), _) => false,
        }
    }
}

/// A key limited to some topics, as configured: `KEY[:PATTERNS]`.
#[derive(Clone, PartialEq, Eq)]
pub struct ScopedKey {
    pub key: String,
    pub patterns: Patterns,
}

/// Keys stay out of `Debug` output, which may end up in a log.
impl fmt::Debug for ScopedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScopedKey")
            .field("key", &"<redacted>")
            .field("patterns", &self.patterns)
            .finish()
    }
}

impl ScopedKey {
    /// `KEY[:PATTERNS]` entries separated by commas. The error names the
    /// problem, never the key.
    pub fn parse_list(text: &str) -> Result<Vec<ScopedKey>, &'static str> {
        text.split(',').map(ScopedKey::parse).collect()
    }

    pub fn parse(entry: &str) -> Result<ScopedKey, &'static str> {
        let (key, patterns) = match entry.trim().split_once(':') {
            Some((key, patterns)) => (key.trim(), Patterns::parse(patterns)?),
            None => (entry.trim(), Patterns::any()),
        };
        if key.is_empty() {
            return Err("an empty key");
        }
        Ok(ScopedKey {
            key: key.to_string(),
            patterns,
        })
    }
}

/// What a request or a connection may do, decided from its key once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grant {
    Full,
    /// A key with a limited role: its place in [`Keys`].
    Limited(usize),
}

/// The grants of open connections with a limited key (a connection with full
/// access has none), by slab slot: 12 bytes a slot, where a hash map spent
/// ~57 per connection (measured on 19 000 idle subscribers with a subscribe
/// key: 918 B per connection, 861 without keys).
#[derive(Default)]
pub struct Grants {
    /// Indexed by `ConnId::key`: the connection holding the slot and its key's
    /// place in [`Keys`] plus one; 0 for none.
    slots: Vec<(ConnId, u32)>,
    count: usize,
    /// The topic each limited connection last published to, once allowed: a
    /// publisher's next publish there is one comparison, not a pattern match
    /// (measured: the check went from ~190 to ~45 instructions per publish
    /// at 1 → 1). Publishers only, so idle subscribers cost nothing more.
    /// `ConnId`s are the server's own numbers, not client input, so a
    /// multiply-rotate hash does instead of SipHash.
    published: HashMap<ConnId, String, BuildHasherDefault<ConnIdHasher>>,
}

impl Grants {
    pub fn insert(&mut self, conn: ConnId, grant: Grant) {
        let Grant::Limited(index) = grant else {
            return self.remove(&conn);
        };
        let key = conn.key();
        if self.slots.len() <= key {
            self.slots.resize(key + 1, (ConnId::new(0, 0), 0));
        }
        if self.slots[key].1 == 0 {
            self.count += 1;
        }
        self.slots[key] = (conn, index as u32 + 1);
    }

    pub fn remove(&mut self, conn: &ConnId) {
        if let Some(slot) = self.slots.get_mut(conn.key())
            && slot.0 == *conn
            && slot.1 != 0
        {
            slot.1 = 0;
            self.count -= 1;
        }
        self.published.remove(conn);
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn len(&self) -> usize {
        self.count
    }

    /// The grant of a connection with a limited key.
    pub fn get(&self, conn: &ConnId) -> Option<Grant> {
        match self.slots.get(conn.key()) {
            Some(&(holder, index)) if holder == *conn && index != 0 => {
                Some(Grant::Limited(index as usize - 1))
            }
            _ => None,
        }
    }

    /// Whether `conn` may make `op` on `topic` (true for full access).
    pub fn allows(&mut self, keys: &Keys, conn: ConnId, op: Op, topic: &str) -> bool {
        if op == Op::Publish && self.published.get(&conn).is_some_and(|t| t == topic) {
            return true;
        }
        let Some(grant) = self.get(&conn) else {
            return true;
        };
        let allowed = keys.allows(grant, op, topic);
        if allowed && op == Op::Publish {
            let last = self.published.entry(conn).or_default();
            last.clear();
            last.push_str(topic);
        }
        allowed
    }
}

#[derive(Default)]
pub struct ConnIdHasher(u64);

impl Hasher for ConnIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        // FxHash's step: the multiply spreads the bits into the high ones the table probes with.
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

/// Every configured key with its role. Never printed: it holds the secrets.
#[derive(Default)]
pub struct Keys {
    keys: Vec<(String, Role)>,
}

impl Keys {
    pub fn new(full: &[String], publish: &[ScopedKey], subscribe: &[ScopedKey]) -> Keys {
        let full = full.iter().map(|k| (k.clone(), Role::Full));
        let publish = publish
            .iter()
            .map(|s| (s.key.clone(), Role::Publish(s.patterns.clone())));
        let subscribe = subscribe
            .iter()
            .map(|s| (s.key.clone(), Role::Subscribe(s.patterns.clone())));
        Keys {
            keys: full.chain(publish).chain(subscribe).collect(),
        }
    }

    /// No key at all: authentication is off.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The grant of a presented key, or `None` for a wrong one. The key is
    /// compared with every configured key, in constant time, without an early exit.
    pub fn grant(&self, presented: &str) -> Option<Grant> {
        let mut found = None;
        for (i, (key, _)) in self.keys.iter().enumerate() {
            let same = http::constant_time_eq(presented.as_bytes(), key.as_bytes());
            found = found.or(same.then_some(i));
        }
        found.map(|i| match self.keys[i].1 {
            Role::Full => Grant::Full,
            Role::Publish(_) | Role::Subscribe(_) => Grant::Limited(i),
        })
    }

    pub fn allows(&self, grant: Grant, op: Op, topic: &str) -> bool {
        match grant {
            Grant::Full => true,
            Grant::Limited(i) => self.keys.get(i).is_some_and(|(_, r)| r.allows(op, topic)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn glob(pattern: &str, topic: &str) -> bool {
        Glob::new(pattern).matches(topic)
    }

    #[test]
    fn glob_stars_anywhere() {
        for (pattern, yes, no) in [
            (
                "orders",
                &["orders"][..],
                &["order", "orders2", "xorders", ""][..],
            ),
            (
                "orders.*",
                &["orders.", "orders.eu", "orders.eu.1"],
                &["orders", "order.eu", "xorders.eu"],
            ),
            (
                "*.eu",
                &[".eu", "orders.eu", "a.b.eu"],
                &["orders.eu2", "eu", "orders.us"],
            ),
            (
                "orders.*.eu",
                &["orders..eu", "orders.x.eu", "orders.a.b.eu"],
                &["orders.eu", "orders.x.us", "orders.x.eu.1"],
            ),
            ("*", &["", "a", "anything.at:all"], &[]),
            ("**", &["", "a"], &[]),
            (
                "a*b*c",
                &["abc", "aXbYc", "abbc", "acbc", "abcbc"],
                &["ab", "acb", "bac", "abcx"],
            ),
            ("*a*b*", &["ab", "xaybz", "ba.ab"], &["ba", "a", "b", ""]),
            ("a*a", &["aa", "aba", "aaa"], &["a", "ab"]),
            (
                "*ab*ab",
                &["abab", "xabyab", "ababab"],
                &["aab", "abba", "ab"],
            ),
        ] {
            for topic in yes {
                assert!(glob(pattern, topic), "{pattern} should match {topic:?}");
            }
            for topic in no {
                assert!(
                    !glob(pattern, topic),
                    "{pattern} should not match {topic:?}"
                );
            }
        }
    }

    #[test]
    fn glob_agrees_with_a_backtracking_matcher() {
        // The obvious exponential definition, over every pattern and topic of a small alphabet.
        fn reference(p: &[u8], t: &[u8]) -> bool {
            match p.split_first() {
                None => t.is_empty(),
                Some((b'*', rest)) => (0..=t.len()).any(|i| reference(rest, &t[i..])),
                Some((c, rest)) => t.first() == Some(c) && reference(rest, &t[1..]),
            }
        }
        fn words(alphabet: &[u8], max: usize) -> Vec<String> {
            let mut all = vec![String::new()];
            let mut last = vec![String::new()];
            for _ in 0..max {
                last = last
                    .iter()
                    .flat_map(|w| alphabet.iter().map(move |c| format!("{w}{}", *c as char)))
                    .collect();
                all.extend(last.iter().cloned());
            }
            all
        }
        let topics = words(b"ab", 5);
        for pattern in words(b"ab*", 4) {
            for topic in &topics {
                assert_eq!(
                    glob(&pattern, topic),
                    reference(pattern.as_bytes(), topic.as_bytes()),
                    "{pattern} vs {topic:?}"
                );
            }
        }
    }

    #[test]
    fn glob_is_linear_on_a_hostile_pattern() {
        // A backtracking matcher takes forever here; this one reads the topic once per piece.
        let topic = "a".repeat(255);
        let pattern = format!("{}b", "*a".repeat(100));
        assert!(!glob(&pattern, &topic));
        assert!(glob(&"*a".repeat(100), &topic));
    }

    #[test]
    fn pattern_lists() {
        let p = Patterns::parse("orders.*|billing|*.audit").unwrap();
        for yes in ["orders.eu", "billing", "x.audit"] {
            assert!(p.matches(yes), "{yes}");
        }
        for no in ["orders", "billing.eu", "audit", "other"] {
            assert!(!p.matches(no), "{no}");
        }
        assert!(Patterns::any().matches("whatever"));
        assert_eq!(
            Patterns::parse(" a | b* ").unwrap(),
            Patterns(vec![Glob::new("a"), Glob::new("b*")])
        );
        for bad in ["", "a|", "|a", "a||b", "a b", "orders/x", "é*", "a|b?"] {
            assert!(Patterns::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn scoped_keys() {
        let keys = ScopedKey::parse_list("svc:orders.*|billing.*, web , app:a:b").unwrap();
        assert_eq!(keys.len(), 3);
        assert_eq!(keys[0].key, "svc");
        assert!(keys[0].patterns.matches("billing.eu"));
        assert!(!keys[0].patterns.matches("audit"));
        assert_eq!(keys[1].key, "web");
        assert_eq!(keys[1].patterns, Patterns::any());
        // The first ':' ends the key; topic names may hold ':' themselves.
        assert_eq!(keys[2].key, "app");
        assert!(keys[2].patterns.matches("a:b"));
        for bad in ["", ",k", "k,", ":orders", "k:", "k:a||b", "k:a b"] {
            assert!(ScopedKey::parse_list(bad).is_err(), "{bad:?}");
        }
        let shown = format!("{:?}", ScopedKey::parse("s3cret:t").unwrap());
        assert!(!shown.contains("s3cret"), "{shown}");
    }

    #[test]
    fn every_role_against_every_operation() {
        let orders = || Patterns::parse("orders.*").unwrap();
        let table = [
            (Role::Full, [true, true, true]),
            (Role::Publish(Patterns::any()), [true, false, false]),
            (Role::Subscribe(Patterns::any()), [false, true, true]),
        ];
        let ops = [Op::Publish, Op::Subscribe, Op::Unsubscribe];
        for (role, expected) in table {
            for (op, allowed) in ops.iter().zip(expected) {
                assert_eq!(role.allows(*op, "anything"), allowed, "{role:?} {op:?}");
            }
        }
        assert!(Role::Publish(orders()).allows(Op::Publish, "orders.eu"));
        assert!(!Role::Publish(orders()).allows(Op::Publish, "billing"));
        assert!(Role::Subscribe(orders()).allows(Op::Unsubscribe, "orders.eu"));
        assert!(!Role::Subscribe(orders()).allows(Op::Subscribe, "billing"));
        assert!(!Role::Subscribe(orders()).allows(Op::Publish, "orders.eu"));
    }

    #[test]
    fn a_remembered_permission_is_for_its_operation_and_topic_only() {
        let orders = ScopedKey {
            key: "p".into(),
            patterns: Patterns::parse("orders.*").unwrap(),
        };
        let keys = Keys::new(&[], &[orders], &[]);
        let grant = keys.grant("p").unwrap();
        let mut grants = Grants::default();
        let conn = ConnId::new(3, 1);
        grants.insert(conn, grant);
        assert!(grants.allows(&keys, conn, Op::Publish, "orders.eu"));
        assert!(grants.allows(&keys, conn, Op::Publish, "orders.eu"));
        assert!(!grants.allows(&keys, conn, Op::Subscribe, "orders.eu"));
        assert!(!grants.allows(&keys, conn, Op::Publish, "orders"));
        assert!(!grants.allows(&keys, conn, Op::Publish, "billing"));
        assert!(grants.allows(&keys, conn, Op::Publish, "orders.us"));
        assert!(grants.allows(&keys, ConnId::new(4, 1), Op::Subscribe, "any"));
    }

    #[test]
    fn grants_tell_connections_and_generations_apart() {
        let mut grants = Grants::default();
        for key in 0..1000 {
            grants.insert(ConnId::new(key, 1), Grant::Limited(key));
        }
        for key in 0..1000 {
            assert_eq!(grants.get(&ConnId::new(key, 1)), Some(Grant::Limited(key)));
            assert_eq!(grants.get(&ConnId::new(key, 2)), None, "a recycled slot");
        }
        assert_eq!(grants.len(), 1000);
        // A stale id does not remove the slot's holder; the holder does.
        grants.remove(&ConnId::new(7, 2));
        assert_eq!(grants.get(&ConnId::new(7, 1)), Some(Grant::Limited(7)));
        grants.remove(&ConnId::new(7, 1));
        assert_eq!(grants.get(&ConnId::new(7, 1)), None);
        assert_eq!(grants.len(), 999);
        // The slot taken again by a new connection, past the end too.
        grants.insert(ConnId::new(7, 3), Grant::Limited(1));
        grants.insert(ConnId::new(5000, 1), Grant::Limited(2));
        assert_eq!(grants.get(&ConnId::new(7, 3)), Some(Grant::Limited(1)));
        assert_eq!(grants.get(&ConnId::new(4999, 0)), None);
        assert_eq!(grants.len(), 1001);
    }

    #[test]
    fn keys_grant_by_role() {
        let publish = ScopedKey::parse_list("p:orders.*").unwrap();
        let subscribe = ScopedKey::parse_list("s").unwrap();
        let keys = Keys::new(&["f".into()], &publish, &subscribe);
        assert!(!keys.is_empty());
        assert!(Keys::default().is_empty());
        assert_eq!(keys.grant("f"), Some(Grant::Full));
        assert_eq!(keys.grant("fx"), None);
        assert_eq!(keys.grant(""), None);
        let p = keys.grant("p").expect("the publish key");
        let s = keys.grant("s").expect("the subscribe key");
        assert!(keys.allows(p, Op::Publish, "orders.1"));
        assert!(!keys.allows(p, Op::Publish, "billing"));
        assert!(!keys.allows(p, Op::Subscribe, "orders.1"));
        assert!(keys.allows(s, Op::Subscribe, "billing"));
        assert!(!keys.allows(s, Op::Publish, "billing"));
        assert!(keys.allows(Grant::Full, Op::Publish, "x"));
    }
}
