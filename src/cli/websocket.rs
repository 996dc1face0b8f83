//! The CLI's WebSocket client, blocking, on the project's own codec: the
//! handshake ([`crate::wire::handshake`], the answer read by the one HTTP
//! response reader), masked frames out ([`crate::wire::frame`]), server
//! frames in ([`crate::wire::client`]) with pings answered and a close
//! echoed, and a clean close. Every read and write is an [`Io`] outcome, on a
//! [`Conn`]. Errors read as tungstenite's did, which this replaced.

use std::fmt;
use std::io;
use std::time::{Duration, Instant};

use super::conn::Conn;
use super::http::{self, Response};
use super::{Client, Failure};
use crate::io::Io;
use crate::wire::client::{self as ws, Message};
use crate::wire::{decoder, frame, handshake, response};

/// The largest frame or message read: tungstenite's frame limit, which the
/// CLI had.
const MAX_MESSAGE: usize = 16 << 20;
/// How long to wait for the server's half of a close handshake.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Why a WebSocket read or write failed.
#[derive(Debug)]
pub(super) enum WsError {
    /// Nothing came, or nothing could be sent, within the timeout.
    TimedOut,
    /// The stream ended, was reset or broke before the close handshake.
    Reset,
    /// The stream ended after the close handshake.
    Closed,
    Io(io::Error),
    /// The server broke RFC 6455.
    Protocol(&'static str),
    /// A text message that is not UTF-8.
    Utf8(std::str::Utf8Error),
}

impl WsError {
    /// What stopped a read or a write; `closed` is what the end of the
    /// stream means at that point.
    fn stopped(stopped: Io, closed: WsError) -> WsError {
        match stopped {
            Io::Closed => closed,
            Io::Failed(e) => WsError::Io(e),
            Io::WouldBlock | Io::Progress(_) => WsError::TimedOut,
        }
    }
}

impl fmt::Display for WsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WsError::TimedOut => f.write_str("timed out"),
            WsError::Reset => {
                f.write_str("WebSocket protocol error: Connection reset without closing handshake")
            }
            WsError::Closed => f.write_str("Connection closed normally"),
            WsError::Io(e) => write!(f, "IO error: {e}"),
            WsError::Protocol(why) if *why == ws::TOO_BIG => {
                write!(f, "Space limit exceeded: {why}")
            }
            WsError::Protocol(why) => write!(f, "WebSocket protocol error: {why}"),
            WsError::Utf8(e) => write!(f, "UTF-8 encoding error: {e}"),
        }
    }
}

pub(super) fn is_timeout(err: &WsError) -> bool {
    matches!(err, WsError::TimedOut)
}

pub(super) fn describe(err: &WsError, timeout: Duration) -> String {
    if is_timeout(err) {
        format!("no answer within {:.1} s", timeout.as_secs_f64())
    } else {
        err.to_string()
    }
}

/// Opens the WebSocket at `{url}/ws`, sending the API key as `X-API-Key`.
pub(super) fn connect(client: &Client) -> Result<Socket, Failure> {
    open(client).map_err(|(failure, _)| failure)
}

/// [`connect`], and the HTTP status when the server refused the handshake.
pub(super) fn open(client: &Client) -> Result<Socket, (Failure, Option<u16>)> {
    let plain = |failure| (failure, None);
    let url = client.endpoint.ws_url();
    let stream = client
        .endpoint
        .connect(client.timeout)
        .map_err(|e| plain(Failure::Failed(e)))?;
    let path = client.endpoint.path("/ws");
    if !handshake::is_request_path(&path) {
        return Err(plain(Failure::Usage(format!(
            "invalid WebSocket URL '{url}': invalid uri character"
        ))));
    }
    let api_key = client.api_key.as_deref();
    if !api_key.is_none_or(handshake::is_header_value) {
        return Err(plain(Failure::Usage(
            "the API key has characters an HTTP header cannot carry".to_string(),
        )));
    }
    let failed = |detail: &dyn fmt::Display| {
        plain(Failure::Failed(format!(
            "WebSocket handshake with {url} failed: {detail}"
        )))
    };
    let unfinished = || WsError::Protocol("Handshake not finished");
    let key = handshake::new_key();
    let mut request = Vec::new();
    handshake::write_request(
        &mut request,
        &path,
        &client.endpoint.authority(),
        api_key,
        &key,
    );
    let deadline = Instant::now() + client.timeout;
    let mut conn = Conn::new(stream);
    conn.send(&request, deadline).map_err(|stopped| {
        let err = WsError::stopped(stopped, unfinished());
        failed(&describe(&err, client.timeout))
    })?;
    let head = loop {
        match response::parse_head(&conn.buf) {
            Ok(Some(head)) => break head,
            Ok(None) => {}
            Err(e) => return Err(failed(&e)),
        }
        match conn.fill(Some(deadline)) {
            Io::Progress(_) => {}
            stopped => {
                let err = WsError::stopped(stopped, unfinished());
                return Err(failed(&describe(&err, client.timeout)));
            }
        }
    };
    if head.status != 101 {
        // The body says why; without it, the head and what came with it.
        let refused = http::receive(&mut conn, false, deadline).unwrap_or_else(|_| Response {
            body: conn.buf[head.len..].to_vec(),
            status: head.status,
            reason: head.reason,
            headers: head.headers,
        });
        return Err((
            Failure::Failed(format!(
                "the server refused the WebSocket at {url}: {}",
                refused.error_text()
            )),
            Some(refused.status),
        ));
    }
    handshake::check_answer(&head, &key).map_err(|why| failed(&WsError::Protocol(why)))?;
    Ok(Socket {
        conn,
        start: head.len,
        reader: ws::Reader::default(),
        masks: frame::Masks::new(uuid::Uuid::new_v4().as_u128() as u32),
        timeout: client.timeout,
        close_sent: false,
        close_received: false,
    })
}

/// What one read produced.
pub(super) enum Inbound {
    /// A text message.
    Text(String),
    /// The server's close frame, with its code and reason when it has them.
    Closed(Option<(u16, String)>),
    /// Pings (answered), pongs and binary messages.
    Other,
}

/// An open WebSocket.
pub(super) struct Socket {
    conn: Conn,
    /// Where the unused bytes of `conn.buf` start.
    start: usize,
    reader: ws::Reader,
    masks: frame::Masks,
    /// Time allowed for each write.
    timeout: Duration,
    /// Our close frame went out: our own, or the echo of the server's.
    close_sent: bool,
    /// The server's close frame came: the stream may end now.
    close_received: bool,
}

impl Socket {
    pub fn send_text(&mut self, text: &[u8]) -> Result<(), WsError> {
        let mut out = Vec::with_capacity(frame::MAX_HEADER + text.len());
        frame::write_frame(&mut out, frame::TEXT, text, self.masks.next_key());
        self.send(&out)
    }

    fn send(&mut self, bytes: &[u8]) -> Result<(), WsError> {
        let deadline = Instant::now() + self.timeout;
        self.conn
            .send(bytes, deadline)
            .map_err(|stopped| WsError::stopped(stopped, WsError::Reset))
    }

    /// Reads one message, waiting at most `timeout` (`None`: forever). A
    /// ping is answered with a pong, and the server's close with its echo.
    pub fn read(&mut self, timeout: Option<Duration>) -> Result<Inbound, WsError> {
        // A zero timeout means "block" to the OS: keep it strictly positive.
        let deadline = timeout.map(|t| Instant::now() + t.max(Duration::from_millis(1)));
        loop {
            let unused = &self.conn.buf[self.start..];
            let next = self.reader.next(unused, MAX_MESSAGE);
            let Some((message, used)) = next.map_err(WsError::Protocol)? else {
                self.conn.buf.drain(..self.start);
                self.start = 0;
                match self.conn.fill(deadline) {
                    Io::Progress(_) => continue,
                    stopped => {
                        let end = if self.close_received {
                            WsError::Closed
                        } else {
                            WsError::Reset
                        };
                        return Err(WsError::stopped(stopped, end));
                    }
                }
            };
            self.start += used;
            let Some(message) = message else {
                continue; // a fragment
            };
            if self.close_received {
                return Err(WsError::Protocol("Remote sent after having closed"));
            }
            return match message {
                Message::Text(text) => match std::str::from_utf8(text) {
                    Ok(text) => Ok(Inbound::Text(text.to_string())),
                    Err(e) => Err(WsError::Utf8(e)),
                },
                Message::Ping(data) => {
                    // After our close, no more pongs (RFC 6455 §5.5.1).
                    if !self.close_sent {
                        let mut pong = Vec::with_capacity(frame::MAX_HEADER + data.len());
                        frame::write_frame(&mut pong, frame::PONG, data, self.masks.next_key());
                        self.send(&pong)?;
                    }
                    Ok(Inbound::Other)
                }
                Message::Close(close) => {
                    let close = decoder::close_answer(close);
                    let mut echo = Vec::new();
                    frame::write_close(&mut echo, close, self.masks.next_key());
                    let close = close.map(|(code, reason)| (code, reason.to_string()));
                    self.close_received = true;
                    if !self.close_sent {
                        self.close_sent = true;
                        // A failed echo shows on the next read, as the end of the stream.
                        let _ = self.send(&echo);
                    }
                    Ok(Inbound::Closed(close))
                }
                Message::Pong | Message::Binary => Ok(Inbound::Other),
            };
        }
    }

    /// Closes our side and waits briefly for the server's, so it sees a clean close.
    pub fn hang_up(mut self) {
        if !self.close_sent {
            self.close_sent = true;
            let mut close = Vec::new();
            frame::write_close(&mut close, None, self.masks.next_key());
            let _ = self.send(&close);
        }
        let deadline = Instant::now() + CLOSE_WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.read(Some(left)).is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::endpoint::Endpoint;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use tungstenite::protocol::CloseFrame;
    use tungstenite::protocol::frame::Frame;
    use tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};

    /// A client of a server on a fresh port that runs `serve` on one connection.
    fn client_of(serve: impl FnOnce(TcpStream) + Send + 'static) -> Client {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || serve(listener.accept().unwrap().0));
        Client {
            endpoint: Endpoint::parse(&format!("http://127.0.0.1:{port}/p")).unwrap(),
            api_key: Some("k1".to_string()),
            timeout: Duration::from_secs(5),
        }
    }

    /// Reads a request head, then writes `answer`.
    fn answer(mut s: TcpStream, answer: &'static [u8]) {
        let mut seen = Vec::new();
        let mut b = [0u8; 1024];
        while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut b) {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&b[..n]),
            }
        }
        let _ = s.write_all(answer);
        std::thread::sleep(Duration::from_millis(200));
    }

    fn failure(result: Result<Socket, (Failure, Option<u16>)>) -> (String, Option<u16>) {
        match result {
            Ok(_) => panic!("the handshake succeeded"),
            Err((failure, status)) => (failure.message().to_string(), status),
        }
    }

    /// tungstenite, as an independent server: the handshake, a text each
    /// way, a ping answered, a fragmented message put together, and the
    /// close handshake from either side.
    #[test]
    fn speaks_websocket_with_tungstenite() {
        let (done, finished) = std::sync::mpsc::channel();
        let client = client_of(move |stream| {
            // tungstenite's callback type, not ours, has the large error.
            #[allow(clippy::result_large_err)]
            let check = |request: &tungstenite::handshake::server::Request, response| {
                assert_eq!(request.uri().path(), "/p/ws");
                assert_eq!(request.headers()["X-API-Key"], "k1");
                Ok(response)
            };
            let mut ws = tungstenite::accept_hdr(stream, check).unwrap();
            let read = |ws: &mut tungstenite::WebSocket<TcpStream>| ws.read().unwrap();
            assert_eq!(read(&mut ws), tungstenite::Message::text("hello"));
            ws.send(tungstenite::Message::Ping(b"p".to_vec().into()))
                .unwrap();
            assert_eq!(
                read(&mut ws),
                tungstenite::Message::Pong(b"p".to_vec().into())
            );
            let part = |data: &[u8], opcode, fin| {
                tungstenite::Message::Frame(Frame::message(data.to_vec(), opcode, fin))
            };
            ws.send(part(b"{\"a\":", OpCode::Data(Data::Text), false))
                .unwrap();
            ws.send(part(b"1}", OpCode::Data(Data::Continue), true))
                .unwrap();
            ws.close(Some(CloseFrame {
                code: CloseCode::Away,
                reason: "bye".into(),
            }))
            .unwrap();
            // The client's echo completes the close handshake.
            let echo = read(&mut ws);
            let _ = done.send(format!("{echo:?}"));
        });
        let mut socket = connect(&client).unwrap();
        socket.send_text(b"hello").unwrap();
        assert!(matches!(socket.read(None), Ok(Inbound::Other)), "the ping");
        match socket.read(None) {
            Ok(Inbound::Text(text)) => assert_eq!(text, "{\"a\":1}"),
            _ => panic!("no fragmented message"),
        }
        match socket.read(None) {
            Ok(Inbound::Closed(close)) => assert_eq!(close, Some((1001, "bye".to_string()))),
            _ => panic!("no close"),
        }
        let echo = finished.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(echo.contains("Away") && echo.contains("bye"), "{echo}");
        socket.hang_up();
    }

    #[test]
    fn hanging_up_closes_cleanly() {
        let (done, finished) = std::sync::mpsc::channel();
        let client = client_of(move |stream| {
            let mut ws = tungstenite::accept(stream).unwrap();
            let close = ws.read().unwrap();
            // tungstenite answers the close; the connection then ends.
            let end = ws.read().unwrap_err();
            let _ = done.send(format!("{close:?} then {end}"));
        });
        connect(&client).unwrap().hang_up();
        let seen = finished.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(seen, "Close(None) then Connection closed normally");
    }

    #[test]
    fn a_refused_handshake_tells_the_status_and_why() {
        let client = client_of(|s| {
            answer(
                s,
                b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 26\r\nConnection: close\r\n\r\n\
                  {\"error\":\"unauthorized\"}\r\n",
            )
        });
        let (message, status) = failure(open(&client));
        assert_eq!(status, Some(401));
        let port = client.endpoint.authority();
        assert_eq!(
            message,
            format!(
                "the server refused the WebSocket at ws://{port}/p/ws: 401 Unauthorized: unauthorized"
            )
        );
    }

    #[test]
    fn a_wrong_accept_key_or_a_silent_server_fails_the_handshake() {
        let client = client_of(|s| {
            answer(
                s,
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                  Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
            )
        });
        let (message, status) = failure(open(&client));
        assert!(message.contains("Key mismatch"), "{message}");
        assert_eq!(status, None);
        let mut client = client_of(|s| {
            std::thread::sleep(Duration::from_secs(1));
            drop(s);
        });
        client.timeout = Duration::from_millis(200);
        let (message, _) = failure(open(&client));
        assert!(
            message.ends_with("failed: no answer within 0.2 s"),
            "{message}"
        );
    }

    #[test]
    fn a_stream_that_ends_early_or_a_key_a_header_cannot_carry_fails() {
        let client = client_of(|s| answer(s, b"HTTP/1.1 101 Switching Protocols\r\n"));
        let (message, _) = failure(open(&client));
        assert!(message.ends_with("Handshake not finished"), "{message}");
        let mut client = client_of(|s| answer(s, b""));
        client.api_key = Some("line\nbreak".to_string());
        let (message, _) = failure(open(&client));
        assert!(message.contains("cannot carry"), "{message}");
    }
}
