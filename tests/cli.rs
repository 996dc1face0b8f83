//! The binary from the command line: the shell client
//! (`pubsubd sub|pub|topics|stats|healthcheck`) against a live in-process
//! server, and the server's own start-up, `--help`, `--version` and logs.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{
    CHILD_TIMEOUT, Http, Output, ServerProcess, binary, http, refusing_port, run, run_with_stdin,
    start_with, wait_child, wait_until,
};
use serde_json::Value;

fn start(api_keys: &[&str]) -> common::Server {
    start_with(|c| c.api_keys = api_keys.iter().map(|k| k.to_string()).collect())
}

fn url(addr: SocketAddr) -> String {
    format!("http://{addr}")
}

fn subscribers(addr: SocketAddr, topic: &str) -> u64 {
    let topics = http(addr, "GET", "/topics", None).json();
    topics["topics"]
        .as_array()
        .expect("topics list")
        .iter()
        .find(|t| t["name"] == topic)
        .and_then(|t| t["subscribers"].as_u64())
        .unwrap_or(0)
}

/// A running `pubsubd sub`; its stdout lines arrive on a channel. Dropping it
/// kills the child.
struct Sub {
    child: Option<Child>,
    lines: mpsc::Receiver<String>,
}

impl Sub {
    fn spawn(mut cmd: Command) -> Sub {
        let mut child = cmd.spawn().expect("spawn sub");
        let stdout: ChildStdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Sub {
            child: Some(child),
            lines,
        }
    }

    fn next_event(&self) -> Value {
        let line = self
            .lines
            .recv_timeout(CHILD_TIMEOUT)
            .expect("an event line from sub");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    }

    fn finish(mut self) -> Output {
        wait_child(self.child.take().expect("running sub"))
    }
}

impl Drop for Sub {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn create(addr: SocketAddr, topic: &str) {
    let out = run(&mut binary(&[
        "topics",
        "create",
        topic,
        "--url",
        &url(addr),
    ]));
    assert_eq!(out.code(), Some(0), "create {topic}: {}", out.stderr);
}

/// Starts `sub` and returns once the server counts its subscription.
fn subscribe(addr: SocketAddr, topic: &str, extra: &[&str]) -> Sub {
    let before = subscribers(addr, topic);
    let mut args = vec!["sub", topic, "--url"];
    let u = url(addr);
    args.push(&u);
    args.extend_from_slice(extra);
    let sub = Sub::spawn(binary(&args));
    wait_until("the subscription", || subscribers(addr, topic) > before);
    sub
}

#[test]
fn topics_create_list_delete() {
    let server = start(&[]);
    let u = url(server.addr);

    let out = run(&mut binary(&["topics", "create", "orders", "--url", &u]));
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert_eq!(out.stdout.trim(), "created topic 'orders'");
    // Flags before the arguments; a name that needs percent-encoding.
    let out = run(&mut binary(&["topics", "--url", &u, "create", "a:b.c_d-e"]));
    assert_eq!(out.code(), Some(0), "{}", out.stderr);

    let out = run(&mut binary(&["topics", "create", "orders", "--url", &u]));
    assert_eq!(out.code(), Some(1));
    assert!(
        out.stderr.contains("409") && out.stderr.contains("topic already exists"),
        "{}",
        out.stderr
    );

    let out = run(&mut binary(&["topics", "--url", &u]));
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert_eq!(out.stdout, "a:b.c_d-e\t0\norders\t0\n");
    let out = run(&mut binary(&["topics", "--json", "--url", &u]));
    let json: Value = serde_json::from_str(&out.stdout).expect("--json prints JSON");
    assert_eq!(json["topics"].as_array().map(Vec::len), Some(2));

    let out = run(&mut binary(&["topics", "delete", "--url", &u, "a:b.c_d-e"]));
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert_eq!(out.stdout.trim(), "deleted topic 'a:b.c_d-e'");
    let out = run(&mut binary(&["topics", "delete", "a:b.c_d-e", "--url", &u]));
    assert_eq!(out.code(), Some(1));
    assert!(
        out.stderr.contains("404") && out.stderr.contains("topic not found"),
        "{}",
        out.stderr
    );

    let out = run(&mut binary(&["topics", "create", "bad name", "--url", &u]));
    assert_eq!(out.code(), Some(1));
    assert!(out.stderr.contains("400"), "{}", out.stderr);
    let out = run(&mut binary(&["topics", "--url", &u]));
    assert_eq!(out.stdout, "orders\t0\n");
}

#[test]
fn publish_to_a_missing_topic_fails_with_the_servers_reason() {
    let server = start(&[]);
    let u = url(server.addr);
    let out = run(&mut binary(&["pub", "nope", r#"{"a":1}"#, "--url", &u]));
    assert_eq!(out.code(), Some(1));
    assert!(
        out.stderr
            .contains("publish to 'nope' failed: TOPIC_NOT_FOUND"),
        "{}",
        out.stderr
    );
    let out = run(&mut binary(&["sub", "nope", "--url", &u]));
    assert_eq!(out.code(), Some(1));
    assert!(
        out.stderr
            .contains("subscribe to 'nope' failed: TOPIC_NOT_FOUND"),
        "{}",
        out.stderr
    );
}

#[test]
fn invalid_input_and_usage_errors_exit_2() {
    let server = start(&[]);
    let u = url(server.addr);
    create(server.addr, "t");
    let out = run(&mut binary(&["pub", "t", "hello", "--url", &u]));
    assert_eq!(out.code(), Some(2));
    assert!(
        out.stderr.contains("invalid JSON payload"),
        "{}",
        out.stderr
    );
    for args in [
        &["pub", "t", "1", "--nope"][..],
        &["sub"],
        &["sub", "t", "--last-n", "-1"],
        &["topics", "rename", "t"],
        &["stats", "--url", "https://example.com"],
    ] {
        let out = run(&mut binary(args));
        assert_eq!(out.code(), Some(2), "{args:?}: {}", out.stderr);
        assert!(out.stderr.starts_with("pubsubd: "), "{}", out.stderr);
    }
    let out = run(&mut binary(&["pub", "--help"]));
    assert_eq!(out.code(), Some(0));
    assert!(out.stdout.contains("pubsubd pub TOPIC [JSON]"));
    assert!(out.stdout.contains("--api-key"));
}

#[test]
fn sub_prints_what_pub_publishes() {
    let server = start(&[]);
    let addr = server.addr;
    let u = url(addr);
    create(addr, "orders");
    create(addr, "other");
    let sub = subscribe(addr, "orders", &[]);

    let out = run(&mut binary(&[
        "pub",
        "orders",
        r#"{"order_id":"ORD-1","amount":99.50}"#,
        "--url",
        &u,
    ]));
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    let event = sub.next_event();
    assert_eq!(event["type"], "event");
    assert_eq!(event["topic"], "orders");
    assert_eq!(event["message"]["payload"]["order_id"], "ORD-1");
    let id = event["message"]["id"].as_str().expect("message id");
    let id = uuid::Uuid::parse_str(id).expect("a UUID");
    assert_eq!(id.get_version_num(), 4);
    assert!(event["ts"].as_str().is_some_and(|ts| ts.ends_with('Z')));

    // Isolation: nothing from another topic reaches this subscriber.
    let out = run(&mut binary(&["pub", "other", "0", "--url", &u]));
    assert_eq!(out.code(), Some(0), "{}", out.stderr);

    // One message per stdin line, empty lines skipped, in order.
    let out = run_with_stdin(
        &mut binary(&["pub", "orders", "--url", &u]),
        "1\n\n\"two\"\n{\"x\":[3]}\n",
    );
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    for expected in [r#"1"#, r#""two""#, r#"{"x":[3]}"#] {
        let event = sub.next_event();
        assert_eq!(event["topic"], "orders");
        assert_eq!(event["message"]["payload"].to_string(), expected);
    }

    // Many lines: the pipelined publisher keeps order and loses nothing.
    let input: String = (0..500).map(|i| format!("{{\"i\":{i}}}\n")).collect();
    let out = run_with_stdin(&mut binary(&["pub", "orders", "--url", &u]), &input);
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    for i in 0..500 {
        assert_eq!(sub.next_event()["message"]["payload"]["i"], i);
    }

    // A bad line stops the publisher after the good ones before it.
    let out = run_with_stdin(
        &mut binary(&["pub", "orders", "--url", &u]),
        "7\nnot json\n8\n",
    );
    assert_eq!(out.code(), Some(2));
    assert!(out.stderr.contains("stdin line 2"), "{}", out.stderr);
    assert_eq!(sub.next_event()["message"]["payload"], 7);

    let stats = run(&mut binary(&["stats", "--url", &u]));
    assert_eq!(stats.code(), Some(0), "{}", stats.stderr);
    assert!(
        stats.stdout.contains("\n  "),
        "pretty printed: {}",
        stats.stdout
    );
    let stats: Value = serde_json::from_str(&stats.stdout).expect("stats JSON");
    assert_eq!(stats["topics"]["orders"]["messages"], 1 + 3 + 500 + 1);
    assert_eq!(stats["topics"]["orders"]["subscribers"], 1);
    assert_eq!(stats["topics"]["other"]["messages"], 1);
    drop(sub);
}

#[test]
fn sub_replays_last_n_then_ends_when_the_topic_is_deleted() {
    let server = start(&[]);
    let addr = server.addr;
    let u = url(addr);
    create(addr, "t");
    let out = run_with_stdin(&mut binary(&["pub", "t", "--url", &u]), "1\n2\n3\n");
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    let sub = subscribe(addr, "t", &["--last-n", "2", "--client-id", "replayer"]);
    assert_eq!(sub.next_event()["message"]["payload"], 2);
    assert_eq!(sub.next_event()["message"]["payload"], 3);

    let out = run(&mut binary(&["topics", "delete", "t", "--url", &u]));
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    let out = sub.finish();
    assert_eq!(out.code(), Some(1));
    assert!(
        out.stderr.contains("topic 't' was deleted"),
        "{}",
        out.stderr
    );
}

#[test]
fn sub_exits_0_when_the_server_shuts_down() {
    let server = start(&[]);
    let addr = server.addr;
    create(addr, "t");
    let sub = subscribe(addr, "t", &[]);
    server.handle.shutdown().expect("graceful shutdown");
    let out = sub.finish();
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert!(out.stderr.contains("shutting down"), "{}", out.stderr);
}

#[test]
fn healthcheck_exit_codes() {
    let server = start(&[]);
    let addr = server.addr;
    let out = run(&mut binary(&["healthcheck", "--url", &url(addr)]));
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    let health: Value = serde_json::from_str(&out.stdout).expect("health JSON");
    assert!(health["uptime_sec"].is_u64());

    // As in the container: no URL, the server's own PUBSUBD_HOST/PUBSUBD_PORT.
    let port = addr.port().to_string();
    let out = run(binary(&["healthcheck"])
        .env("PUBSUBD_HOST", "0.0.0.0")
        .env("PUBSUBD_PORT", &port));
    assert_eq!(out.code(), Some(0), "{}", out.stderr);

    // Bound and not listening for the whole test: nothing else can take it.
    let refusing = refusing_port();
    let dead = refusing.addr;
    let out = run(&mut binary(&["healthcheck", "--url", &url(dead)]));
    assert_eq!(out.code(), Some(1));
    assert!(out.stderr.contains("cannot reach"), "{}", out.stderr);
    let out = run(binary(&["healthcheck"]).env("PUBSUBD_PORT", dead.port().to_string()));
    assert_eq!(out.code(), Some(1));

    // A server that accepts but never answers: unhealthy within the timeout.
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let started = Instant::now();
    let silent_url = url(silent.local_addr().expect("addr"));
    let out = run(&mut binary(&[
        "healthcheck",
        "--url",
        &silent_url,
        "--timeout",
        "0.3",
    ]));
    assert_eq!(out.code(), Some(1));
    assert!(started.elapsed() < Duration::from_secs(5));

    // Never 2, which Docker reserves, even for a usage error.
    let out = run(&mut binary(&["healthcheck", "--bogus"]));
    assert_eq!(out.code(), Some(1));
}

#[test]
fn api_key_is_sent_on_rest_and_websocket() {
    let server = start(&["k1", "k2"]);
    let addr = server.addr;
    let u = url(addr);

    let out = run(&mut binary(&["topics", "create", "t", "--url", &u]));
    assert_eq!(out.code(), Some(1));
    assert!(out.stderr.contains("401"), "{}", out.stderr);
    let out = run(&mut binary(&[
        "topics",
        "create",
        "t",
        "--url",
        &u,
        "--api-key",
        "k2",
    ]));
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    // The server's own variable may list several keys; the client sends the first.
    let out = run(binary(&["topics"])
        .env("PUBSUBD_URL", &u)
        .env("PUBSUBD_API_KEY", "k1,k2"));
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert_eq!(out.stdout, "t\t0\n");

    let out = run(&mut binary(&["pub", "t", "1", "--url", &u]));
    assert_eq!(out.code(), Some(1));
    assert!(
        out.stderr.contains("refused the WebSocket") && out.stderr.contains("401"),
        "{}",
        out.stderr
    );

    let sub = Sub::spawn({
        let mut c = binary(&["sub", "t", "--url", &u]);
        c.env("PUBSUBD_API_KEY", "k1");
        c
    });
    let keyed = |addr| {
        let r = Http::connect(addr).request("GET", "/topics", "X-API-Key: k1\r\n", None);
        String::from_utf8_lossy(&r.body).contains(r#""subscribers":1"#)
    };
    wait_until("the keyed subscription", || keyed(addr));
    let out = run(&mut binary(&[
        "pub",
        "t",
        r#""secret""#,
        "--url",
        &u,
        "--api-key",
        "k1",
    ]));
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert_eq!(sub.next_event()["message"]["payload"], "secret");

    let out = run(&mut binary(&["healthcheck", "--url", &u]));
    assert_eq!(out.code(), Some(0), "/health needs no key: {}", out.stderr);
    let out = run(&mut binary(&["stats", "--url", &u, "--api-key", "wrong"]));
    assert_eq!(out.code(), Some(1));
    assert!(out.stderr.contains("unauthorized"), "{}", out.stderr);
}

#[test]
fn idle_sub_and_pub_answer_heartbeats_and_stay_connected() {
    // An idle timeout of 1 s: a client descheduled for a few hundred
    // milliseconds on a loaded machine must not look dead.
    let server = start_with(|c| {
        c.heartbeat = Duration::from_millis(250);
        c.idle_timeout = Duration::from_secs(1);
    });
    let addr = server.addr;
    let u = url(addr);
    create(addr, "t");
    let sub = subscribe(addr, "t", &[]);
    let mut publisher = binary(&["pub", "t", "--url", &u])
        .stdin(Stdio::piped())
        .spawn()
        .expect("spawn pub");
    let mut stdin = publisher.stdin.take().expect("piped stdin");
    writeln!(stdin, "1").expect("write stdin");
    assert_eq!(sub.next_event()["message"]["payload"], 1);

    // Time passing is the point here: several heartbeats and idle timeouts.
    std::thread::sleep(Duration::from_millis(2600));

    writeln!(stdin, "2").expect("write stdin");
    drop(stdin);
    assert_eq!(sub.next_event()["message"]["payload"], 2);
    let out = wait_child(publisher);
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert_eq!(
        subscribers(addr, "t"),
        1,
        "the idle subscriber is still there"
    );
}

// ---- the server binary itself ----

#[test]
fn version_names_the_release_and_the_commit() {
    let commit = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    for flag in ["--version", "-V"] {
        let out = run(&mut binary(&[flag]));
        assert_eq!(out.code(), Some(0), "{flag}: {}", out.stderr);
        let line = out.stdout.trim_end();
        assert!(
            line.starts_with(concat!("pubsubd ", env!("CARGO_PKG_VERSION"))),
            "{flag}: {line}"
        );
        assert_eq!(out.stdout.lines().count(), 1, "{flag}: {}", out.stdout);
        if let Some(commit) = &commit {
            assert!(line.ends_with(&format!("({commit})")), "{flag}: {line}");
        }
    }
}

#[test]
fn a_bad_setting_stops_start_up_naming_it() {
    let with_env = |args: &[&str], env: &[(&str, &str)]| {
        let mut cmd = binary(args);
        cmd.envs(env.iter().copied());
        run(&mut cmd)
    };
    for (args, env, needles) in [
        (
            &["--port", "70000"][..],
            &[][..],
            &["--port", "PUBSUBD_PORT", "'70000'", "0 to 65535"][..],
        ),
        (
            &[],
            &[("PUBSUBD_OVERFLOW_POLICY", "sometimes")],
            &[
                "--overflow-policy",
                "PUBSUBD_OVERFLOW_POLICY",
                "disconnect or drop-oldest",
            ],
        ),
        (
            &["--heartbeat=0"],
            &[],
            &["--heartbeat", "PUBSUBD_HEARTBEAT", "greater than 0"],
        ),
        (
            &["--host", "nowhere"],
            &[],
            &["--host", "PUBSUBD_HOST", "an IP address"],
        ),
        (
            &["--log-level", "loud"],
            &[],
            &["--log-level", "off, error, warn, info, debug, trace"],
        ),
        (
            &["--max-connections"],
            &[],
            &["--max-connections needs a value"],
        ),
        (&["--bogus"], &[], &["unknown option '--bogus'", "--help"]),
        (&["extra"], &[], &["unexpected argument 'extra'"]),
    ] {
        let started = Instant::now();
        let out = with_env(args, env);
        assert_eq!(out.code(), Some(2), "{args:?} {env:?}: {}", out.stderr);
        for needle in needles {
            assert!(
                out.stderr.contains(needle),
                "{args:?} {env:?}: no {needle:?} in {}",
                out.stderr
            );
        }
        assert!(!out.stderr.contains("listening on"), "{}", out.stderr);
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}

/// The names of the top-level fields of `Config`, from its `Debug` output.
fn config_fields() -> Vec<String> {
    let text = format!("{:?}", pubsubd::Config::default());
    let body = text
        .strip_prefix("Config { ")
        .and_then(|t| t.strip_suffix(" }"))
        .expect("Config { … }");
    let mut fields = Vec::new();
    let mut depth = 0;
    let mut start = 0;
    for (i, c) in body.char_indices() {
        match c {
            '{' | '[' | '(' => depth += 1,
            '}' | ']' | ')' => depth -= 1,
            ',' if depth == 0 => start = i + 2,
            ':' if depth == 0 && i > start => {
                let name = &body[start..i];
                if name.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                    fields.push(name.to_string());
                }
                start = usize::MAX;
            }
            _ => {}
        }
    }
    fields
}

#[test]
fn help_lists_every_setting_with_its_environment_variable() {
    let out = run(&mut binary(&["--help"]));
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    let help = out.stdout;
    let settings: Vec<&str> = pubsubd::config::SETTINGS.iter().map(|s| s.name).collect();
    for name in &settings {
        let flag = format!("--{name}");
        let env = pubsubd::config::env_name(name);
        // `--name VALUE …` or `--name[=B] …`
        let first_word = |l: &str| {
            let word = l.split_whitespace().next().unwrap_or_default();
            word.split('[').next().unwrap_or_default().to_string()
        };
        let line = help
            .lines()
            .find(|l| first_word(l) == flag)
            .unwrap_or_else(|| panic!("--help has no line for {flag}:\n{help}"));
        assert!(line.contains(&env), "{flag}'s line lacks {env}: {line}");
    }
    // Nothing listed that the server does not take.
    for line in help.lines() {
        if let Some(flag) = line.trim_start().strip_prefix("--") {
            let name = flag.split([' ', '[']).next().unwrap_or_default();
            assert!(
                settings.contains(&name),
                "--help lists --{name}, no such setting"
            );
        }
    }
    // Every field of Config has its flag (plural fields take one flag).
    let fields = config_fields();
    assert!(fields.len() >= settings.len(), "{fields:?}");
    for field in fields {
        let flag = field.trim_end_matches('s').replace('_', "-");
        assert!(
            settings.contains(&field.replace('_', "-").as_str())
                || settings.contains(&flag.as_str()),
            "Config.{field} has no flag"
        );
    }
}

#[test]
fn api_keys_never_reach_the_logs() {
    const KEY: &str = "SECRETVALUE-k3y-1";
    const SPARE: &str = "ROTATEDSECRET-k3y-2";
    const WRONG: &str = "WRONGGUESS-k3y-3";
    const PUBLISHER: &str = "PUBLISHSECRET-k3y-4";
    const SUBSCRIBER: &str = "SUBSCRIBESECRET-k3y-5";
    let keys = format!("{KEY},{SPARE}");
    let publisher_key = format!("{PUBLISHER}:t|x.*");
    let subscriber_key = format!("{SUBSCRIBER}:t");
    let server = ServerProcess::start(&[
        "--api-key",
        &keys,
        "--publish-key",
        &publisher_key,
        "--subscribe-key",
        &subscriber_key,
        "--log-level",
        "trace",
    ]);
    let addr = server.addr;

    let mut c = Http::connect(addr);
    let with_key = format!("X-API-Key: {KEY}\r\n");
    let created = c.request("POST", "/topics", &with_key, Some(r#"{"name":"t"}"#));
    assert_eq!(created.status, 201);
    let spare = format!("X-API-Key: {SPARE}\r\n");
    assert_eq!(c.request("GET", "/topics", &spare, None).status, 200);
    // Whether or not this server takes Bearer keys, the header must not be logged.
    let bearer = format!("Authorization: Bearer {KEY}\r\n");
    c.request("GET", "/topics", &bearer, None);
    let wrong = format!("X-API-Key: {WRONG}\r\n");
    assert_eq!(c.request("GET", "/stats", &wrong, None).status, 401);
    assert_eq!(c.request("GET", "/stats", "", None).status, 401);
    // Keys with roles: allowed, and refused with 403.
    let limited = format!("Authorization: Bearer {SUBSCRIBER}\r\n");
    assert_eq!(c.request("GET", "/stats", &limited, None).status, 200);
    let limited = format!("X-API-Key: {PUBLISHER}\r\n");
    let refused = c.request("POST", "/topics", &limited, Some(r#"{"name":"u"}"#));
    assert_eq!(refused.status, 403);

    let path = format!("/ws?api_key={KEY}");
    let mut ws = common::Ws::connect_path(addr, &path, &[]).expect("a keyed handshake");
    ws.subscribe("t", "s1", 0);
    let mut publisher =
        common::Ws::connect_path(addr, "/ws", &[("X-API-Key", SPARE)]).expect("a keyed handshake");
    let ack = publisher.publish("t", serde_json::json!({"n": 1}));
    assert_eq!(ack["type"], "ack", "{ack}");
    assert_eq!(ws.recv()["type"], "event");
    let bearer = format!("Bearer {SUBSCRIBER}");
    let mut limited_sub = common::Ws::connect_path(addr, "/ws", &[("Authorization", &bearer)])
        .expect("a subscribe key's handshake");
    limited_sub.subscribe("t", "s2", 0);
    let refused = limited_sub.publish("t", serde_json::json!({"n": 2}));
    assert_eq!(refused["error"]["code"], "FORBIDDEN", "{refused}");
    let mut limited_pub = common::Ws::connect_path(addr, &format!("/ws?api_key={PUBLISHER}"), &[])
        .expect("a publish key's handshake");
    let ack = limited_pub.publish("t", serde_json::json!({"n": 3}));
    assert_eq!(ack["type"], "ack", "{ack}");
    assert_eq!(limited_sub.recv()["type"], "event");
    let refused = common::Ws::connect_path(addr, &format!("/ws?api_key={WRONG}"), &[]);
    assert!(refused.is_err(), "a wrong key was let in");
    let out = run(&mut binary(&[
        "stats",
        "--url",
        &url(addr),
        "--api-key",
        KEY,
    ]));
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    drop((ws, publisher, limited_sub, limited_pub));

    let out = server.stop();
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    let logs = format!("{}{}", out.stdout, out.stderr);
    assert!(
        logs.contains("listening on"),
        "the logs were captured: {logs}"
    );
    for secret in [
        "SECRETVALUE",
        "ROTATEDSECRET",
        "WRONGGUESS",
        "PUBLISHSECRET",
        "SUBSCRIBESECRET",
    ] {
        assert!(!logs.contains(secret), "{secret} is in the logs:\n{logs}");
    }
}

#[test]
fn a_port_in_use_is_a_start_up_error_naming_the_address() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let port = addr.port().to_string();
    let out = run(&mut binary(&["--host", "127.0.0.1", "--port", &port]));
    assert_eq!(out.code(), Some(2), "{}", out.stderr);
    assert_eq!(
        out.stderr.trim_end().lines().last(),
        Some(format!("pubsubd: cannot listen on {addr}: address already in use").as_str()),
        "{}",
        out.stderr
    );
}

#[test]
fn unprefixed_port_and_host_are_warned_about_and_not_read() {
    // PORT and HOST as a platform (or a port of another implementation) sets
    // them: the server says which variables it reads, and starts where its
    // settings say.
    let mut cmd = binary(&["--host", "127.0.0.1", "--port", "0"]);
    cmd.env("PORT", "1234").env("HOST", "10.9.8.7");
    let server = ServerProcess::spawn(&mut cmd);
    assert_ne!(server.addr.port(), 1234);
    assert_eq!(http(server.addr, "GET", "/health", None).status, 200);
    let out = server.stop();
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    for (plain, ours) in [("PORT", "PUBSUBD_PORT"), ("HOST", "PUBSUBD_HOST")] {
        let expected = format!("{plain} is set but pubsubd does not read it: it reads {ours}");
        assert!(
            out.stderr
                .lines()
                .any(|l| l.contains("WARN") && l.contains(&expected)),
            "no warning about {plain}:\n{}",
            out.stderr
        );
    }

    // Beside PUBSUBD_PORT there is nothing to warn about, and PUBSUBD_PORT wins.
    let mut cmd = binary(&[]);
    cmd.env("PORT", "1234")
        .env("PUBSUBD_PORT", "0")
        .env("PUBSUBD_HOST", "127.0.0.1")
        .env_remove("HOST");
    let server = ServerProcess::spawn(&mut cmd);
    assert_ne!(server.addr.port(), 1234);
    let out = server.stop();
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert!(!out.stderr.contains("does not read it"), "{}", out.stderr);
}
