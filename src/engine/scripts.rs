//! The Lua scripts that make each cluster operation one atomic step in Redis.
//!
//! Keys are named with the topic as a hash tag (`P:{orders}:meta`,
//! `P:{orders}:history`) so that each per-topic script touches one hash slot.
//! The topic set `P:topics` and the control channel are the exceptions (see
//! the README's cluster section).

use sha1::{Digest, Sha1};

/// The scripts by what they do. They are sent by digest (`EVALSHA`), loaded
/// with `SCRIPT LOAD` first thing on every connection, so Redis neither
/// receives nor hashes a script's text per call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Script {
    Create,
    Delete,
    Publish,
    Read,
    Sync,
}

impl Script {
    pub const ALL: [Script; 5] = [
        Script::Create,
        Script::Delete,
        Script::Publish,
        Script::Read,
        Script::Sync,
    ];

    pub fn text(self) -> &'static str {
        match self {
            Script::Create => CREATE,
            Script::Delete => DELETE,
            Script::Publish => PUBLISH,
            Script::Read => READ,
            Script::Sync => SYNC,
        }
    }
}

/// Each script's SHA1 in lowercase hex, as Redis names it, in `Script::ALL` order.
pub fn digests() -> [[u8; 40]; 5] {
    Script::ALL.map(|script| {
        let mut hex = [0u8; 40];
        for (i, byte) in Sha1::digest(script.text().as_bytes()).iter().enumerate() {
            hex[2 * i] = b"0123456789abcdef"[usize::from(byte >> 4)];
            hex[2 * i + 1] = b"0123456789abcdef"[usize::from(byte & 15)];
        }
        hex
    })
}

/// KEYS: topics set, meta, the cluster's marker. ARGV: name, epoch, control channel.
/// Returns 1 when created, 0 when it already existed.
///
/// The marker (`P:cluster`) tells a Redis that lost its data (no marker)
/// from one where a topic was deleted.
pub const CREATE: &str = r#"
redis.call('SET', KEYS[3], 1)
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('HSET', KEYS[2], 'epoch', ARGV[2], 'seq', 0)
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('PUBLISH', ARGV[3], 'created ' .. ARGV[1])
return 1
"#;

/// KEYS: topics set, meta, history, subscriber counts. ARGV: name, control channel.
/// Returns 1 when deleted, 0 when there was no such topic.
pub const DELETE: &str = r#"
if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
redis.call('SREM', KEYS[1], ARGV[1])
redis.call('PUBLISH', ARGV[2], 'deleted ' .. ARGV[1])
return 1
"#;

/// KEYS: topics set, meta, history, the cluster's marker. ARGV: event head
/// (up to `"seq":`), event tail, history size, events channel, epoch for
/// auto-create ('' = off), name, control channel.
///
/// Assigns the next seq, appends the event to the history and publishes
/// `"<seq> <event>"` in one step. Returns the seq, or -1 when the topic does
/// not exist.
pub const PUBLISH: &str = r#"
if redis.call('EXISTS', KEYS[2]) == 0 then
  if ARGV[5] == '' then return -1 end
  redis.call('SET', KEYS[4], 1)
  redis.call('HSET', KEYS[2], 'epoch', ARGV[5], 'seq', 0)
  redis.call('SADD', KEYS[1], ARGV[6])
  redis.call('PUBLISH', ARGV[7], 'created ' .. ARGV[6])
end
local seq = redis.call('HINCRBY', KEYS[2], 'seq', 1)
local event = ARGV[1] .. seq .. ARGV[2]
local keep = tonumber(ARGV[3])
if keep > 0 then
  redis.call('RPUSH', KEYS[3], event)
  redis.call('LTRIM', KEYS[3], -keep, -1)
end
redis.call('PUBLISH', ARGV[4], seq .. ' ' .. event)
return seq
"#;

/// KEYS: topics set, meta, history, the cluster's marker. ARGV: epoch for
/// auto-create ('' = off), name, control channel.
///
/// A consistent snapshot: `{epoch, seq, event, event, …}` (the kept events,
/// oldest first); `{}` when the topic does not exist, `{'lost'}` when Redis
/// has lost the cluster's data (no marker).
pub const READ: &str = r#"
if redis.call('EXISTS', KEYS[2]) == 0 then
  if ARGV[1] == '' then
    if redis.call('EXISTS', KEYS[4]) == 0 then return {'lost'} end
    return {}
  end
  redis.call('SET', KEYS[4], 1)
  redis.call('HSET', KEYS[2], 'epoch', ARGV[1], 'seq', 0)
  redis.call('SADD', KEYS[1], ARGV[2])
  redis.call('PUBLISH', ARGV[3], 'created ' .. ARGV[2])
end
local m = redis.call('HMGET', KEYS[2], 'epoch', 'seq')
local out = {m[1], m[2]}
for _, e in ipairs(redis.call('LRANGE', KEYS[3], 0, -1)) do table.insert(out, e) end
return out
"#;

/// KEYS: topics set. ARGV: prefix, node, now (ms), expiry (ms), then
/// name/count pairs of this node's subscriptions.
///
/// Records this node's counts (each expires unless refreshed) and returns,
/// for every topic, `{name, seq, subscribers on every live node}`.
pub const SYNC: &str = r#"
local prefix, node, now, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local mine = {}
for i = 5, #ARGV, 2 do mine[ARGV[i]] = ARGV[i + 1] end
local out = {}
for _, name in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local subs_key = prefix .. ':{' .. name .. '}:subs'
  local count = mine[name] or '0'
  redis.call('HSET', subs_key, node, count .. ':' .. (now + ttl))
  local total = 0
  local all = redis.call('HGETALL', subs_key)
  for i = 1, #all, 2 do
    local c, expires = string.match(all[i + 1], '(%d+):(%d+)')
    if c and tonumber(expires) >= now then total = total + tonumber(c)
    else redis.call('HDEL', subs_key, all[i]) end
  end
  local seq = redis.call('HGET', prefix .. ':{' .. name .. '}:meta', 'seq') or '0'
  table.insert(out, name)
  table.insert(out, seq)
  table.insert(out, tostring(total))
end
return out
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_the_sha1_redis_gives_the_scripts() {
        // SHA1("") and SHA1("abc"), the standard test vectors, through the same hex.
        let hex = |text: &str| {
            let d = Sha1::digest(text.as_bytes());
            d.iter().map(|b| format!("{b:02x}")).collect::<String>()
        };
        assert_eq!(hex(""), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
        assert_eq!(hex("abc"), "a9993e364706816aba3e25717850c26c9cd0d89d");
        for (script, digest) in Script::ALL.iter().zip(digests()) {
            assert_eq!(std::str::from_utf8(&digest).unwrap(), hex(script.text()));
        }
    }
}
