//! A minimal blocking HTTP/1.1 client: one request per connection
//! (`Connection: close`). The response is read by [`crate::wire::response`].

use std::time::{Duration, Instant};

use super::conn::Conn;
use super::endpoint::Endpoint;
use crate::io::Io;
use crate::wire::response::{self, Context};

pub use crate::wire::response::Response;

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
    let failed = |detail: Failure| {
        let detail = match detail {
            Failure::TimedOut => format!("no answer within {:.1} s", timeout.as_secs_f64()),
            Failure::Other(detail) => detail,
        };
        format!("{method} {}{target} failed: {detail}", endpoint.http_url())
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

    let mut conn = Conn::new(stream);
    conn.send(&request, deadline)
        .map_err(|stopped| failed(stopped.into()))?;
    receive(&mut conn, method == "HEAD", deadline).map_err(failed)
}

/// Why a request got no answer.
pub(super) enum Failure {
    TimedOut,
    Other(String),
}

impl From<Io> for Failure {
    /// What stopped a read or a write.
    fn from(stopped: Io) -> Failure {
        match stopped {
            Io::WouldBlock => Failure::TimedOut,
            Io::Failed(err) => Failure::Other(err.to_string()),
            Io::Closed | Io::Progress(_) => {
                Failure::Other("the server closed the connection".into())
            }
        }
    }
}

/// Reads until `conn` holds a whole response, or the server is done.
pub(super) fn receive(
    conn: &mut Conn,
    head_request: bool,
    deadline: Instant,
) -> Result<Response, Failure> {
    let mut context = Context {
        head_request,
        ended: false,
    };
    loop {
        if let Some((response, _)) = response::parse(&conn.buf, context).map_err(Failure::Other)? {
            return Ok(response);
        }
        match conn.fill(Some(deadline)) {
            Io::Progress(_) => {}
            Io::Closed => context.ended = true,
            stopped => return Err(stopped.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
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
