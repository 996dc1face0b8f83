//! Settings: command-line flags and `PUBSUBD_*` environment variables, validated
//! into one [`Config`]. Flags win over the environment; every error names the
//! setting and the values it accepts.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

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
    /// Accepted API keys; empty means no authentication.
    pub api_keys: Vec<String>,
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
}

impl Default for Config {
    fn default() -> Self {
        Config {
            host: IpAddr::from([0, 0, 0, 0]),
            port: 8080,
            api_keys: Vec::new(),
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
    --api-key KEY[,KEY...]     PUBSUBD_API_KEY              none (no auth)
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
    -h, --help                 this text
    -V, --version              the version (and commit, when built from a checkout)

Seconds may be fractional (0.5). Flags win over environment variables.
";

/// Every setting's flag; each has an environment variable ([`env_name`]).
pub const SETTINGS: &[Opt] = &[
    Opt::value("host"),
    Opt::value("port"),
    Opt::value("api-key"),
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
        for token in Tokens::new(args, &[SETTINGS, &[flags::HELP, flags::VERSION]]) {
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
        Ok(config)
    }

    /// Builds a config from the process's arguments and environment.
    pub fn from_env_and_args(args: Vec<String>) -> Result<Config, ConfigError> {
        Config::from_args(args, |k| std::env::var(k).ok())
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
            "api-key" => {
                let keys: Vec<String> = v
                    .split(',')
                    .map(str::trim)
                    .filter(|k| !k.is_empty())
                    .map(String::from)
                    .collect();
                if keys.is_empty() && !v.is_empty() {
                    return Err(invalid(
                        "invalid --api-key: expected one or more keys separated by commas"
                            .to_string(),
                    ));
                }
                self.api_keys = keys;
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
                    "drop-oldest" => OverflowPolicy::DropOldest,
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
            _ => unreachable!("setting {name} is listed but not applied"),
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
}
