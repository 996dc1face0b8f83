//! The one HTTP/1.1 response reader, for the CLI, the bench and the tests: a
//! status line and headers (`httparse`), then a body framed by
//! `Content-Length`, chunked, or running until the peer closes. It reads from
//! a byte buffer and does no I/O: callers read more and ask again.

/// Largest response head accepted.
pub const MAX_HEAD: usize = 64 << 10;
/// Largest response body accepted (`/stats` grows with the number of topics).
pub const MAX_BODY: usize = 64 << 20;
/// Headers of one response.
const MAX_HEADERS: usize = 64;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    /// Names and values as received, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first header called `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

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

/// The first of `headers` called `name` (any case), trimmed.
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
}

/// A response head: the status line and the headers.
#[derive(Debug)]
pub struct Head {
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    /// Bytes the head took, blank line included.
    pub len: usize,
}

/// What the reader knows besides the bytes.
#[derive(Clone, Copy, Debug, Default)]
pub struct Context {
    /// The request was a HEAD: no body follows, whatever the headers say.
    pub head_request: bool,
    /// The peer has ended the stream: no more bytes will come.
    pub ended: bool,
}

/// Parses the head at the start of `buf`; `None` while it is incomplete.
pub fn parse_head(buf: &[u8]) -> Result<Option<Head>, String> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut headers);
    let status = parsed
        .parse(buf)
        .map_err(|e| format!("malformed HTTP response: {e}"))?;
    let httparse::Status::Complete(len) = status else {
        if buf.len() > MAX_HEAD {
            return Err("HTTP response head too large".into());
        }
        return Ok(None);
    };
    Ok(Some(Head {
        status: parsed.code.unwrap_or(0),
        reason: parsed.reason.unwrap_or("").to_string(),
        headers: parsed
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_string(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect(),
        len,
    }))
}

/// Parses the whole response at the start of `buf`, skipping interim (1xx)
/// answers: the response and the bytes it took, or `None` until more bytes
/// have come.
pub fn parse(buf: &[u8], context: Context) -> Result<Option<(Response, usize)>, String> {
    let mut at = 0;
    loop {
        let Some(head) = parse_head(&buf[at..])? else {
            return truncated(context, "connection closed before a full response");
        };
        at += head.len;
        if (100..200).contains(&head.status) {
            continue; // an interim answer; the real one follows
        }
        let field = |name: &str| header(&head.headers, name).map(str::to_ascii_lowercase);
        let rest = &buf[at..];
        let body = if context.head_request || head.status == 204 || head.status == 304 {
            Some((Vec::new(), 0))
        } else if field("transfer-encoding").is_some_and(|te| te.ends_with("chunked")) {
            chunked(rest)?
        } else if let Some(len) = field("content-length") {
            let len: usize = len
                .parse()
                .map_err(|_| format!("bad Content-Length '{len}'"))?;
            if len > MAX_BODY {
                return Err(format!("response body of {len} bytes is too large"));
            }
            (rest.len() >= len).then(|| (rest[..len].to_vec(), len))
        } else if rest.len() > MAX_BODY {
            return Err("response body too large".into());
        } else {
            context.ended.then(|| (rest.to_vec(), rest.len()))
        };
        let Some((body, used)) = body else {
            return truncated(context, "connection closed in the middle of the body");
        };
        let response = Response {
            status: head.status,
            reason: head.reason,
            headers: head.headers,
            body,
        };
        return Ok(Some((response, at + used)));
    }
}

/// Incomplete: wait for more, unless no more will come.
fn truncated<T>(context: Context, why: &str) -> Result<Option<T>, String> {
    if context.ended {
        Err(why.to_string())
    } else {
        Ok(None)
    }
}

/// A chunked body at the start of `buf`, trailers included: the body and the
/// bytes it took, or `None` while incomplete.
fn chunked(buf: &[u8]) -> Result<Option<(Vec<u8>, usize)>, String> {
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let Some(line) = line_at(buf, at)? else {
            return Ok(None);
        };
        let text = String::from_utf8_lossy(&buf[at..line]);
        let size = text.split(';').next().unwrap_or("").trim();
        let size =
            usize::from_str_radix(size, 16).map_err(|_| format!("bad chunk size '{size}'"))?;
        at = line + 2;
        if size == 0 {
            // Trailers, up to the empty line.
            loop {
                let Some(end) = line_at(buf, at)? else {
                    return Ok(None);
                };
                let empty = end == at;
                at = end + 2;
                if empty {
                    return Ok(Some((body, at)));
                }
            }
        }
        if body.len() + size > MAX_BODY {
            return Err("response body too large".into());
        }
        if buf.len() < at + size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&buf[at..at + size]);
        at += size;
        if &buf[at..at + 2] != b"\r\n" {
            return Err("chunk not followed by CRLF".into());
        }
        at += 2;
    }
}

/// Where the line starting at `at` ends (its CR), if it is complete.
fn line_at(buf: &[u8], at: usize) -> Result<Option<usize>, String> {
    match memchr::memmem::find(&buf[at..], b"\r\n") {
        Some(n) => Ok(Some(at + n)),
        None if buf.len() - at > MAX_HEAD => Err("chunk header too long".into()),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPEN: Context = Context {
        head_request: false,
        ended: false,
    };
    const ENDED: Context = Context {
        head_request: false,
        ended: true,
    };

    /// Feeds `bytes` one more byte at a time: incomplete until the end.
    fn whole(bytes: &[u8], context: Context) -> Response {
        for cut in 0..bytes.len() {
            let partial = parse(&bytes[..cut], OPEN);
            assert!(matches!(partial, Ok(None)), "at {cut}: {partial:?}");
        }
        let (response, used) = parse(bytes, context).unwrap().expect("complete");
        assert_eq!(used, bytes.len());
        response
    }

    #[test]
    fn content_length_bodies_and_keep_alive() {
        let one =
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 27\r\n\r\n{\"error\":\"topic not found\"}";
        let r = whole(one, OPEN);
        assert_eq!((r.status, r.reason.as_str()), (404, "Not Found"));
        assert_eq!(r.header("content-LENGTH"), Some("27"));
        assert!(!r.is_success());
        assert_eq!(r.error_text(), "404 Not Found: topic not found");
        // Two pipelined answers: the first takes only its own bytes.
        let two = [&one[..], b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"].concat();
        let (_, used) = parse(&two, OPEN).unwrap().unwrap();
        let (second, _) = parse(&two[used..], OPEN).unwrap().unwrap();
        assert_eq!(second.status, 200);
        assert!(second.body.is_empty());
    }

    #[test]
    fn chunked_interim_and_close_delimited_bodies() {
        let r = whole(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
              3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nT: v\r\n\r\n",
            OPEN,
        );
        assert_eq!(r.body, b"abcde");
        let until_close = b"HTTP/1.0 200 OK\r\n\r\nuntil close";
        assert!(matches!(parse(until_close, OPEN), Ok(None)));
        let (r, _) = parse(until_close, ENDED).unwrap().unwrap();
        assert_eq!(r.body, b"until close");
        let head = Context {
            head_request: true,
            ended: false,
        };
        let (r, used) = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", head)
            .unwrap()
            .unwrap();
        assert_eq!((r.body.len(), used), (0, 38));
    }

    #[test]
    fn truncated_garbage_and_oversized_answers_are_errors() {
        let e = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", ENDED);
        assert!(e.unwrap_err().contains("middle of the body"));
        let e = parse(b"HTTP/1.1 200", ENDED);
        assert!(e.unwrap_err().contains("before a full response"));
        assert!(
            parse(b"SSH-2.0-OpenSSH\r\n\r\n", OPEN)
                .unwrap_err()
                .contains("malformed")
        );
        let e = parse(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", OPEN);
        assert!(e.unwrap_err().contains("bad Content-Length"));
        let e = parse(
            b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n",
            OPEN,
        );
        assert!(e.unwrap_err().contains("too large"));
        let e = parse(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            OPEN,
        );
        assert!(e.unwrap_err().contains("bad chunk size"));
        let e = parse(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nabc",
            OPEN,
        );
        assert!(e.unwrap_err().contains("not followed by CRLF"));
        let mut long_head = b"HTTP/1.1 200 OK\r\nX: ".to_vec();
        long_head.resize(MAX_HEAD + 10, b'a');
        assert!(parse(&long_head, OPEN).unwrap_err().contains("too large"));
    }

    #[test]
    fn a_head_alone_is_enough_for_an_upgrade() {
        let head = parse_head(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n")
            .unwrap()
            .expect("complete");
        assert_eq!((head.status, head.len), (101, 56));
        assert!(parse_head(b"HTTP/1.1 101 Swi").unwrap().is_none());
    }
}
