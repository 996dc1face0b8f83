//! `pubsubd sub --since/--epoch/--follow` as a user runs it: the built binary
//! against a server, through a proxy the test can cut, and across a server
//! that is killed and started again on the same port.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};

use std::time::Duration;

use common::extra::{Publisher, assert_exactly_once, publish_numbered};
use common::{CHILD_TIMEOUT, ServerProcess, Ws, binary, create_topic, http, run, start_with};
use serde_json::{Value, json};

/// Lines of a child's pipe, on a channel.
fn lines_of(pipe: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// A running `pubsubd sub`: its stdout and stderr lines. Dropping it kills it.
struct Sub {
    child: Child,
    stdout: Receiver<String>,
    stderr: Receiver<String>,
}

impl Sub {
    fn spawn(url: &str, args: &[&str]) -> Sub {
        let mut cmd: Command = binary(&["sub", "--url", url]);
        let mut child = cmd.args(args).spawn().expect("spawn sub");
        let stdout = lines_of(child.stdout.take().expect("piped stdout"));
        let stderr = lines_of(child.stderr.take().expect("piped stderr"));
        Sub {
            child,
            stdout,
            stderr,
        }
    }

    /// The next event line: its seq and its payload's `n`.
    fn next_event(&self) -> (u64, Value) {
        let line = self
            .stdout
            .recv_timeout(CHILD_TIMEOUT)
            .expect("an event line from sub");
        let event: Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert_eq!(event["type"], "event", "{line}");
        let seq = event["seq"]
            .as_u64()
            .unwrap_or_else(|| panic!("no seq: {line}"));
        (seq, event["message"]["payload"].clone())
    }

    /// The next stderr line that contains `needle`.
    fn note(&self, needle: &str) -> String {
        loop {
            let line = self
                .stderr
                .recv_timeout(CHILD_TIMEOUT)
                .unwrap_or_else(|_| panic!("no note with {needle:?} on stderr"));
            if line.contains(needle) {
                return line;
            }
        }
    }
}

impl Drop for Sub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn epoch_of(addr: SocketAddr, topic: &str) -> String {
    let detail = http(addr, "GET", &format!("/topics/{topic}"), None).json();
    detail["epoch"]
        .as_str()
        .unwrap_or_else(|| panic!("no epoch: {detail}"))
        .to_string()
}

#[test]
fn sub_since_prints_the_missed_events_and_says_whether_that_is_all() {
    let server = start_with(|c| c.history = 4);
    let url = format!("http://{}", server.addr);
    create_topic(server.addr, "t");
    let mut publisher = Ws::connect(server.addr);
    publish_numbered(&mut publisher, "t", 1..=6);
    let epoch = epoch_of(server.addr, "t");

    // After 3, inside the history (3..=6 kept): 4, 5, 6, then live.
    let sub = Sub::spawn(&url, &["t", "--since", "3", "--epoch", &epoch]);
    let note = sub.note("resumed");
    assert!(
        note.contains(&format!("after seq 3 in epoch {epoch}")) && note.contains("recovered: true"),
        "{note}"
    );
    for n in 4..=6 {
        assert_eq!(sub.next_event(), (n, json!({ "n": n })));
    }
    publish_numbered(&mut publisher, "t", 7..=7);
    assert_eq!(sub.next_event(), (7, json!({"n":7})));
    drop(sub);

    // After 1: 2 is no longer kept, and stderr says so.
    let sub = Sub::spawn(&url, &["t", "--since", "1"]);
    assert!(sub.note("resumed").contains("recovered: false"));
    for n in 4..=7 {
        assert_eq!(sub.next_event().0, n);
    }
    drop(sub);

    // Another epoch's seq: the topic from the start of this one (what is kept of it).
    let sub = Sub::spawn(&url, &["t", "--since", "5", "--epoch", "0badc0de"]);
    let note = sub.note("resumed");
    assert!(
        note.contains(&format!("from the start of epoch {epoch}"))
            && note.contains("recovered: false"),
        "{note}"
    );
    for n in 4..=7 {
        assert_eq!(sub.next_event().0, n);
    }
    drop(sub);

    // Usage errors name the flags.
    for args in [
        &["t", "--since", "1", "--last-n", "1"][..],
        &["t", "--epoch", &epoch],
    ] {
        let out = run(binary(&["sub", "--url", &url]).args(args));
        assert_eq!(out.code(), Some(2), "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains("--since"), "{}", out.stderr);
    }
}

/// A TCP proxy in front of the server whose connections the test can cut, as
/// a network does: the client and the server each see their socket die.
struct Proxy {
    addr: SocketAddr,
    links: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let links = Arc::new(Mutex::new(Vec::new()));
        let held = links.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(target) else {
                    continue;
                };
                let ends = [&client, &server].map(|s| s.try_clone().expect("clone"));
                held.lock().expect("links").extend(ends);
                for (mut from, mut to) in [
                    (
                        client.try_clone().expect("clone"),
                        server.try_clone().expect("clone"),
                    ),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(Shutdown::Write);
                    });
                }
            }
        });
        Proxy { addr, links }
    }

    /// Kills every connection through the proxy; new ones still go through.
    fn cut(&self) {
        for stream in self.links.lock().expect("links").drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

#[test]
fn sub_follow_resumes_after_a_cut_connection_without_loss() {
    let server = start_with(|c| c.history = 50_000);
    create_topic(server.addr, "feed");
    let proxy = Proxy::start(server.addr);
    let sub = Sub::spawn(&format!("http://{}", proxy.addr), &["feed", "--follow"]);
    let epoch = epoch_of(server.addr, "feed");
    assert!(sub.note("subscribed to 'feed' at seq 0").contains(&epoch));
    // A steady stream, so that it goes on through every reconnect.
    let publisher = Publisher::start(server.addr, "feed", 50_000, Duration::from_micros(200));

    let mut seen = Vec::new();
    let read_until = |seq: u64, seen: &mut Vec<u64>| {
        while seen.last().copied().unwrap_or(0) < seq {
            let (got, payload) = sub.next_event();
            assert_eq!(payload["n"], got);
            seen.push(got);
        }
    };
    for cut in 1..=3 {
        read_until(seen.last().copied().unwrap_or(0) + 100, &mut seen);
        proxy.cut();
        let before = publisher.published();
        assert!(sub.note("reconnecting").contains("lost"), "cut {cut}");
        let note = sub.note("reconnected");
        assert!(
            note.contains("resumed 'feed' after seq") && note.contains("recovered: true"),
            "cut {cut}: {note}"
        );
        assert!(
            publisher.published() > before,
            "the publisher went on during cut {cut}"
        );
    }
    let published = publisher.finish();
    read_until(published, &mut seen);
    assert_exactly_once(&seen, published);
    assert!(
        sub.stdout.try_recv().is_err(),
        "nothing after the last event"
    );
}

#[test]
fn sub_follow_outlives_a_server_killed_and_started_again_on_the_same_port() {
    let first = ServerProcess::start(&[]);
    let addr = first.addr;
    let url = format!("http://{addr}");
    create_topic(addr, "t");
    let sub = Sub::spawn(&url, &["t", "--follow"]);
    let old_epoch = epoch_of(addr, "t");
    assert!(sub.note("subscribed to 't'").contains(&old_epoch));
    let mut publisher = Ws::connect(addr);
    publish_numbered(&mut publisher, "t", 1..=3);
    for n in 1..=3 {
        assert_eq!(sub.next_event().0, n);
    }

    // SIGKILL: no goodbye to anyone. The listener's port is free again at once
    // (SO_REUSEADDR), so a new server can take it.
    drop(first);
    drop(publisher);
    assert!(sub.note("reconnecting").contains("lost"));
    let port = addr.port().to_string();
    let second = ServerProcess::spawn(&mut binary(&["--host", "127.0.0.1", "--port", &port]));
    assert_eq!(second.addr, addr);
    create_topic(addr, "t");
    let new_epoch = epoch_of(addr, "t");
    assert_ne!(new_epoch, old_epoch);
    let mut publisher = Ws::connect(addr);
    publish_numbered(&mut publisher, "t", 1..=2);

    // The memory went with the old server: the topic restarted at seq 1 in a
    // new epoch, and the CLI says so and prints it from its start.
    let note = sub.note("reconnected");
    assert!(
        note.contains(&format!("from the start of epoch {new_epoch}"))
            && note.contains("recovered: true"),
        "{note}"
    );
    assert_eq!(sub.next_event(), (1, json!({"n":1})));
    assert_eq!(sub.next_event(), (2, json!({"n":2})));

    // A graceful shutdown (close 1001) is one more restart to wait out.
    drop(publisher);
    let out = second.stop();
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    sub.note("the server is shutting down");
    assert!(sub.note("reconnecting").contains("1001"));
}
