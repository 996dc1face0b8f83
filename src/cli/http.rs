//! A minimal blocking HTTP/1.1 client: one request per connection
//! (`Connection: close`), `Content-Length`, chunked or until-close bodies.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use super::endpoint::Endpoint;

/// Largest response head accepted.
const MAX_HEAD: usize = 64 << 10;
/// Largest response body accepted (`/stats` grows with the number of topics).
const MAX_BODY: usize = 64 << 20;

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    pub body: Vec<u8>,
}

impl Response {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The `error` of a `{"error":…}` body, or the body itself, for messages.
    pub fn error_text(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        let detail = serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(String::from))
            .unwrap_or_else(|| text.trim().chars().take(200).collect());
        format!("{} {}: {detail}", self.status, self.reason)
    }
}

/// Sends one request and reads the whole response within `timeout`.
pub fn request(
    endpoint: &Endpoint,
    method: &str,
    path: &str,
    api_key: Option<&str>,
    body: Option<&[u8]>,
    timeout: Duration,
) -> Result<Response, String> {
    let deadline = Instant::now() + timeout;
    let stream = endpoint.connect(timeout)?;
    let target = endpoint.path(path);
    let io_failed = |err: io::Error| {
        let err = match err.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                format!("no answer within {:.1} s", timeout.as_secs_f64())
            }
            _ => err.to_string(),
        };
        format!("{method} {}{target} failed: {err}", endpoint.http_url())
    };

    let mut head = format!(
        "{method} {target} HTTP/1.1\r\nHost: {}\r\nUser-Agent: pubsubd-cli/{}\r\n\
         Accept: application/json\r\nConnection: close\r\n",
        endpoint.authority(),
        env!("CARGO_PKG_VERSION"),
    );
    if let Some(key) = api_key {
        head.push_str(&format!("X-API-Key: {key}\r\n"));
    }
    if let Some(body) = body {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    head.push_str("\r\n");
    let mut request = head.into_bytes();
    request.extend_from_slice(body.unwrap_or_default());

    let mut conn = Conn {
        stream,
        buf: Vec::new(),
        deadline,
    };
    conn.write_all(&request).map_err(io_failed)?;
    let response = conn.read_response(method == "HEAD").map_err(io_failed)?;
    Ok(response)
}

/// A connection with its unread bytes and the moment it must be done.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    deadline: Instant,
}

impl Conn {
    fn left(&self) -> io::Result<Duration> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        Ok(left)
    }

    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.set_write_timeout(Some(self.left()?))?;
        self.stream.write_all(bytes)
    }

    /// Reads more bytes into `buf`; `Ok(0)` at end of stream.
    fn fill(&mut self) -> io::Result<usize> {
        self.stream.set_read_timeout(Some(self.left()?))?;
        let mut chunk = [0u8; 16 << 10];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    fn read_response(&mut self, head_only: bool) -> io::Result<Response> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut parsed = httparse::Response::new(&mut headers);
            let status = parsed
                .parse(&self.buf)
                .map_err(|e| invalid(format!("malformed HTTP response: {e}")))?;
            let httparse::Status::Complete(head_len) = status else {
                if self.buf.len() > MAX_HEAD {
                    return Err(invalid("HTTP response head too large".into()));
                }
                if self.fill()? == 0 {
                    return Err(invalid("connection closed before a full response".into()));
                }
                continue;
            };
            let code = parsed.code.unwrap_or(0);
            let reason = parsed.reason.unwrap_or("").to_string();
            let header = |name: &str| {
                parsed
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case(name))
                    .map(|h| String::from_utf8_lossy(h.value).trim().to_ascii_lowercase())
            };
            let content_length = header("content-length");
            let chunked = header("transfer-encoding").is_some_and(|te| te.ends_with("chunked"));
            self.buf.drain(..head_len);
            if (100..200).contains(&code) {
                continue; // an interim answer; the real one follows
            }
            let body = if head_only || code == 204 || code == 304 {
                Vec::new()
            } else if chunked {
                self.read_chunked()?
            } else if let Some(len) = content_length {
                let len: usize = len
                    .parse()
                    .map_err(|_| invalid(format!("bad Content-Length '{len}'")))?;
                self.read_exact(len)?
            } else {
                self.read_to_end()?
            };
            return Ok(Response {
                status: code,
                reason,
                body,
            });
        }
    }

    fn read_exact(&mut self, len: usize) -> io::Result<Vec<u8>> {
        if len > MAX_BODY {
            return Err(invalid(format!(
                "response body of {len} bytes is too large"
            )));
        }
        while self.buf.len() < len {
            if self.fill()? == 0 {
                return Err(invalid(
                    "connection closed in the middle of the body".into(),
                ));
            }
        }
        Ok(self.buf.drain(..len).collect())
    }

    fn read_to_end(&mut self) -> io::Result<Vec<u8>> {
        while self.fill()? > 0 {
            if self.buf.len() > MAX_BODY {
                return Err(invalid("response body too large".into()));
            }
        }
        Ok(std::mem::take(&mut self.buf))
    }

    fn read_line(&mut self) -> io::Result<String> {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                self.buf.drain(..end + 2);
                return Ok(line);
            }
            if self.buf.len() > MAX_HEAD {
                return Err(invalid("chunk header too long".into()));
            }
            if self.fill()? == 0 {
                return Err(invalid(
                    "connection closed in the middle of the body".into(),
                ));
            }
        }
    }

    fn read_chunked(&mut self) -> io::Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let line = self.read_line()?;
            let size = line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size, 16)
                .map_err(|_| invalid(format!("bad chunk size '{size}'")))?;
            if size == 0 {
                // Trailers, up to the empty line.
                while !self.read_line()?.is_empty() {}
                return Ok(body);
            }
            if body.len() + size > MAX_BODY {
                return Err(invalid("response body too large".into()));
            }
            body.extend(self.read_exact(size)?);
            if !self.read_line()?.is_empty() {
                return Err(invalid("chunk not followed by CRLF".into()));
            }
        }
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// Serves `answer` to one connection, after reading the request head.
    fn serve_once(answer: &'static [u8]) -> Endpoint {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut seen = Vec::new();
            let mut b = [0u8; 1024];
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut b).unwrap();
                if n == 0 {
                    return;
                }
                seen.extend_from_slice(&b[..n]);
            }
            // Dribble the answer out to exercise partial reads.
            for piece in answer.chunks(7) {
                s.write_all(piece).unwrap();
                s.flush().unwrap();
            }
        });
        Endpoint::parse(&format!("http://127.0.0.1:{port}")).unwrap()
    }

    fn get(endpoint: &Endpoint) -> Result<Response, String> {
        request(endpoint, "GET", "/x", None, None, Duration::from_secs(5))
    }

    #[test]
    fn reads_content_length_bodies() {
        let e = serve_once(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 27\r\n\r\n{\"error\":\"topic not found\"}",
        );
        let r = get(&e).unwrap();
        assert!(!r.is_success());
        assert_eq!(r.error_text(), "404 Not Found: topic not found");
    }

    #[test]
    fn reads_chunked_and_close_delimited_bodies() {
        let e = serve_once(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
              3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nT: v\r\n\r\n",
        );
        assert_eq!(get(&e).unwrap().body, b"abcde");
        let e = serve_once(b"HTTP/1.0 200 OK\r\n\r\nuntil close");
        assert_eq!(get(&e).unwrap().body, b"until close");
    }

    #[test]
    fn truncated_and_garbage_answers_are_errors() {
        let e = serve_once(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc");
        assert!(get(&e).unwrap_err().contains("middle of the body"));
        let e = serve_once(b"SSH-2.0-OpenSSH\r\n\r\n");
        assert!(get(&e).unwrap_err().contains("malformed"));
    }

    #[test]
    fn a_silent_server_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let e = Endpoint::parse(&listener.local_addr().unwrap().to_string()).unwrap();
        let err = request(&e, "GET", "/", None, None, Duration::from_millis(200)).unwrap_err();
        assert!(err.contains("no answer within"), "{err}");
    }
}
