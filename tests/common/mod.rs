//! Helpers for integration tests: an in-process server on 127.0.0.1:0, a raw
//! HTTP/1.1 client, a WebSocket client with short timeouts, and the built
//! binary run as a client or as a server.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pubsubd::io::Io;
use pubsubd::wire::response::{self, Context};
use pubsubd::{Config, ServerHandle};
use serde_json::{Value, json};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, WebSocket};

/// Reads never wait longer than this, so a broken server fails a test instead of hanging it.
pub const TIMEOUT: Duration = Duration::from_secs(5);

pub struct Server {
    pub handle: ServerHandle,
    pub addr: SocketAddr,
}

pub fn start() -> Server {
    start_with(|_| {})
}

pub fn start_with(tweak: impl FnOnce(&mut Config)) -> Server {
    let mut config = Config {
        host: [127, 0, 0, 1].into(),
        port: 0,
        ..Config::default()
    };
    tweak(&mut config);
    let handle = pubsubd::start(config).expect("server starts");
    let addr = handle.local_addr();
    Server { handle, addr }
}

/// Waits for `cond` to hold, polling every 5 ms, for at most `TIMEOUT`.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

pub fn uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

// ---- HTTP ----

/// A response as the tests look at it.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl From<response::Response> for Response {
    fn from(r: response::Response) -> Response {
        Response {
            status: r.status,
            headers: r.headers,
            body: r.body,
        }
    }
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        response::header(&self.headers, name)
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// One HTTP/1.1 connection, kept alive across requests.
pub struct Http {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Http {
    pub fn connect(addr: SocketAddr) -> Http {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        Http {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write request");
    }

    /// Sends one request with optional extra header lines (each ending in \r\n).
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &str,
        body: Option<&str>,
    ) -> Response {
        let body = body.unwrap_or("");
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: test\r\n{headers}Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.send(req.as_bytes());
        self.read_response()
    }

    /// Reads one response, by the reader the CLI and the bench use.
    pub fn read_response(&mut self) -> Response {
        let mut context = Context::default();
        loop {
            let parsed = response::parse(&self.buf, context)
                .unwrap_or_else(|e| panic!("{e}; got {:?}", String::from_utf8_lossy(&self.buf)));
            if let Some((resp, used)) = parsed {
                self.buf.drain(..used);
                return resp.into();
            }
            let mut chunk = [0u8; 16384];
            match pubsubd::io::read(&mut self.stream, &mut chunk) {
                Io::Progress(n) => self.buf.extend_from_slice(&chunk[..n]),
                Io::Closed => context.ended = true,
                Io::WouldBlock => panic!("no response within {TIMEOUT:?}"),
                Io::Failed(e) => panic!("read response: {e}"),
            }
        }
    }

    /// Whether the server closed the connection (EOF or reset) within the timeout.
    pub fn closed_by_server(&mut self) -> bool {
        let mut chunk = [0u8; 1024];
        loop {
            match pubsubd::io::read(&mut self.stream, &mut chunk) {
                Io::Closed => return true,
                Io::Progress(_) => continue,
                Io::WouldBlock | Io::Failed(_) => return false,
            }
        }
    }
}

/// One request on a fresh connection.
pub fn http(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> Response {
    Http::connect(addr).request(method, path, "", body)
}

pub fn create_topic(addr: SocketAddr, name: &str) {
    let resp = http(
        addr,
        "POST",
        "/topics",
        Some(&json!({ "name": name }).to_string()),
    );
    assert_eq!(resp.status, 201, "create {name}: {:?}", resp.json());
}

pub fn health(addr: SocketAddr) -> Value {
    http(addr, "GET", "/health", None).json()
}

pub fn stats(addr: SocketAddr) -> Value {
    http(addr, "GET", "/stats", None).json()
}

// ---- WebSocket ----

pub struct Ws {
    pub ws: WebSocket<TcpStream>,
}

impl Ws {
    pub fn connect(addr: SocketAddr) -> Ws {
        Ws::connect_path(addr, "/ws", &[]).expect("WebSocket handshake")
    }

    /// A client whose kernel receive buffer is tiny, so that not reading
    /// stalls it after a few KiB instead of megabytes.
    pub fn connect_stalling(addr: SocketAddr) -> Ws {
        Ws::handshake(addr, small_window_stream(addr), "/ws", &[]).expect("WebSocket handshake")
    }

    pub fn connect_path(
        addr: SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<Ws, tungstenite::Error> {
        let stream = TcpStream::connect(addr).expect("connect");
        Ws::handshake(addr, stream, path, headers)
    }

    fn handshake(
        addr: SocketAddr,
        stream: TcpStream,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<Ws, tungstenite::Error> {
        use tungstenite::client::IntoClientRequest;
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        let mut req = format!("ws://{addr}{path}").into_client_request()?;
        for (name, value) in headers {
            req.headers_mut().insert(
                tungstenite::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        let (ws, _) = tungstenite::client::client(req, stream).map_err(|e| match e {
            tungstenite::HandshakeError::Failure(e) => e,
            tungstenite::HandshakeError::Interrupted(_) => {
                tungstenite::Error::Io(std::io::ErrorKind::WouldBlock.into())
            }
        })?;
        Ok(Ws { ws })
    }

    pub fn send(&mut self, msg: Value) {
        self.send_text(&msg.to_string());
    }

    pub fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).expect("send");
    }

    /// The next server message as JSON (control frames are skipped).
    pub fn recv(&mut self) -> Value {
        loop {
            match self.ws.read().expect("read a server message") {
                Message::Text(t) => {
                    let v: Value = serde_json::from_str(t.as_str()).expect("server sent JSON");
                    check_ts(&v);
                    return v;
                }
                Message::Close(frame) => panic!("connection closed: {frame:?}"),
                _ => continue,
            }
        }
    }

    /// The next message that is not a heartbeat.
    pub fn recv_skip_heartbeat(&mut self) -> Value {
        loop {
            let v = self.recv();
            if !(v["type"] == "info" && v["msg"] == "ping") {
                return v;
            }
        }
    }

    /// Reads until the server closes; returns the close code it sent, if any.
    pub fn expect_close(&mut self) -> Option<CloseCode> {
        loop {
            match self.ws.read() {
                Ok(Message::Close(frame)) => return frame.map(|f| f.code),
                Ok(_) => continue,
                Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                    return None;
                }
                Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    panic!("server did not close within {TIMEOUT:?}")
                }
                Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::TimedOut => {
                    panic!("server did not close within {TIMEOUT:?}")
                }
                Err(_) => return None,
            }
        }
    }

    /// Subscribes and returns the ack.
    pub fn subscribe(&mut self, topic: &str, client_id: &str, last_n: u64) -> Value {
        self.send(json!({"type":"subscribe","topic":topic,"client_id":client_id,"last_n":last_n,"request_id":"sub"}));
        let ack = self.recv();
        assert_eq!(ack["type"], "ack", "subscribe to {topic}: {ack}");
        ack
    }

    /// Publishes a payload and returns the answer.
    pub fn publish(&mut self, topic: &str, payload: Value) -> Value {
        self.send(json!({"type":"publish","topic":topic,"message":{"id":uuid(),"payload":payload},"request_id":"pub"}));
        self.recv()
    }

    /// A ping round trip: proves the connection is open and everything before it was answered.
    pub fn ping(&mut self) {
        self.send(json!({"type":"ping","request_id":"alive"}));
        let pong = self.recv_skip_heartbeat();
        assert_eq!(pong["type"], "pong", "{pong}");
        assert_eq!(pong["request_id"], "alive");
    }
}

/// A TCP connection whose receive buffer is set to 4 KiB before connecting
/// (afterwards is too late: the window is agreed in the handshake).
pub fn small_window_stream(addr: SocketAddr) -> TcpStream {
    extra::small_buffers_stream(addr, 4096, 0)
}

/// Every server message carries an RFC 3339 UTC stamp with milliseconds.
pub fn check_ts(v: &Value) {
    let ts = v["ts"].as_str().unwrap_or_else(|| panic!("no ts in {v}"));
    let b = ts.as_bytes();
    let shape_ok = b.len() == 24
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'.',
            23 => *c == b'Z',
            _ => c.is_ascii_digit(),
        });
    assert!(shape_ok, "ts {ts:?} is not RFC 3339 UTC with milliseconds");
}

// ---- the built binary ----

/// Time a child process may take before a test gives up on it and kills it.
pub const CHILD_TIMEOUT: Duration = Duration::from_secs(10);

/// The pubsubd binary with no `PUBSUBD_*` variable of the test's environment:
/// only what the test passes.
pub fn binary(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pubsubd"));
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("PUBSUBD_") {
            cmd.env_remove(name);
        }
    }
    cmd
}

/// How a child process ended, and what it printed.
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }
}

/// Waits for a child for at most `CHILD_TIMEOUT`; kills it (by its handle) if
/// it overruns. Pipes already taken from the child read as empty.
pub fn wait_child(child: Child) -> Output {
    wait_child_within(child, CHILD_TIMEOUT)
}

/// Waits for a child for at most `limit`; kills it (by its handle) if it overruns.
pub fn wait_child_within(mut child: Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    let out = read_all_later(child.stdout.take());
    let err = read_all_later(child.stderr.take());
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("child did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Output {
        status,
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    }
}

/// Reads a pipe to its end on a thread of its own.
fn read_all_later(pipe: Option<impl Read + Send + 'static>) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_string(&mut s);
        }
        s
    })
}

pub fn run(cmd: &mut Command) -> Output {
    wait_child(cmd.spawn().expect("spawn the binary"))
}

pub fn run_with_stdin(cmd: &mut Command, input: &str) -> Output {
    let mut child = cmd.stdin(Stdio::piped()).spawn().expect("spawn the binary");
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin.write_all(input.as_bytes()).expect("write stdin");
    drop(stdin);
    wait_child(child)
}

/// The server as the built binary, on 127.0.0.1 and a port the kernel picks,
/// read back from its "listening on" log line. Dropping it kills the process.
pub struct ServerProcess {
    child: Option<Child>,
    pub addr: SocketAddr,
    stdout: Option<JoinHandle<String>>,
    stderr: Option<JoinHandle<String>>,
}

impl ServerProcess {
    pub fn start(args: &[&str]) -> ServerProcess {
        let mut cmd = binary(&["--host", "127.0.0.1", "--port", "0"]);
        cmd.args(args);
        ServerProcess::spawn(&mut cmd)
    }

    /// Runs `cmd` (the binary as a server, from [`binary`]) until it logs its address.
    pub fn spawn(cmd: &mut Command) -> ServerProcess {
        let mut child = cmd.spawn().expect("spawn the server");
        let stdout = read_all_later(child.stdout.take());
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = std::thread::spawn(move || {
            let mut all = String::new();
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some((_, addr)) = line.split_once("listening on ") {
                    let _ = tx.send(addr.trim().to_string());
                }
                all.push_str(&line);
                all.push('\n');
            }
            all
        });
        let mut server = ServerProcess {
            child: Some(child),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            stdout: Some(stdout),
            stderr: Some(stderr),
        };
        match rx.recv_timeout(CHILD_TIMEOUT) {
            Ok(addr) => server.addr = addr.parse().expect("a socket address"),
            Err(_) => {
                let out = server.stop();
                panic!("the server did not start: {}", out.stderr);
            }
        }
        server
    }

    /// SIGTERM, as `docker stop` sends it; then how the server ended.
    pub fn stop(mut self) -> Output {
        let child = self.child.take().expect("a running server");
        // SAFETY: kill(2) on the id of a child this test started and has not reaped.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let out = wait_child(child);
        Output {
            stdout: self
                .stdout
                .take()
                .map(|t| t.join().expect("stdout"))
                .unwrap_or_default(),
            stderr: self
                .stderr
                .take()
                .map(|t| t.join().expect("stderr"))
                .unwrap_or_default(),
            ..out
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A loopback port that refuses connections for as long as this lives: bound
/// (so nothing else can take it) but not listening.
pub struct RefusingPort {
    _socket: OwnedFd,
    pub addr: SocketAddr,
}

pub fn refusing_port() -> RefusingPort {
    // SAFETY: plain socket calls on a descriptor owned from the start; every
    // pointer passed is valid for its size.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket");
        let socket = OwnedFd::from_raw_fd(fd);
        let mut sa = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from(std::net::Ipv4Addr::LOCALHOST).to_be(),
            },
            sin_zero: [0; 8],
        };
        let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let rc = libc::bind(fd, (&sa as *const libc::sockaddr_in).cast(), len);
        assert_eq!(rc, 0, "bind");
        let rc = libc::getsockname(fd, (&mut sa as *mut libc::sockaddr_in).cast(), &mut len);
        assert_eq!(rc, 0, "getsockname");
        RefusingPort {
            _socket: socket,
            addr: SocketAddr::from(([127, 0, 0, 1], u16::from_be(sa.sin_port))),
        }
    }
}
pub mod extra;
pub mod redis;
