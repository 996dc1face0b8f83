//! Settings: command-line flags and `PUBSUBD_*` environment variables, validated
//! into one [`Config`]. Flags win over the environment; every error names the
//! setting and the values it accepts.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use crate::core::auth::ScopedKey;
use crate::flags::{self, FlagError, Opt, Token, Tokens};

/// What happens when an event would push a connection's outbound buffer over
/// `outbound_limit` (protocol §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OverflowPolicy {
    /// Queue `SLOW_CONSUMER` and a 1008 close, stop queueing, drop after a grace period.
    Disconnect,
    /// Drop the oldest queued events that have not started to go out.
    DropOldest,
}

impl OverflowPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            OverflowPolicy::Disconnect => "disconnect",
            OverflowPolicy::DropOldest => "drop-oldest",
        }
    }
}

/// Every limit and timer of the server, with the defaults of the README.
#[derive(Clone, Debug)]
pub struct Config {
    pub host: IpAddr,
    pub port: u16,
    /// Accepted API keys with full access; no key of any role means no authentication.
    pub api_keys: Vec<String>,
    /// Keys that may only publish, each to the topics its patterns match.
    pub publish_keys: Vec<ScopedKey>,
    /// Keys that may only subscribe and unsubscribe, each to the topics its patterns match.
    pub subscribe_keys: Vec<ScopedKey>,
    /// Events kept per topic for `last_n` replay.
    pub history: usize,
    /// Largest WebSocket message (and frame) accepted from a client, in bytes.
    pub max_message_size: usize,
    /// Outbound buffer limit per connection, in bytes.
    pub outbound_limit: usize,
    /// The kernel send buffer (`SO_SNDBUF`) of each client socket, in bytes;
    /// 0 leaves the kernel's default, which grows up to `tcp_wmem`'s maximum.
    pub socket_send_buffer: usize,
    pub overflow_policy: OverflowPolicy,
    /// How long a slow consumer has to take its `SLOW_CONSUMER` error and close frame.
    pub slow_consumer_grace: Duration,
    pub max_connections: usize,
    pub auto_create_topics: bool,
    pub heartbeat: Duration,
    pub idle_timeout: Duration,
    pub shutdown_timeout: Duration,
    /// Time allowed for one HTTP request (head and body) to arrive.
    pub request_timeout: Duration,
    /// Time an HTTP connection may sit idle between requests.
    pub keepalive_timeout: Duration,
    /// Largest REST request body, in bytes.
    pub max_body_size: usize,
    pub log_level: log::LevelFilter,
    /// Cluster mode: the Redis every node of the cluster shares.
    pub redis: Option<crate::engine::RedisUrl>,
    /// Prefix of every Redis key and channel, so clusters can share a Redis.
    pub redis_prefix: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            host: IpAddr::from([0, 0, 0, 0]),
            port: 8080,
            api_keys: Vec::new(),
            publish_keys: Vec::new(),
            subscribe_keys: Vec::new(),
            history: 100,
            max_message_size: 1 << 20,
            outbound_limit: 1 << 20,
            socket_send_buffer: 0,
            overflow_policy: OverflowPolicy::Disconnect,
            slow_consumer_grace: Duration::from_secs(5),
            max_connections: 10_000,
            auto_create_topics: false,
            heartbeat: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(75),
            shutdown_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(60),
            max_body_size: 64 << 10,
            log_level: log::LevelFilter::Info,
            redis: None,
            redis_prefix: "pubsubd".to_string(),
        }
    }
}

/// A setting that could not be accepted, or a request for `--help` or `--version`.
#[derive(Debug, PartialEq, Eq)]
pub enum ConfigError {
    Help,
    Version,
    Invalid(String),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Help => f.write_str(HELP),
            ConfigError::Version => f.write_str("--version asked for"),
            ConfigError::Invalid(msg) => f.write_str(msg),
        }
    }
}

impl std::error::Error for ConfigError {}

pub const HELP: &str = "\
pubsubd — an in-memory publish/subscribe server (WebSocket JSON + REST)

USAGE:
    pubsubd [OPTIONS]                 run the server
    pubsubd bench <fanout|conns|slow> [OPTIONS]   load generator (pubsubd bench --help)
    pubsubd sub|pub|topics|stats|healthcheck ...  shell client (pubsubd sub --help)

OPTIONS (flag / environment variable, default):
    --host ADDR                PUBSUBD_HOST                 0.0.0.0
    --port PORT                PUBSUBD_PORT                 8080
    --api-key KEY[,KEY...]     PUBSUBD_API_KEY              none (no auth); full access
    --publish-key KEY[:PATS]   PUBSUBD_PUBLISH_KEY          none; may only publish, to topics
                                                            matching PATS (orders.*|*.eu)
    --subscribe-key KEY[:PATS] PUBSUBD_SUBSCRIBE_KEY        none; may only subscribe, likewise
    --history N                PUBSUBD_HISTORY              100 events per topic
    --max-message-size BYTES   PUBSUBD_MAX_MESSAGE_SIZE     1048576
    --outbound-limit BYTES     PUBSUBD_OUTBOUND_LIMIT       1048576 per connection
    --socket-send-buffer BYTES PUBSUBD_SOCKET_SEND_BUFFER   0 = the kernel's (autotuned, up to 4 MB)
    --overflow-policy P        PUBSUBD_OVERFLOW_POLICY      disconnect | drop-oldest
    --slow-consumer-grace S    PUBSUBD_SLOW_CONSUMER_GRACE  5 seconds
    --max-connections N        PUBSUBD_MAX_CONNECTIONS      10000
    --auto-create-topics[=B]   PUBSUBD_AUTO_CREATE_TOPICS   false
    --heartbeat S              PUBSUBD_HEARTBEAT            30 seconds
    --idle-timeout S           PUBSUBD_IDLE_TIMEOUT         2.5 x heartbeat
    --shutdown-timeout S       PUBSUBD_SHUTDOWN_TIMEOUT     5 seconds
    --request-timeout S        PUBSUBD_REQUEST_TIMEOUT      10 seconds per HTTP request
    --keepalive-timeout S      PUBSUBD_KEEPALIVE_TIMEOUT    60 seconds idle HTTP connection
    --max-body-size BYTES      PUBSUBD_MAX_BODY_SIZE        65536
    --log-level LEVEL          PUBSUBD_LOG_LEVEL            info (off|error|warn|info|debug|trace)
    --redis URL                PUBSUBD_REDIS                none (one node); cluster mode through
                                                            redis://[[user]:password@]host[:port][/db]
    --redis-prefix P           PUBSUBD_REDIS_PREFIX         pubsubd (keys and channels in Redis)
    -h, --help                 this text
    -V, --version              the version (and commit, when built from a checkout)

Seconds may be fractional (0.5). Flags win over environment variables.
--publish-key and --subscribe-key may be repeated; their variables take
entries separated by commas. In PATS, '|' separates patterns and '*' matches
any run of characters; without PATS a key may use every topic. Every key may
read GET /topics, /stats and /metrics; only --api-key keys create and delete.
";

/// Every setting's flag; each has an environment variable ([`env_name`]).
pub const SETTINGS: &[Opt] = &[
    Opt::value("host"),
    Opt::value("port"),
    Opt::value("api-key"),
    Opt::value("publish-key"),
    Opt::value("subscribe-key"),
    Opt::value("history"),
    Opt::value("max-message-size"),
    Opt::value("outbound-limit"),
    Opt::value("socket-send-buffer"),
    Opt::value("overflow-policy"),
    Opt::value("slow-consumer-grace"),
    Opt::value("max-connections"),
    Opt::inline_value("auto-create-topics"),
    Opt::value("heartbeat"),
    Opt::value("idle-timeout"),
    Opt::value("shutdown-timeout"),
    Opt::value("request-timeout"),
    Opt::value("keepalive-timeout"),
    Opt::value("max-body-size"),
    Opt::value("log-level"),
    Opt::value("redis"),
    Opt::value("redis-prefix"),
];

/// The environment variable of a flag: `max-message-size` → `PUBSUBD_MAX_MESSAGE_SIZE`.
pub fn env_name(flag: &str) -> String {
    format!("PUBSUBD_{}", flag.to_ascii_uppercase().replace('-', "_"))
}

impl Config {
    /// Builds a config from arguments (without the program name) and an
    /// environment lookup. Flags win over the environment.
    pub fn from_args<I, E>(args: I, env: E) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = String>,
        E: Fn(&str) -> Option<String>,
    {
        let mut values: Vec<(&'static str, String)> = Vec::new();
        for setting in SETTINGS {
            if let Some(v) = env(&env_name(setting.name)) {
                values.push((setting.name, v));
            }
        }
        // Settings given as flags, whose environment variables no longer count.
        let mut flagged: Vec<&str> = Vec::new();
        for token in Tokens::new(args, &[SETTINGS, &[flags::HELP, flags::VERSION]]) {
            // A repeatable flag adds to its own earlier uses, not to its variable.
            if let Ok(Token::Flag(name, _)) = &token
                && !flagged.contains(name)
            {
                values.retain(|(n, _)| n != name);
                flagged.push(name);
            }
            match token {
                Ok(Token::Flag("help", _)) => return Err(ConfigError::Help),
                Ok(Token::Flag("version", _)) => return Err(ConfigError::Version),
                // A switch given without a value is on.
                Ok(Token::Flag(name, value)) => {
                    values.push((name, value.unwrap_or_else(|| "true".to_string())))
                }
                Ok(Token::Positional(arg)) => {
                    return Err(invalid(format!(
                        "unexpected argument '{arg}' (see pubsubd --help)"
                    )));
                }
                Err(err @ FlagError::Unknown(_)) => {
                    return Err(invalid(format!("{err} (see pubsubd --help)")));
                }
                Err(err) => return Err(invalid(err.to_string())),
            }
        }

        let mut config = Config::default();
        let mut idle_timeout_set = false;
        for (name, value) in &values {
            config.apply(name, value)?;
            idle_timeout_set |= *name == "idle-timeout";
        }
        if !idle_timeout_set {
            config.idle_timeout = config.heartbeat.mul_f64(2.5);
        }
        config.check_roles()?;
        Ok(config)
    }

    /// Builds a config from the process's arguments and environment.
    pub fn from_env_and_args(args: Vec<String>) -> Result<Config, ConfigError> {
        Config::from_args(args, |k| std::env::var(k).ok())
    }

    /// What in the environment looks meant for pubsubd but is not read: the
    /// unprefixed `PORT` and `HOST` that other versions of this service take.
    /// Start-up goes on; the server logs each warning once logging is up.
    pub fn environment_warnings<E>(env: E) -> Vec<String>
    where
        E: Fn(&str) -> Option<String>,
    {
        let set = |name: &str| env(name).is_some_and(|v| !v.trim().is_empty());
        ["port", "host"]
            .into_iter()
            .filter_map(|flag| {
                let plain = flag.to_ascii_uppercase();
                let ours = env_name(flag);
                (set(&plain) && !set(&ours)).then(|| {
                    format!(
                        "{plain} is set but pubsubd does not read it: it reads {ours} \
                         (or --{flag}); ignoring {plain}"
                    )
                })
            })
            .collect()
    }

    fn apply(&mut self, name: &str, value: &str) -> Result<(), ConfigError> {
        let v = value.trim();
        match name {
            "host" => {
                self.host = v.parse().map_err(|_| {
                    setting(name, v, "an IP address such as 0.0.0.0, 127.0.0.1 or ::")
                })?
            }
            "port" => {
                self.port = v
                    .parse()
                    .map_err(|_| setting(name, v, "a port number from 0 to 65535"))?
            }
            // An empty variable sets no key. Errors never show the value: it is a secret.
            "api-key" if v.is_empty() => self.api_keys.clear(),
            "api-key" => {
                let keys: Vec<String> = v.split(',').map(|k| k.trim().to_string()).collect();
                if keys.iter().any(String::is_empty) {
                    return Err(key_setting(name, "an empty key"));
                }
                if keys.iter().any(|k| k.contains(':')) {
                    return Err(key_setting(name, "a key holds ':', which no key may"));
                }
                self.api_keys = keys;
            }
            "publish-key" | "subscribe-key" if v.is_empty() => {}
            "publish-key" | "subscribe-key" => {
                let keys =
                    ScopedKey::parse_list(v).map_err(|problem| key_setting(name, problem))?;
                match name {
                    "publish-key" => self.publish_keys.extend(keys),
                    _ => self.subscribe_keys.extend(keys),
                }
            }
            "history" => self.history = count(name, v, 0, 1_000_000)?,
            "max-message-size" => self.max_message_size = count(name, v, 64, 64 << 20)?,
            "outbound-limit" => self.outbound_limit = count(name, v, 1024, 1 << 30)?,
            "socket-send-buffer" => {
                self.socket_send_buffer = match v.parse::<usize>() {
                    Ok(n) if n == 0 || (4096..=1 << 30).contains(&n) => n,
                    _ => {
                        return Err(setting(
                            name,
                            v,
                            "0 (the kernel's default) or a whole number from 4096 to 1073741824",
                        ));
                    }
                }
            }
            "overflow-policy" => {
                self.overflow_policy = match v {
                    "disconnect" => OverflowPolicy::Disconnect,
                    // `drop_oldest`: the spelling of the Python and Go versions of this service.
                    "drop-oldest" | "drop_oldest" => OverflowPolicy::DropOldest,
                    _ => return Err(setting(name, v, "disconnect or drop-oldest")),
                }
            }
            "slow-consumer-grace" => self.slow_consumer_grace = seconds(name, v)?,
            "max-connections" => self.max_connections = count(name, v, 1, 10_000_000)?,
            "auto-create-topics" => {
                self.auto_create_topics = match v.to_ascii_lowercase().as_str() {
                    "true" | "1" | "yes" | "on" => true,
                    "false" | "0" | "no" | "off" | "" => false,
                    _ => return Err(setting(name, v, "true or false")),
                }
            }
            "heartbeat" => self.heartbeat = seconds(name, v)?,
            "idle-timeout" => self.idle_timeout = seconds(name, v)?,
            "shutdown-timeout" => self.shutdown_timeout = seconds(name, v)?,
            "request-timeout" => self.request_timeout = seconds(name, v)?,
            "keepalive-timeout" => self.keepalive_timeout = seconds(name, v)?,
            "max-body-size" => self.max_body_size = count(name, v, 256, 64 << 20)?,
            "log-level" => {
                self.log_level = v
                    .parse()
                    .map_err(|_| setting(name, v, "one of off, error, warn, info, debug, trace"))?
            }
            // The URL may hold a password: errors name the setting, never the value.
            "redis" if v.is_empty() => self.redis = None,
            "redis" => {
                self.redis = Some(
                    crate::engine::RedisUrl::parse(v)
                        .map_err(|why| invalid(format!("invalid --redis: {why}")))?,
                )
            }
            "redis-prefix" => {
                let ok = !v.is_empty()
                    && v.len() <= 64
                    && v.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._-:".contains(&b));
                if !ok {
                    return Err(setting(
                        name,
                        v,
                        "1 to 64 characters from A-Z a-z 0-9 . _ - :",
                    ));
                }
                self.redis_prefix = v.to_string();
            }
            _ => unreachable!("setting {name} is listed but not applied"),
        }
        Ok(())
    }
}

impl Config {
    /// Each key has one role (§6): a key given to two settings, or twice to
    /// one limited role, is refused. The message names the settings, not the key.
    fn check_roles(&self) -> Result<(), ConfigError> {
        let full = self.api_keys.iter().map(|k| ("api-key", k.as_str()));
        let publish = self
            .publish_keys
            .iter()
            .map(|s| ("publish-key", s.key.as_str()));
        let subscribe = self
            .subscribe_keys
            .iter()
            .map(|s| ("subscribe-key", s.key.as_str()));
        let all: Vec<(&str, &str)> = full.chain(publish).chain(subscribe).collect();
        for (i, (first, key)) in all.iter().enumerate() {
            for (second, other) in &all[i + 1..] {
                if key != other {
                    continue;
                }
                if first != second {
                    let problem = format!("a key is also given to --{first}: a key has one role");
                    return Err(key_setting(second, &problem));
                }
                if *first != "api-key" {
                    let problem = "a key is given twice: join its patterns with '|'";
                    return Err(key_setting(second, problem));
                }
            }
        }
        Ok(())
    }
}

fn invalid(msg: String) -> ConfigError {
    ConfigError::Invalid(msg)
}

fn setting(name: &str, value: &str, accepted: &str) -> ConfigError {
    invalid(format!(
        "invalid --{name} ({}) value '{value}': expected {accepted}",
        env_name(name)
    ))
}

/// A bad key setting: names the setting and the problem, never the value.
fn key_setting(name: &str, problem: &str) -> ConfigError {
    invalid(format!(
        "invalid --{name} ({}): {problem}; expected {}",
        env_name(name),
        match name {
            "api-key" => "KEY[,KEY...]",
            _ => "KEY[:PATTERN|PATTERN...] entries separated by commas",
        }
    ))
}

fn count(name: &str, v: &str, min: usize, max: usize) -> Result<usize, ConfigError> {
    match v.parse::<usize>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(setting(
            name,
            v,
            &format!("a whole number from {min} to {max}"),
        )),
    }
}

fn seconds(name: &str, v: &str) -> Result<Duration, ConfigError> {
    match v.parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 && s <= 86_400.0 => Ok(Duration::from_secs_f64(s)),
        _ => Err(setting(
            name,
            v,
            "a number of seconds greater than 0 and at most 86400",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str], env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_args(args.iter().map(|s| s.to_string()), move |k| {
            env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn defaults() {
        let c = parse(&[], &[]).unwrap();
        assert_eq!(c.port, 8080);
        assert_eq!(c.history, 100);
        assert_eq!(c.idle_timeout, Duration::from_secs(75));
        assert_eq!(c.overflow_policy, OverflowPolicy::Disconnect);
        assert!(!c.auto_create_topics);
        assert!(c.api_keys.is_empty());
    }

    #[test]
    fn flags_win_over_env() {
        let c = parse(&["--port", "9000"], &[("PUBSUBD_PORT", "7000")]).unwrap();
        assert_eq!(c.port, 9000);
        let c = parse(&[], &[("PUBSUBD_PORT", "7000")]).unwrap();
        assert_eq!(c.port, 7000);
        let c = parse(&["--port=9001"], &[]).unwrap();
        assert_eq!(c.port, 9001);
    }

    #[test]
    fn idle_timeout_follows_heartbeat_unless_set() {
        let c = parse(&["--heartbeat", "2"], &[]).unwrap();
        assert_eq!(c.idle_timeout, Duration::from_secs(5));
        let c = parse(&["--heartbeat", "2", "--idle-timeout", "3"], &[]).unwrap();
        assert_eq!(c.idle_timeout, Duration::from_secs(3));
    }

    #[test]
    fn switches_and_lists() {
        let c = parse(&["--auto-create-topics", "--api-key", "a, b"], &[]).unwrap();
        assert!(c.auto_create_topics);
        assert_eq!(c.api_keys, vec!["a", "b"]);
        let c = parse(&[], &[("PUBSUBD_AUTO_CREATE_TOPICS", "false")]).unwrap();
        assert!(!c.auto_create_topics);
        let c = parse(&["--overflow-policy", "drop-oldest"], &[]).unwrap();
        assert_eq!(c.overflow_policy, OverflowPolicy::DropOldest);
    }

    #[test]
    fn porting_aliases_and_warnings() {
        let c = parse(&["--overflow-policy", "drop_oldest"], &[]).unwrap();
        assert_eq!(c.overflow_policy, OverflowPolicy::DropOldest);
        let c = parse(&[], &[("PUBSUBD_OVERFLOW_POLICY", "drop_oldest")]).unwrap();
        assert_eq!(c.overflow_policy, OverflowPolicy::DropOldest);
        assert!(parse(&["--overflow-policy", "drop oldest"], &[]).is_err());

        let warnings = |env: &[(&str, &str)]| {
            Config::environment_warnings(|k| {
                env.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            })
        };
        assert_eq!(warnings(&[]), Vec::<String>::new());
        let w = warnings(&[("PORT", "3000"), ("HOST", "0.0.0.0")]);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(
            w[0].starts_with("PORT is set") && w[0].contains("PUBSUBD_PORT"),
            "{w:?}"
        );
        assert!(
            w[1].starts_with("HOST is set") && w[1].contains("PUBSUBD_HOST"),
            "{w:?}"
        );
        // Set alongside ours, or empty: nothing to say.
        let w = warnings(&[("PORT", "3000"), ("PUBSUBD_PORT", "3000"), ("HOST", " ")]);
        assert_eq!(w, Vec::<String>::new());
    }

    #[test]
    fn bad_values_name_the_setting() {
        for (args, needle) in [
            (&["--port", "x"][..], "--port"),
            (
                &["--overflow-policy", "nope"][..],
                "disconnect or drop-oldest",
            ),
            (&["--heartbeat", "0"][..], "--heartbeat"),
            (&["--history", "-1"][..], "--history"),
            (&["--log-level", "loud"][..], "--log-level"),
            (&["--bogus"][..], "--bogus"),
            (&["--port"][..], "needs a value"),
        ] {
            match parse(args, &[]) {
                Err(ConfigError::Invalid(msg)) => assert!(msg.contains(needle), "{msg}"),
                other => panic!("{args:?} gave {other:?}"),
            }
        }
        match parse(&[], &[("PUBSUBD_MAX_CONNECTIONS", "0")]) {
            Err(ConfigError::Invalid(msg)) => assert!(msg.contains("PUBSUBD_MAX_CONNECTIONS")),
            other => panic!("{other:?}"),
        }
        assert_eq!(parse(&["--help"], &[]).unwrap_err(), ConfigError::Help);
        assert_eq!(parse(&["-V"], &[]).unwrap_err(), ConfigError::Version);
        for (args, needle) in [
            (&["serve"][..], "unexpected argument 'serve'"),
            (
                &["--bogus=1"][..],
                "unknown option '--bogus' (see pubsubd --help)",
            ),
            (&["--port=1", "-x"][..], "unknown option '-x'"),
            (&["--help=yes"][..], "--help takes no value"),
        ] {
            match parse(args, &[]) {
                Err(ConfigError::Invalid(msg)) => assert!(msg.contains(needle), "{msg}"),
                other => panic!("{args:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn keys_with_roles() {
        let c = parse(
            &[
                "--publish-key",
                "svc:orders.*|billing.*",
                "--publish-key=svc2",
                "--api-key",
                "ops",
            ],
            &[
                ("PUBSUBD_PUBLISH_KEY", "ignored:x"),
                ("PUBSUBD_SUBSCRIBE_KEY", "web:orders.*, app"),
            ],
        )
        .unwrap();
        // Repeated flags add up and replace the variable; a variable lists entries.
        let keys: Vec<&str> = c.publish_keys.iter().map(|k| k.key.as_str()).collect();
        assert_eq!(keys, ["svc", "svc2"]);
        assert!(c.publish_keys[0].patterns.matches("billing.eu"));
        assert!(!c.publish_keys[0].patterns.matches("audit"));
        let keys: Vec<&str> = c.subscribe_keys.iter().map(|k| k.key.as_str()).collect();
        assert_eq!(keys, ["web", "app"]);
        assert_eq!(c.api_keys, ["ops"]);
        // An empty variable sets no key; api-key may repeat a key (rotation lists).
        let c = parse(&["--api-key", "a,a"], &[("PUBSUBD_SUBSCRIBE_KEY", "")]).unwrap();
        assert!(c.subscribe_keys.is_empty());
        assert_eq!(c.api_keys, ["a", "a"]);
    }

    #[test]
    fn bad_keys_name_the_setting_never_the_key() {
        for (args, env, needles) in [
            (
                &["--api-key", "SECRET", "--publish-key", "SECRET"][..],
                &[][..],
                &[
                    "--publish-key",
                    "PUBSUBD_PUBLISH_KEY",
                    "also given to --api-key",
                ][..],
            ),
            (
                &["--subscribe-key", "SECRET:a"],
                &[("PUBSUBD_PUBLISH_KEY", "SECRET")],
                &["--subscribe-key", "also given to --publish-key"],
            ),
            (
                &["--publish-key", "SECRET:a", "--publish-key", "SECRET:b"],
                &[],
                &["--publish-key", "given twice", "'|'"],
            ),
            (
                &["--api-key", "SECRET,"],
                &[],
                &["--api-key", "an empty key"],
            ),
            (&["--api-key", "SECRET:x"], &[], &["--api-key", "':'"]),
            (
                &[],
                &[("PUBSUBD_SUBSCRIBE_KEY", "SECRET,,other")],
                &["--subscribe-key", "PUBSUBD_SUBSCRIBE_KEY", "an empty key"],
            ),
            (
                &["--publish-key", ":orders"],
                &[],
                &["--publish-key", "an empty key"],
            ),
            (
                &["--publish-key", "SECRET:"],
                &[],
                &["--publish-key", "an empty topic pattern"],
            ),
            (
                &["--publish-key", "SECRET:a||b"],
                &[],
                &["an empty topic pattern"],
            ),
            (
                &["--subscribe-key", "SECRET:a/b"],
                &[],
                &["--subscribe-key", "topic pattern"],
            ),
        ] {
            match parse(args, env) {
                Err(ConfigError::Invalid(msg)) => {
                    for needle in needles {
                        assert!(msg.contains(needle), "{args:?} {env:?}: {msg}");
                    }
                    assert!(!msg.contains("SECRET"), "the key is in: {msg}");
                }
                other => panic!("{args:?} {env:?} gave {other:?}"),
            }
        }
    }
}
