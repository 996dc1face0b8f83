//! More helpers: the kernel's socket-buffer limits (to size tests that must
//! overflow them), the server's own byte counters from `/metrics`, sockets
//! with small buffers, and the built binary as a child process whose memory
//! can be measured apart from the test process.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{TIMEOUT, Ws};

/// The third field (the most autotuning may grow a socket buffer to) of a
/// `/proc/sys/net/ipv4/tcp_{w,r}mem` line.
fn tcp_mem_max(which: &str) -> usize {
    let path = format!("/proc/sys/net/ipv4/tcp_{which}");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.split_whitespace()
        .nth(2)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{path}: unexpected {text:?}"))
}

/// The most a socket's send buffer grows to by itself: what the kernel can
/// hold for a reader that stopped reading, on the server's side of loopback.
pub fn send_buffer_max() -> usize {
    tcp_mem_max("wmem")
}

/// The most a socket's receive buffer grows to by itself.
pub fn receive_buffer_max() -> usize {
    tcp_mem_max("rmem")
}

/// How many events of `event_bytes` overflow what the kernel holds for a
/// stalled reader (the server's send buffer at its largest, plus `extra`
/// bytes), with half again as margin.
pub fn events_past_the_kernel(event_bytes: usize, extra: usize) -> u64 {
    ((send_buffer_max() + extra) * 3 / 2 / event_bytes) as u64 + 100
}

// ---- the server's own counters ----

/// The exact bytes of one `/metrics` request, so tests that watch
/// `pubsubd_received_bytes_total` can subtract what their own polling added.
pub const METRICS_REQUEST: &[u8] = b"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";

/// One sample of a metric without labels, e.g. `pubsubd_received_bytes_total`.
pub fn metric(addr: SocketAddr, name: &str) -> u64 {
    let mut c = TcpStream::connect(addr).expect("connect for /metrics");
    c.set_read_timeout(Some(TIMEOUT)).unwrap();
    c.write_all(METRICS_REQUEST).unwrap();
    let mut text = String::new();
    c.read_to_string(&mut text).expect("read /metrics");
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}")) as u64
}

// ---- sockets ----

/// A TCP connection with its kernel buffers set before connecting (the
/// receive window is agreed in the handshake), so a client that stops
/// reading or writing stalls after a few KiB. A size of 0 keeps the default.
pub fn small_buffers_stream(addr: SocketAddr, rcvbuf: i32, sndbuf: i32) -> TcpStream {
    use std::os::fd::FromRawFd;
    let SocketAddr::V4(v4) = addr else {
        panic!("IPv4 only")
    };
    // SAFETY: plain socket calls on a descriptor this function owns until it
    // is handed to TcpStream; every pointer passed is valid for its size.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket");
        for (opt, size) in [(libc::SO_RCVBUF, rcvbuf), (libc::SO_SNDBUF, sndbuf)] {
            if size == 0 {
                continue;
            }
            let rc = libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
            assert_eq!(rc, 0, "setsockopt");
        }
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

/// A WebSocket over a stream the caller prepared (e.g. small buffers).
pub fn ws_over(addr: SocketAddr, stream: TcpStream) -> Ws {
    use tungstenite::client::IntoClientRequest;
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream.set_nodelay(true).unwrap();
    let req = format!("ws://{addr}/ws").into_client_request().unwrap();
    let (ws, _) = tungstenite::client::client(req, stream)
        .unwrap_or_else(|e| panic!("WebSocket handshake: {e}"));
    Ws { ws }
}

/// A masked client frame (zero mask) with FIN set.
pub fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n if n < 65536 => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(&[0, 0, 0, 0]);
    f.extend_from_slice(payload);
    f
}

/// A client that writes one frame over and over without reading, to find
/// out whether (and after how much) the server pushes back.
pub struct Flood {
    frame: Vec<u8>,
    /// Bytes of the current frame already written (0: at a frame boundary).
    pub partial: usize,
    /// Whole frames written.
    pub frames: u64,
    /// All bytes written, the partial frame's included.
    pub bytes: usize,
}

impl Flood {
    pub fn new(frame: Vec<u8>) -> Flood {
        Flood {
            frame,
            partial: 0,
            frames: 0,
            bytes: 0,
        }
    }

    /// Writes until the socket takes nothing for `still` (the server stopped
    /// reading and every buffer between is full): true. False if `cap` bytes
    /// went out without that happening: the server never pushed back.
    pub fn until_blocked(&mut self, c: &mut TcpStream, still: Duration, cap: usize) -> bool {
        c.set_write_timeout(Some(still)).unwrap();
        let blocked = loop {
            if self.bytes > cap {
                break false;
            }
            match c.write(&self.frame[self.partial..]) {
                Ok(n) => self.advance(n),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    break true;
                }
                Err(e) => panic!("write failed after {} bytes: {e}", self.bytes),
            }
        };
        c.set_write_timeout(None).unwrap();
        blocked
    }

    /// Completes a frame cut by the stall (blocking), so the stream stays well-formed.
    pub fn finish_frame(&mut self, c: &mut TcpStream) {
        c.set_write_timeout(Some(TIMEOUT)).unwrap();
        while self.partial > 0 {
            let n = c
                .write(&self.frame[self.partial..])
                .expect("the server reads again");
            self.advance(n);
        }
    }

    fn advance(&mut self, n: usize) {
        self.bytes += n;
        self.partial += n;
        if self.partial == self.frame.len() {
            self.partial = 0;
            self.frames += 1;
        }
    }
}

// ---- the built binary ----

/// The server binary as a child process, killed on drop so a failing test
/// never leaks it. Its memory is its own, apart from the test process.
pub struct Binary {
    pub child: Child,
    pub addr: SocketAddr,
    /// Every line the server has logged so far.
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Binary {
    pub fn start(args: &[&str]) -> Binary {
        let mut child = Command::new(env!("CARGO_BIN_EXE_pubsubd"))
            .args(["--host", "127.0.0.1", "--port", "0", "--log-level", "info"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start pubsubd");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line.split("listening on ").nth(1) {
                    let _ = tx.send(addr.trim().to_string());
                }
                lines.lock().unwrap().push(line);
            }
        });
        let addr = rx
            .recv_timeout(TIMEOUT)
            .expect("the server logs its address")
            .parse()
            .unwrap();
        Binary { child, addr, log }
    }

    /// Waits for a log line containing `text`, and returns it.
    pub fn wait_log(&self, text: &str) -> String {
        let mut found = None;
        super::wait_until(&format!("the log line {text:?}"), || {
            found = self
                .log
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains(text))
                .cloned();
            found.is_some()
        });
        found.unwrap_or_default()
    }

    /// How many log lines contain `text` so far.
    pub fn log_count(&self, text: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(text))
            .count()
    }

    /// Resident memory of the server process, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let path = format!("/proc/{}/status", self.child.id());
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{path}: {e}"))
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill() on the PID of a child this test started and still owns.
        assert_eq!(
            unsafe { libc::kill(self.child.id() as libc::pid_t, sig) },
            0
        );
    }

    pub fn wait_exit(&mut self, within: Duration) -> (std::process::ExitStatus, Duration) {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status, started.elapsed());
            }
            assert!(started.elapsed() < within, "still running after {within:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A WebSocket handshake done by hand: the raw stream, for tests that write
/// frames as they please.
pub fn raw_ws_at(addr: SocketAddr) -> TcpStream {
    let mut c = TcpStream::connect(addr).expect("connect");
    c.set_read_timeout(Some(TIMEOUT)).unwrap();
    c.set_nodelay(true).unwrap();
    c.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n").unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        c.read_exact(&mut byte).expect("handshake answer");
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    c
}

/// What the server sent, one frame at a time.
#[derive(Debug)]
pub enum ServerFrame {
    Text(String),
    Close(Option<u16>),
    /// A ping, pong or binary frame.
    Other(u8),
    /// EOF or a reset without a close frame.
    Gone,
}

/// Reads unmasked server frames from a raw stream.
pub struct FrameReader {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl FrameReader {
    pub fn new(stream: TcpStream) -> FrameReader {
        FrameReader {
            stream,
            buf: Vec::new(),
        }
    }

    /// The next frame; panics if nothing comes within the read timeout.
    pub fn next(&mut self) -> ServerFrame {
        loop {
            if let Some((frame, used)) = self.parse() {
                self.buf.drain(..used);
                return frame;
            }
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) => return ServerFrame::Gone,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                    return ServerFrame::Gone;
                }
                Err(e) => panic!("no frame from the server within {TIMEOUT:?}: {e}"),
            }
        }
    }

    fn parse(&self) -> Option<(ServerFrame, usize)> {
        let b = &self.buf;
        if b.len() < 2 {
            return None;
        }
        assert_eq!(b[1] & 0x80, 0, "the server masked a frame");
        let (hdr, len) = match b[1] & 0x7f {
            126 => (4, u16::from_be_bytes([*b.get(2)?, *b.get(3)?]) as usize),
            127 => (
                10,
                u64::from_be_bytes(b.get(2..10)?.try_into().unwrap()) as usize,
            ),
            n => (2, n as usize),
        };
        let payload = b.get(hdr..hdr + len)?;
        let frame = match b[0] & 0x0f {
            0x1 => ServerFrame::Text(
                String::from_utf8(payload.to_vec()).expect("the server sent invalid UTF-8"),
            ),
            0x8 => ServerFrame::Close(
                (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]])),
            ),
            op => ServerFrame::Other(op),
        };
        Some((frame, hdr + len))
    }
}

// ---- sequences ----

/// Publishes `{"n":k}` for each k and checks each ack's seq is k.
pub fn publish_numbered(publisher: &mut Ws, topic: &str, seqs: impl IntoIterator<Item = u64>) {
    for n in seqs {
        let ack = publisher.publish(topic, serde_json::json!({ "n": n }));
        assert_eq!(ack["type"], "ack", "{ack}");
        assert_eq!(ack["seq"], n, "publish ack of event {n}: {ack}");
    }
}

/// Checks that `seen` holds every seq of 1..=last exactly once.
pub fn assert_exactly_once(seen: &[u64], last: u64) {
    let mut count = vec![0u32; last as usize + 1];
    for &seq in seen {
        assert!((1..=last).contains(&seq), "seq {seq} is outside 1..={last}");
        count[seq as usize] += 1;
    }
    let missing: Vec<u64> = (1..=last)
        .filter(|&s| count[s as usize] == 0)
        .take(10)
        .collect();
    let repeated: Vec<u64> = (1..=last)
        .filter(|&s| count[s as usize] > 1)
        .take(10)
        .collect();
    assert!(
        missing.is_empty() && repeated.is_empty(),
        "of 1..={last}: missing {missing:?}, seen more than once {repeated:?} (the first ten of each)"
    );
}

/// A publisher on its own connection, publishing `{"n":k}` (k = 1, 2, …) and
/// checking each ack's seq is k, until told to stop or `cap` events; `pause`
/// between publishes makes a steady stream (zero: as fast as acks come back).
pub struct Publisher {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    published: std::sync::Arc<std::sync::atomic::AtomicU64>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl Publisher {
    pub fn start(addr: SocketAddr, topic: &'static str, cap: u64, pause: Duration) -> Publisher {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let published = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (stop_flag, count) = (stop.clone(), published.clone());
        let thread = std::thread::spawn(move || {
            let mut ws = Ws::connect(addr);
            let mut n = 0;
            while n < cap && !stop_flag.load(Ordering::Relaxed) {
                n += 1;
                let id = super::uuid();
                ws.send(serde_json::json!({"type":"publish","topic":topic,"message":{"id":id,"payload":{"n":n}},"request_id":n}));
                let ack = ws.recv_skip_heartbeat();
                assert_eq!(
                    (ack["type"].as_str(), ack["seq"].as_u64()),
                    (Some("ack"), Some(n)),
                    "{ack}"
                );
                count.store(n, Ordering::Release);
                if !pause.is_zero() {
                    std::thread::sleep(pause);
                }
            }
            n
        });
        Publisher {
            stop,
            published,
            thread: Some(thread),
        }
    }

    /// Events acknowledged so far.
    pub fn published(&self) -> u64 {
        self.published.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Waits until at least `n` events were acknowledged.
    pub fn wait_for(&self, n: u64) {
        super::wait_until("the publisher", || self.published() >= n);
    }

    /// Stops publishing; returns the last seq published.
    pub fn finish(mut self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread
            .take()
            .map(|t| t.join().expect("publisher"))
            .unwrap_or(0)
    }
}
