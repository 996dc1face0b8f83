//! The shell client (`pubsubd sub|pub|topics|stats|healthcheck`) against a
//! live in-process server, run as the real binary.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(10);

fn start(api_keys: &[&str]) -> pubsubd::ServerHandle {
    let config = pubsubd::Config {
        host: [127, 0, 0, 1].into(),
        port: 0,
        api_keys: api_keys.iter().map(|k| k.to_string()).collect(),
        ..Default::default()
    };
    pubsubd::start(config).expect("server starts")
}

fn url(addr: SocketAddr) -> String {
    format!("http://{addr}")
}

/// The client binary with a clean environment: only what the test passes.
fn cli(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pubsubd"));
    cmd.args(args)
        .env_remove("PUBSUBD_URL")
        .env_remove("PUBSUBD_API_KEY")
        .env_remove("PUBSUBD_HOST")
        .env_remove("PUBSUBD_PORT")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

struct Output {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Output {
    fn code(&self) -> Option<i32> {
        self.status.code()
    }
}

/// Waits for a child with a deadline; kills it (by its handle) if it overruns.
fn wait(mut child: Child) -> Output {
    let deadline = Instant::now() + TIMEOUT;
    // `Sub` has taken stdout already; its lines went to the test.
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let out = std::thread::spawn(move || read_all(stdout));
    let err = std::thread::spawn(move || read_all(stderr));
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("client did not exit within {TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Output {
        status,
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    }
}

fn read_all(pipe: Option<impl Read>) -> String {
    let mut s = String::new();
    if let Some(mut pipe) = pipe {
        let _ = pipe.read_to_string(&mut s);
    }
    s
}

fn run(cmd: &mut Command) -> Output {
    wait(cmd.spawn().expect("spawn client"))
}

fn run_with_stdin(cmd: &mut Command, input: &str) -> Output {
    let mut child = cmd.stdin(Stdio::piped()).spawn().expect("spawn client");
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin.write_all(input.as_bytes()).expect("write stdin");
    drop(stdin);
    wait(child)
}

/// A GET with a plain socket, independent of the client under test.
fn get_json(addr: SocketAddr, path: &str) -> Value {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut response = String::new();
    s.read_to_string(&mut response).expect("read");
    let (_, body) = response.split_once("\r\n\r\n").expect("a full response");
    serde_json::from_str(body).expect("JSON body")
}

fn subscribers(addr: SocketAddr, topic: &str) -> u64 {
    let topics = get_json(addr, "/topics");
    topics["topics"]
        .as_array()
        .expect("topics list")
        .iter()
        .find(|t| t["name"] == topic)
        .and_then(|t| t["subscribers"].as_u64())
        .unwrap_or(0)
}

fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
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
            .recv_timeout(TIMEOUT)
            .expect("an event line from sub");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    }

    fn finish(mut self) -> Output {
        wait(self.child.take().expect("running sub"))
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
    let out = run(&mut cli(&["topics", "create", topic, "--url", &url(addr)]));
    assert_eq!(out.code(), Some(0), "create {topic}: {}", out.stderr);
}

/// Starts `sub` and returns once the server counts its subscription.
fn subscribe(addr: SocketAddr, topic: &str, extra: &[&str]) -> Sub {
    let before = subscribers(addr, topic);
    let mut args = vec!["sub", topic, "--url"];
    let u = url(addr);
    args.push(&u);
    args.extend_from_slice(extra);
    let sub = Sub::spawn(cli(&args));
    wait_until("the subscription", || subscribers(addr, topic) > before);
    sub
}

#[test]
fn topics_create_list_delete() {
    let server = start(&[]);
    let u = url(server.local_addr());

    let out = run(&mut cli(&["topics", "create", "orders", "--url", &u]));
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert_eq!(out.stdout.trim(), "created topic 'orders'");
    // Flags before the arguments; a name that needs percent-encoding.
    let out = run(&mut cli(&["topics", "--url", &u, "create", "a:b.c_d-e"]));
    assert_eq!(out.code(), Some(0), "{}", out.stderr);

    let out = run(&mut cli(&["topics", "create", "orders", "--url", &u]));
    assert_eq!(out.code(), Some(1));
    assert!(
        out.stderr.contains("409") && out.stderr.contains("topic already exists"),
        "{}",
        out.stderr
    );

    let out = run(&mut cli(&["topics", "--url", &u]));
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert_eq!(out.stdout, "a:b.c_d-e\t0\norders\t0\n");
    let out = run(&mut cli(&["topics", "--json", "--url", &u]));
    let json: Value = serde_json::from_str(&out.stdout).expect("--json prints JSON");
    assert_eq!(json["topics"].as_array().map(Vec::len), Some(2));

    let out = run(&mut cli(&["topics", "delete", "--url", &u, "a:b.c_d-e"]));
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert_eq!(out.stdout.trim(), "deleted topic 'a:b.c_d-e'");
    let out = run(&mut cli(&["topics", "delete", "a:b.c_d-e", "--url", &u]));
    assert_eq!(out.code(), Some(1));
    assert!(
        out.stderr.contains("404") && out.stderr.contains("topic not found"),
        "{}",
        out.stderr
    );

    let out = run(&mut cli(&["topics", "create", "bad name", "--url", &u]));
    assert_eq!(out.code(), Some(1));
    assert!(out.stderr.contains("400"), "{}", out.stderr);
    let out = run(&mut cli(&["topics", "--url", &u]));
    assert_eq!(out.stdout, "orders\t0\n");
}

#[test]
fn publish_to_a_missing_topic_fails_with_the_servers_reason() {
    let server = start(&[]);
    let u = url(server.local_addr());
    let out = run(&mut cli(&["pub", "nope", r#"{"a":1}"#, "--url", &u]));
    assert_eq!(out.code(), Some(1));
    assert!(
        out.stderr
            .contains("publish to 'nope' failed: TOPIC_NOT_FOUND"),
        "{}",
        out.stderr
    );
    let out = run(&mut cli(&["sub", "nope", "--url", &u]));
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
    let u = url(server.local_addr());
    create(server.local_addr(), "t");
    let out = run(&mut cli(&["pub", "t", "hello", "--url", &u]));
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
        let out = run(&mut cli(args));
        assert_eq!(out.code(), Some(2), "{args:?}: {}", out.stderr);
        assert!(out.stderr.starts_with("pubsubd: "), "{}", out.stderr);
    }
    let out = run(&mut cli(&["pub", "--help"]));
    assert_eq!(out.code(), Some(0));
    assert!(out.stdout.contains("pubsubd pub TOPIC [JSON]"));
    assert!(out.stdout.contains("--api-key"));
}

#[test]
fn sub_prints_what_pub_publishes() {
    let server = start(&[]);
    let addr = server.local_addr();
    let u = url(addr);
    create(addr, "orders");
    create(addr, "other");
    let sub = subscribe(addr, "orders", &[]);

    let out = run(&mut cli(&[
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
    let out = run(&mut cli(&["pub", "other", "0", "--url", &u]));
    assert_eq!(out.code(), Some(0), "{}", out.stderr);

    // One message per stdin line, empty lines skipped, in order.
    let out = run_with_stdin(
        &mut cli(&["pub", "orders", "--url", &u]),
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
    let out = run_with_stdin(&mut cli(&["pub", "orders", "--url", &u]), &input);
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    for i in 0..500 {
        assert_eq!(sub.next_event()["message"]["payload"]["i"], i);
    }

    // A bad line stops the publisher after the good ones before it.
    let out = run_with_stdin(
        &mut cli(&["pub", "orders", "--url", &u]),
        "7\nnot json\n8\n",
    );
    assert_eq!(out.code(), Some(2));
    assert!(out.stderr.contains("stdin line 2"), "{}", out.stderr);
    assert_eq!(sub.next_event()["message"]["payload"], 7);

    let stats = run(&mut cli(&["stats", "--url", &u]));
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
    let addr = server.local_addr();
    let u = url(addr);
    create(addr, "t");
    let out = run_with_stdin(&mut cli(&["pub", "t", "--url", &u]), "1\n2\n3\n");
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    let sub = subscribe(addr, "t", &["--last-n", "2", "--client-id", "replayer"]);
    assert_eq!(sub.next_event()["message"]["payload"], 2);
    assert_eq!(sub.next_event()["message"]["payload"], 3);

    let out = run(&mut cli(&["topics", "delete", "t", "--url", &u]));
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
    let addr = server.local_addr();
    create(addr, "t");
    let sub = subscribe(addr, "t", &[]);
    server.shutdown().expect("graceful shutdown");
    let out = sub.finish();
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert!(out.stderr.contains("shutting down"), "{}", out.stderr);
}

#[test]
fn healthcheck_exit_codes() {
    let server = start(&[]);
    let addr = server.local_addr();
    let out = run(&mut cli(&["healthcheck", "--url", &url(addr)]));
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    let health: Value = serde_json::from_str(&out.stdout).expect("health JSON");
    assert!(health["uptime_sec"].is_u64());

    // As in the container: no URL, the server's own PUBSUBD_HOST/PUBSUBD_PORT.
    let port = addr.port().to_string();
    let out = run(cli(&["healthcheck"])
        .env("PUBSUBD_HOST", "0.0.0.0")
        .env("PUBSUBD_PORT", &port));
    assert_eq!(out.code(), Some(0), "{}", out.stderr);

    let dead = {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr")
    };
    let out = run(&mut cli(&["healthcheck", "--url", &url(dead)]));
    assert_eq!(out.code(), Some(1));
    assert!(out.stderr.contains("cannot reach"), "{}", out.stderr);
    let out = run(cli(&["healthcheck"]).env("PUBSUBD_PORT", dead.port().to_string()));
    assert_eq!(out.code(), Some(1));

    // A server that accepts but never answers: unhealthy within the timeout.
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let started = Instant::now();
    let silent_url = url(silent.local_addr().expect("addr"));
    let out = run(&mut cli(&[
        "healthcheck",
        "--url",
        &silent_url,
        "--timeout",
        "0.3",
    ]));
    assert_eq!(out.code(), Some(1));
    assert!(started.elapsed() < Duration::from_secs(5));

    // Never 2, which Docker reserves, even for a usage error.
    let out = run(&mut cli(&["healthcheck", "--bogus"]));
    assert_eq!(out.code(), Some(1));
}

#[test]
fn api_key_is_sent_on_rest_and_websocket() {
    let server = start(&["k1", "k2"]);
    let addr = server.local_addr();
    let u = url(addr);

    let out = run(&mut cli(&["topics", "create", "t", "--url", &u]));
    assert_eq!(out.code(), Some(1));
    assert!(out.stderr.contains("401"), "{}", out.stderr);
    let out = run(&mut cli(&[
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
    let out = run(cli(&["topics"])
        .env("PUBSUBD_URL", &u)
        .env("PUBSUBD_API_KEY", "k1,k2"));
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert_eq!(out.stdout, "t\t0\n");

    let out = run(&mut cli(&["pub", "t", "1", "--url", &u]));
    assert_eq!(out.code(), Some(1));
    assert!(
        out.stderr.contains("refused the WebSocket") && out.stderr.contains("401"),
        "{}",
        out.stderr
    );

    let sub = Sub::spawn({
        let mut c = cli(&["sub", "t", "--url", &u]);
        c.env("PUBSUBD_API_KEY", "k1");
        c
    });
    let keyed = |addr| {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(TIMEOUT)).expect("timeout");
        write!(
            s,
            "GET /topics HTTP/1.1\r\nHost: x\r\nX-API-Key: k1\r\nConnection: close\r\n\r\n"
        )
        .expect("write");
        let mut r = String::new();
        s.read_to_string(&mut r).expect("read");
        r.contains(r#""subscribers":1"#)
    };
    wait_until("the keyed subscription", || keyed(addr));
    let out = run(&mut cli(&[
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

    let out = run(&mut cli(&["healthcheck", "--url", &u]));
    assert_eq!(out.code(), Some(0), "/health needs no key: {}", out.stderr);
    let out = run(&mut cli(&["stats", "--url", &u, "--api-key", "wrong"]));
    assert_eq!(out.code(), Some(1));
    assert!(out.stderr.contains("unauthorized"), "{}", out.stderr);
}

#[test]
fn idle_sub_and_pub_answer_heartbeats_and_stay_connected() {
    let config = pubsubd::Config {
        host: [127, 0, 0, 1].into(),
        port: 0,
        heartbeat: Duration::from_millis(100),
        idle_timeout: Duration::from_millis(300),
        ..Default::default()
    };
    let server = pubsubd::start(config).expect("server starts");
    let addr = server.local_addr();
    let u = url(addr);
    create(addr, "t");
    let sub = subscribe(addr, "t", &[]);
    let mut publisher = cli(&["pub", "t", "--url", &u])
        .stdin(Stdio::piped())
        .spawn()
        .expect("spawn pub");
    let mut stdin = publisher.stdin.take().expect("piped stdin");
    writeln!(stdin, "1").expect("write stdin");
    assert_eq!(sub.next_event()["message"]["payload"], 1);

    // Time passing is the point here: several heartbeats and idle timeouts.
    std::thread::sleep(Duration::from_millis(1200));

    writeln!(stdin, "2").expect("write stdin");
    drop(stdin);
    assert_eq!(sub.next_event()["message"]["payload"], 2);
    let out = wait(publisher);
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert_eq!(
        subscribers(addr, "t"),
        1,
        "the idle subscriber is still there"
    );
}
