//! A real `redis-server` for the cluster tests: started on a free loopback
//! port in a directory of its own, killed (SIGKILL, by its PID) and restarted
//! on the same port on demand, and always stopped when dropped, even when the
//! test fails. A missing `redis-server` is a test failure, never a skip.
//! And a proxy in front of it that can hold Redis's answers back, then
//! deliver them and hang up, for what a node does with answers that arrive
//! together with the end of its link.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pubsubd::engine::resp::{self, Decoded, Value};

use super::TIMEOUT;

/// `$REDIS_SERVER`, else `redis-server` on PATH.
fn redis_server_binary() -> String {
    if let Ok(path) = std::env::var("REDIS_SERVER") {
        return path;
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("redis-server"))
            .find(|p| p.is_file())
    });
    match found {
        Some(path) => path.to_string_lossy().into_owned(),
        None => panic!(
            "redis-server is not installed: the cluster tests need a real Redis. \
             Run scripts/test.sh (it installs it on Debian), or `apt-get install redis-server`, \
             or set REDIS_SERVER=/path/to/redis-server"
        ),
    }
}

/// A port nobody listens on right now (bound, read, released).
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

pub struct Redis {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
    args: Vec<String>,
    /// A password the test's own commands authenticate with.
    password: Option<String>,
}

impl Redis {
    /// No persistence: a restart comes back empty.
    pub fn start() -> Redis {
        Redis::start_with(&["--appendonly", "no"])
    }

    /// Append-only file, fsynced on every write: a restart keeps everything.
    pub fn start_persistent() -> Redis {
        Redis::start_with(&["--appendonly", "yes", "--appendfsync", "always"])
    }

    /// With a password every client (pubsubd included) must give.
    pub fn start_with_password(password: &str) -> Redis {
        let mut redis = Redis::start_with(&["--appendonly", "no", "--requirepass", password]);
        redis.password = Some(password.to_string());
        redis
    }

    pub fn start_with(extra: &[&str]) -> Redis {
        Redis::start_at(None, extra)
    }

    /// On `port` when given (one attempt), else on a free port.
    pub fn start_at(port: Option<u16>, extra: &[&str]) -> Redis {
        let binary = redis_server_binary();
        let dir = std::env::temp_dir().join(format!(
            "pubsubd-redis-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).expect("create the Redis directory");
        let mut args: Vec<String> = vec![
            "--bind".into(),
            "127.0.0.1".into(),
            "--save".into(),
            String::new(),
            "--dir".into(),
            dir.to_string_lossy().into_owned(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut redis = Redis {
            child: None,
            port: 0,
            dir,
            args,
            password: None,
        };
        // Another process may take the free port between its release and
        // Redis's bind: try a few.
        let mut last_error = String::new();
        for _ in 0..if port.is_some() { 1 } else { 5 } {
            redis.port = port.unwrap_or_else(free_port);
            match redis.spawn(&binary) {
                Ok(()) => return redis,
                Err(e) => last_error = e,
            }
        }
        panic!("redis-server did not start: {last_error}");
    }

    fn spawn(&mut self, binary: &str) -> Result<(), String> {
        let log = std::fs::File::create(self.log_path()).expect("create the Redis log");
        let child = Command::new(binary)
            .arg("--port")
            .arg(self.port.to_string())
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot run {binary}: {e}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(reply) = self.try_command(&["PING"]) {
                // Up once it answers anything but "still loading the data".
                if !reply.starts_with("-LOADING") {
                    return Ok(());
                }
            }
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                self.child = None;
                return Err(format!("exited with {status}: {}", self.log()));
            }
            if Instant::now() > deadline {
                self.kill();
                return Err(format!("not answering after {TIMEOUT:?}: {}", self.log()));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("redis.log")
    }

    /// What Redis logged (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// `redis://127.0.0.1:PORT` (no password).
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL: no shutdown, no final save.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts Redis again on the same port and directory (so with
    /// persistence it reads its append-only file back).
    pub fn restart(&mut self) {
        assert!(
            self.child.is_none(),
            "restart a Redis that is still running"
        );
        let binary = redis_server_binary();
        let mut last_error = String::new();
        // The port was ours a moment ago; only a race with another process
        // could take it, and then the test cannot go on anyway.
        for _ in 0..3 {
            match self.spawn(&binary) {
                Ok(()) => return,
                Err(e) => last_error = e,
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "redis-server did not restart on port {}: {last_error}",
            self.port
        );
    }

    /// One command on a fresh connection; the reply in RESP-ish text
    /// (`+OK`, `-ERR …`, `:3`, `$value`, `*[…]`). Panics when Redis does not answer.
    pub fn command(&self, args: &[&str]) -> String {
        self.try_command(args)
            .unwrap_or_else(|| panic!("redis did not answer {args:?}"))
    }

    /// Several commands pipelined in one write on one connection, then
    /// every reply: nothing else runs between them unless Redis interleaves
    /// other clients, and no pub/sub client is served a reply in between.
    pub fn pipeline(&self, commands: &[Vec<Vec<u8>>]) -> Vec<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to redis");
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut out = Vec::new();
        let mut expected = commands.len();
        if let Some(pw) = &self.password {
            resp::command(&mut out, &[b"AUTH", pw.as_bytes()]);
            expected += 1;
        }
        for c in commands {
            let args: Vec<&[u8]> = c.iter().map(Vec::as_slice).collect();
            resp::command(&mut out, &args);
        }
        s.write_all(&out).expect("write to redis");
        let mut replies = read_replies(&mut s, expected).expect("redis replies");
        if self.password.is_some() {
            replies.remove(0);
        }
        replies
    }

    fn try_command(&self, args: &[&str]) -> Option<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(TIMEOUT)).ok()?;
        let mut out = Vec::new();
        let mut expected = 1;
        if let Some(pw) = &self.password {
            resp::command(&mut out, &[b"AUTH", pw.as_bytes()]);
            expected += 1;
        }
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        resp::command(&mut out, &args);
        s.write_all(&out).ok()?;
        read_replies(&mut s, expected)?.pop()
    }
}

fn read_replies(s: &mut TcpStream, n: usize) -> Option<Vec<String>> {
    let mut buf = Vec::new();
    let mut replies = Vec::new();
    let mut chunk = [0u8; 16384];
    while replies.len() < n {
        match resp::decode(&buf) {
            Decoded::Value(v, used) => {
                buf.drain(..used);
                replies.push(text(&v));
            }
            Decoded::Partial => match s.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(k) => buf.extend_from_slice(&chunk[..k]),
            },
            Decoded::Invalid(why) => panic!("redis sent bad RESP: {why}"),
        }
    }
    Some(replies)
}

fn text(v: &Value) -> String {
    match v {
        Value::Error(e) => format!("-{e}"),
        _ => {
            if let Some(n) = v.as_int() {
                return format!(":{n}");
            }
            if let Some(b) = v.as_bytes() {
                return format!("${}", String::from_utf8_lossy(b));
            }
            let items: Vec<String> = v.items().iter().map(text).collect();
            format!("*[{}]", items.join(","))
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A TCP proxy in front of a Redis that can hold back Redis's side (what
/// Redis sends waits in the proxy while the nodes' requests still reach
/// it), then hand it all over and hang up every link at once: a Redis that
/// answered and went away before the node read the answers.
pub struct Proxy {
    pub port: u16,
    mode: Arc<AtomicU8>,
    /// Everything held back since `hold`.
    held: Arc<Mutex<Vec<u8>>>,
    thread: Option<JoinHandle<()>>,
}

const FORWARD: u8 = 0;
const HOLD: u8 = 1;
const CUT: u8 = 2;
const STOP: u8 = 3;

/// One node connection through the proxy, and what Redis sent it that is held back.
struct Pair {
    node: TcpStream,
    redis: TcpStream,
    held: Vec<u8>,
}

/// Everything the socket has now; `None` at its end.
fn read_now(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let mut chunk = [0u8; 16384];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => return None,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Some(got),
            Err(_) => return None,
        }
    }
}

fn write_blocking(s: &mut TcpStream, data: &[u8]) -> bool {
    data.is_empty()
        || (s.set_nonblocking(false).is_ok()
            && s.write_all(data).is_ok()
            && s.set_nonblocking(true).is_ok())
}

impl Proxy {
    pub fn start(redis: &Redis) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let target = redis.port;
        let mode = Arc::new(AtomicU8::new(FORWARD));
        let shared = mode.clone();
        let held = Arc::new(Mutex::new(Vec::new()));
        let held_log = held.clone();
        let thread = std::thread::spawn(move || {
            let mut pairs: Vec<Pair> = Vec::new();
            loop {
                while let Ok((node, _)) = listener.accept() {
                    let Ok(redis) = TcpStream::connect(("127.0.0.1", target)) else {
                        continue;
                    };
                    for s in [&node, &redis] {
                        s.set_nonblocking(true).unwrap();
                        s.set_nodelay(true).unwrap();
                    }
                    pairs.push(Pair {
                        node,
                        redis,
                        held: Vec::new(),
                    });
                }
                match shared.load(Ordering::Acquire) {
                    STOP => return,
                    CUT => {
                        // Every held answer is delivered before any link
                        // closes; the last opened (a node's subscribe link)
                        // closes first.
                        for p in &mut pairs {
                            let held = std::mem::take(&mut p.held);
                            write_blocking(&mut p.node, &held);
                        }
                        for p in pairs.drain(..).rev() {
                            let _ = p.node.shutdown(std::net::Shutdown::Both);
                        }
                        shared.store(FORWARD, Ordering::Release);
                        continue;
                    }
                    _ => {}
                }
                let hold = shared.load(Ordering::Acquire) == HOLD;
                pairs.retain_mut(|p| {
                    let Some(up) = read_now(&mut p.node) else {
                        return false;
                    };
                    let Some(down) = read_now(&mut p.redis) else {
                        return false;
                    };
                    p.held.extend_from_slice(&down);
                    if hold {
                        held_log.lock().unwrap().extend_from_slice(&down);
                    }
                    let delivered =
                        hold || write_blocking(&mut p.node, &std::mem::take(&mut p.held));
                    write_blocking(&mut p.redis, &up) && delivered
                });
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        Proxy {
            port,
            mode,
            held,
            thread: Some(thread),
        }
    }

    /// `redis://127.0.0.1:PORT` of the proxy.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// From now on what Redis sends waits in the proxy.
    pub fn hold(&self) {
        self.held.lock().unwrap().clear();
        self.mode.store(HOLD, Ordering::Release);
    }

    /// Waits until what the proxy holds back contains `what`.
    pub fn wait_held(&self, what: &[u8]) {
        super::wait_until(&format!("the proxy to hold {what:?}"), || {
            self.held
                .lock()
                .unwrap()
                .windows(what.len())
                .any(|w| w == what)
        });
    }

    /// Hands over what was held, then closes every link (and forwards again
    /// for the links that come next).
    pub fn cut(&self) {
        self.mode.store(CUT, Ordering::Release);
        super::wait_until("the proxy to cut its links", || {
            self.mode.load(Ordering::Acquire) == FORWARD
        });
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.mode.store(STOP, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
