//! Helpers for integration tests: an in-process server on 127.0.0.1:0, a raw
//! HTTP/1.1 client, and a WebSocket client with short timeouts.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

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

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
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

    /// Reads one response (Content-Length framed).
    pub fn read_response(&mut self) -> Response {
        loop {
            if let Some((resp, used)) = parse_response(&self.buf) {
                self.buf.drain(..used);
                return resp;
            }
            let mut chunk = [0u8; 16384];
            let n = self.stream.read(&mut chunk).expect("read response");
            assert!(
                n > 0,
                "connection closed before a full response; got {:?}",
                String::from_utf8_lossy(&self.buf)
            );
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Whether the server closed the connection (EOF or reset) within the timeout.
    pub fn closed_by_server(&mut self) -> bool {
        let mut chunk = [0u8; 1024];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
    }
}

fn parse_response(buf: &[u8]) -> Option<(Response, usize)> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let head = match resp.parse(buf).expect("valid HTTP response") {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => return None,
    };
    let headers: Vec<(String, String)> = resp
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_string(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let len: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.parse().expect("numeric Content-Length"))
        .unwrap_or(0);
    if buf.len() < head + len {
        return None;
    }
    Some((
        Response {
            status: resp.code.expect("status"),
            headers,
            body: buf[head..head + len].to_vec(),
        },
        head + len,
    ))
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
    use std::os::fd::FromRawFd;
    let SocketAddr::V4(v4) = addr else {
        panic!("IPv4 only")
    };
    // SAFETY: plain socket calls on a descriptor this function owns until it
    // is handed to TcpStream; every pointer passed is valid for its size.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket");
        let size: libc::c_int = 4096;
        let rc = libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        assert_eq!(rc, 0, "setsockopt SO_RCVBUF");
        let sa = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: v4.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*v4.ip()).to_be(),
            },
            sin_zero: [0; 8],
        };
        let rc = libc::connect(
            fd,
            (&sa as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        assert_eq!(rc, 0, "connect");
        TcpStream::from_raw_fd(fd)
    }
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
pub mod extra;
