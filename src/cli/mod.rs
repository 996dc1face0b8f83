//! The shell client: `pubsubd sub|pub|topics|stats|healthcheck`.
//!
//! It speaks only the public protocol (`protocol.md`): REST over a small
//! hand-written HTTP/1.1 client, WebSocket over a small hand-written client
//! on the project's own codec; both on a blocking `TcpStream`. Exit codes: 0 success, 1 failure (server answer, network),
//! 2 usage error or invalid input. `healthcheck` only ever exits 0 or 1, because
//! Docker reserves 2.

mod conn;
pub(crate) mod endpoint;
pub(crate) mod http;
mod rest;
mod sub;
mod websocket;
mod ws;

use std::process::ExitCode;
use std::time::Duration;

use crate::flags::{self, Opt, Token, Tokens};
use endpoint::Endpoint;

/// First arguments that select the client instead of the server.
pub const COMMANDS: &[&str] = &["sub", "pub", "topics", "stats", "healthcheck"];

/// Where the client connects when neither `--url` nor `PUBSUBD_URL` is given.
const DEFAULT_URL: &str = "http://127.0.0.1:8080";
/// Time allowed for connecting and for each answer, unless `--timeout` says otherwise.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
const HEALTHCHECK_TIMEOUT: Duration = Duration::from_secs(2);

const COMMON_HELP: &str = "\
COMMON OPTIONS (flags may come before or after the arguments):
    --url URL         server address    PUBSUBD_URL      http://127.0.0.1:8080
                      (http://host:port[/prefix]; WebSocket URL = ws://host:port[/prefix]/ws)
    --api-key KEY     sent as X-API-Key PUBSUBD_API_KEY  none (first key of a comma list)
    --timeout SECS    connect / answer timeout           10
    -h, --help        this text
";

/// How a command ended badly; each maps to one exit code.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Bad flags or arguments: exit 2, with a usage hint.
    Usage(String),
    /// Input that is not what the command takes (e.g. invalid JSON): exit 2.
    Input(String),
    /// The server said no, or could not be reached: exit 1.
    Failed(String),
}

impl Failure {
    fn exit_code(&self) -> ExitCode {
        match self {
            Failure::Usage(_) | Failure::Input(_) => ExitCode::from(2),
            Failure::Failed(_) => ExitCode::FAILURE,
        }
    }

    fn message(&self) -> &str {
        match self {
            Failure::Usage(m) | Failure::Input(m) | Failure::Failed(m) => m,
        }
    }
}

/// Settings every command shares.
pub(crate) struct Client {
    pub endpoint: Endpoint,
    pub api_key: Option<String>,
    pub timeout: Duration,
}

/// Flags and positional arguments of one command line.
struct Parsed {
    positional: Vec<String>,
    values: Vec<(&'static str, String)>,
    help: bool,
}

impl Parsed {
    fn value(&self, name: &str) -> Option<&str> {
        self.values
            .iter()
            .rev()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    fn switch(&self, name: &str) -> bool {
        self.value(name).is_some()
    }
}

/// One command: its name, its own options, and its help.
struct Command {
    name: &'static str,
    options: &'static [Opt],
    usage: &'static str,
}

const COMMON_OPTIONS: &[Opt] = &[
    Opt::value("url"),
    Opt::value("api-key"),
    Opt::value("timeout"),
    flags::HELP,
];

const SUB: Command = Command {
    name: "sub",
    options: &[
        Opt::value("last-n"),
        Opt::value("since"),
        Opt::value("epoch"),
        Opt::switch("follow"),
        Opt::value("client-id"),
    ],
    usage: "\
pubsubd sub TOPIC [--last-n N | --since SEQ [--epoch E]] [--follow] [--client-id ID]

Subscribes to TOPIC and prints each event, the server's `event` object as
received (with its \"seq\"), as one JSON line on stdout until interrupted or
the server closes.
    --last-n N        first replay up to N recent events (default 0)
    --since SEQ       first send every kept event after SEQ (the last seq you
                      saw), then live ones; stderr says whether that was all
                      of them (recovered: true) or the server no longer had some
    --epoch E         the epoch SEQ belongs to (from an earlier run); if the
                      topic was re-created since, it is followed from its start
    --follow          on a lost connection or a server restart, reconnect
                      (waiting 0.1 s, doubling up to 5 s) and resume after the
                      last seq printed; a note on stderr tells each reconnect
    --client-id ID    subscriber id (default cli-<random>); the same id on
                      another connection takes the subscription over
Exit: 0 when the server shuts down (close 1001; with --follow, never), 1 on an
error (unknown topic, topic deleted, subscription taken over, slow consumer and
connection lost unless --follow).
",
};

const PUB: Command = Command {
    name: "pub",
    options: &[Opt::value("client-id")],
    usage: "\
pubsubd pub TOPIC [JSON]

Publishes JSON (any JSON value: '{\"a\":1}', '\"text\"', '42') to TOPIC with a
fresh UUID v4 as message id. Without JSON, publishes one message per stdin
line (empty lines are skipped). Waits for every acknowledgement.
    --client-id ID    sent as the publisher's client_id
Exit: 0 when every message was acknowledged, 1 on an error answer (e.g.
TOPIC_NOT_FOUND) or a network failure, 2 on invalid JSON.
",
};

const TOPICS: Command = Command {
    name: "topics",
    options: &[Opt::switch("json")],
    usage: "\
pubsubd topics [--json]            list topics: name <TAB> subscribers, one per line
pubsubd topics create NAME [--json]
pubsubd topics delete NAME [--json]

    --json            print the server's JSON answer as it is
Exit: 0 on success, 1 when the server refuses (e.g. 409 exists, 404 not found).
",
};

const STATS: Command = Command {
    name: "stats",
    options: &[],
    usage: "\
pubsubd stats

Prints the server's /stats JSON, indented.
",
};

const HEALTHCHECK: Command = Command {
    name: "healthcheck",
    options: &[],
    usage: "\
pubsubd healthcheck [--url URL] [--timeout SECS]

GETs /health and exits 0 on 200, 1 otherwise (never 2: Docker reserves it).
Without --url or PUBSUBD_URL it checks the local server configured by the
environment: http://PUBSUBD_HOST:PUBSUBD_PORT, where a wildcard or missing
host means loopback and the port defaults to 8080. Timeout 2 s by default.
This is the Docker HEALTHCHECK of the scratch image.
",
};

/// Runs one client command; `args[0]` is the command name.
pub fn main(args: Vec<String>) -> ExitCode {
    let mut args = args.into_iter();
    let name = args.next().unwrap_or_default();
    let command = match name.as_str() {
        "sub" => &SUB,
        "pub" => &PUB,
        "topics" => &TOPICS,
        "stats" => &STATS,
        "healthcheck" => &HEALTHCHECK,
        other => {
            eprintln!("pubsubd: unknown command '{other}' (expected one of {COMMANDS:?})");
            return ExitCode::from(2);
        }
    };
    let env = |key: &str| std::env::var(key).ok().filter(|v| !v.is_empty());
    let result = parse(command, args.collect()).and_then(|parsed| {
        if parsed.help {
            print!("usage: {}\n{COMMON_HELP}", command.usage);
            return Ok(ExitCode::SUCCESS);
        }
        run(command.name, &parsed, &env)
    });
    match result {
        Ok(code) => code,
        Err(failure) => {
            eprintln!("pubsubd: {}", failure.message());
            if let Failure::Usage(_) = failure {
                eprintln!(
                    "usage: {}",
                    command.usage.lines().next().unwrap_or_default()
                );
                eprintln!("(see pubsubd {} --help)", command.name);
            }
            if command.name == "healthcheck" {
                ExitCode::FAILURE
            } else {
                failure.exit_code()
            }
        }
    }
}

fn run(
    command: &str,
    parsed: &Parsed,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<ExitCode, Failure> {
    let client = client(command, parsed, env)?;
    let args: Vec<&str> = parsed.positional.iter().map(String::as_str).collect();
    match (command, args.as_slice()) {
        ("sub", [topic]) => {
            let options = sub::Options {
                topic,
                client_id: parsed.value("client-id"),
                start: sub_start(parsed)?,
                follow: parsed.switch("follow"),
            };
            sub::subscribe(&client, &options)
        }
        ("pub", [topic]) => ws::publish(&client, topic, None, parsed.value("client-id")),
        ("pub", [topic, json]) => {
            ws::publish(&client, topic, Some(json), parsed.value("client-id"))
        }
        ("topics", [] | ["list"]) => rest::list_topics(&client, parsed.switch("json")),
        ("topics", ["create", name]) => rest::create_topic(&client, name, parsed.switch("json")),
        ("topics", ["delete", name]) => rest::delete_topic(&client, name, parsed.switch("json")),
        ("topics", ["create" | "delete"]) => Err(Failure::Usage(format!(
            "topics {} needs a topic NAME",
            args[0]
        ))),
        ("stats", []) => rest::stats(&client),
        ("healthcheck", []) => rest::healthcheck(&client),
        ("sub" | "pub", []) => Err(Failure::Usage("missing TOPIC".to_string())),
        _ => Err(Failure::Usage(format!(
            "unexpected argument '{}'",
            args.last().copied().unwrap_or_default()
        ))),
    }
}

/// Where `sub` starts: `--last-n`, or `--since` with an optional `--epoch`.
fn sub_start(parsed: &Parsed) -> Result<sub::Start, Failure> {
    let whole = |flag: &str| match parsed.value(flag) {
        None => Ok(None),
        Some(v) => v.parse::<u64>().map(Some).map_err(|_| {
            Failure::Usage(format!(
                "invalid --{flag} '{v}': expected a whole number >= 0"
            ))
        }),
    };
    let epoch = parsed.value("epoch").map(String::from);
    match (whole("last-n")?, whole("since")?, epoch) {
        (Some(_), Some(_), _) => Err(Failure::Usage(
            "give --last-n or --since, not both: --since resumes after a seq, \
             --last-n replays the most recent events"
                .to_string(),
        )),
        (_, None, Some(_)) => Err(Failure::Usage(
            "--epoch goes with --since: the epoch the seq belongs to".to_string(),
        )),
        (_, Some(seq), epoch) => Ok(sub::Start::Since { seq, epoch }),
        (last_n, None, None) => Ok(sub::Start::LastN(last_n.unwrap_or(0))),
    }
}

/// The endpoint, key and timeout from flags, then the environment, then defaults.
fn client(
    command: &str,
    parsed: &Parsed,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Client, Failure> {
    let url = match parsed
        .value("url")
        .map(String::from)
        .or_else(|| env("PUBSUBD_URL"))
    {
        Some(url) => url,
        None if command == "healthcheck" => local_url(env),
        None => DEFAULT_URL.to_string(),
    };
    let endpoint = Endpoint::parse(&url).map_err(Failure::Usage)?;
    // The server's PUBSUBD_API_KEY may list several keys for rotation; any one will do.
    let api_key = parsed
        .value("api-key")
        .map(String::from)
        .or_else(|| env("PUBSUBD_API_KEY"))
        .and_then(|keys| {
            keys.split(',')
                .map(str::trim)
                .find(|k| !k.is_empty())
                .map(String::from)
        });
    let timeout = match parsed.value("timeout") {
        None if command == "healthcheck" => HEALTHCHECK_TIMEOUT,
        None => DEFAULT_TIMEOUT,
        Some(v) => v
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s > 0.0 && *s <= 86_400.0)
            .map(Duration::from_secs_f64)
            .ok_or_else(|| {
                Failure::Usage(format!(
                    "invalid --timeout '{v}': expected seconds, more than 0 (e.g. 2 or 0.5)"
                ))
            })?,
    };
    Ok(Client {
        endpoint,
        api_key,
        timeout,
    })
}

/// The server this container runs, as its own environment describes it.
fn local_url(env: &dyn Fn(&str) -> Option<String>) -> String {
    let host = match env("PUBSUBD_HOST").and_then(|h| h.trim().parse::<std::net::IpAddr>().ok()) {
        Some(std::net::IpAddr::V6(ip)) if ip.is_unspecified() => "[::1]".to_string(),
        Some(std::net::IpAddr::V6(ip)) => format!("[{ip}]"),
        Some(ip) if !ip.is_unspecified() => ip.to_string(),
        _ => "127.0.0.1".to_string(),
    };
    let port = env("PUBSUBD_PORT").unwrap_or_else(|| "8080".to_string());
    format!("http://{host}:{}", port.trim())
}

/// Splits flags from positional arguments, in any order; `--` ends the flags.
fn parse(command: &Command, args: Vec<String>) -> Result<Parsed, Failure> {
    let mut parsed = Parsed {
        positional: Vec::new(),
        values: Vec::new(),
        help: false,
    };
    for token in Tokens::new(args, &[COMMON_OPTIONS, command.options]) {
        match token.map_err(|e| Failure::Usage(e.to_string()))? {
            Token::Flag("help", _) => parsed.help = true,
            Token::Flag(name, value) => parsed.values.push((name, value.unwrap_or_default())),
            Token::Positional(arg) => parsed.positional.push(arg),
        }
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn flags_before_and_after_arguments() {
        let p = parse(&SUB, strings(&["--url", "http://h:1", "t", "--last-n=3"])).unwrap();
        assert_eq!(p.positional, ["t"]);
        assert_eq!(p.value("url"), Some("http://h:1"));
        assert_eq!(p.value("last-n"), Some("3"));
    }

    #[test]
    fn negative_number_is_a_payload_and_double_dash_ends_flags() {
        let p = parse(&PUB, strings(&["t", "-5"])).unwrap();
        assert_eq!(p.positional, ["t", "-5"]);
        let p = parse(&PUB, strings(&["t", "--", "--url"])).unwrap();
        assert_eq!(p.positional, ["t", "--url"]);
    }

    #[test]
    fn unknown_and_malformed_flags_are_usage_errors() {
        for args in [
            &["t", "--nope"][..],
            &["t", "-x"],
            &["t", "--last-n"],
            &["--json"],
        ] {
            let result = parse(&SUB, strings(args));
            assert!(matches!(result, Err(Failure::Usage(_))), "{args:?}");
        }
        assert!(matches!(
            parse(&TOPICS, strings(&["--json=yes"])),
            Err(Failure::Usage(_))
        ));
    }

    #[test]
    fn healthcheck_url_follows_the_server_environment() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(local_url(&env(&[])), "http://127.0.0.1:8080");
        assert_eq!(
            local_url(&env(&[
                ("PUBSUBD_HOST", "0.0.0.0"),
                ("PUBSUBD_PORT", "9000")
            ])),
            "http://127.0.0.1:9000"
        );
        assert_eq!(
            local_url(&env(&[("PUBSUBD_HOST", "::")])),
            "http://[::1]:8080"
        );
        assert_eq!(
            local_url(&env(&[("PUBSUBD_HOST", "10.1.2.3")])),
            "http://10.1.2.3:8080"
        );
    }

    #[test]
    fn sub_starts_from_last_n_or_since() {
        let start = |args: &[&str]| sub_start(&parse(&SUB, strings(args)).unwrap());
        assert!(matches!(start(&["t"]), Ok(sub::Start::LastN(0))));
        assert!(matches!(
            start(&["t", "--last-n", "4"]),
            Ok(sub::Start::LastN(4))
        ));
        assert!(matches!(
            start(&["t", "--since", "7", "--follow"]),
            Ok(sub::Start::Since {
                seq: 7,
                epoch: None
            })
        ));
        match start(&["t", "--since=7", "--epoch", "k3f9a2c1"]) {
            Ok(sub::Start::Since { seq: 7, epoch }) => {
                assert_eq!(epoch.as_deref(), Some("k3f9a2c1"))
            }
            _ => panic!("--since with --epoch"),
        }
        for args in [
            &["t", "--since", "1", "--last-n", "2"][..],
            &["t", "--epoch", "k3f9a2c1"],
            &["t", "--since", "-1"],
            &["t", "--since", "x"],
        ] {
            assert!(matches!(start(args), Err(Failure::Usage(_))), "{args:?}");
        }
        assert!(matches!(
            parse(&SUB, strings(&["t", "--follow=yes"])),
            Err(Failure::Usage(_))
        ));
    }

    #[test]
    fn first_of_several_api_keys_is_sent() {
        let parsed = parse(&STATS, Vec::new()).unwrap();
        let env = |k: &str| (k == "PUBSUBD_API_KEY").then(|| " ,k1,k2".to_string());
        let client = client("stats", &parsed, &env).unwrap();
        assert_eq!(client.api_key.as_deref(), Some("k1"));
        assert_eq!(client.timeout, DEFAULT_TIMEOUT);
    }
}
