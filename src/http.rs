//! HTTP/1.1 requests (parsed with `httparse`, bounded by limits) and responses.
//! No I/O: the connection hands in its buffer and queues the bytes returned.

use bytes::Bytes;

use crate::refusal::Refusal;

/// Largest request head (request line and headers), in bytes.
pub const MAX_HEAD: usize = 8 << 10;
/// Most headers in one request.
pub const MAX_HEADERS: usize = 64;

/// A complete request.
#[derive(Debug, Default)]
pub struct Request {
    pub method: String,
    /// The path before any `?`, still percent-encoded.
    pub path: String,
    pub query: Option<String>,
    pub keep_alive: bool,
    pub body: Vec<u8>,
    pub api_key: Option<String>,
    pub upgrade_websocket: bool,
    pub connection_upgrade: bool,
    pub ws_key: Option<String>,
    pub ws_version: Option<String>,
}

#[derive(Debug)]
pub enum Parsed {
    /// More bytes are needed.
    Partial,
    /// A request and the number of buffer bytes it used.
    Request(Box<Request>, usize),
    /// A request refused before routing; the connection closes after the answer.
    Reject(Refusal),
}

/// Parses the first request in `buf`.
pub fn parse(buf: &[u8], max_body: usize) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) if n > MAX_HEAD => {
            return Parsed::Reject(Refusal::HeadersTooLarge("request headers too large"));
        }
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
            return Parsed::Reject(Refusal::HeadersTooLarge("request headers too large"));
        }
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => {
            return Parsed::Reject(Refusal::HeadersTooLarge("too many request headers"));
        }
        Err(_) => return Parsed::Reject(Refusal::MalformedHttp("malformed HTTP request")),
    };
    let version = req.version.unwrap_or(1);
    let target = req.path.unwrap_or("/");
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q.to_string())),
        None => (target, None),
    };
    let mut out = Request {
        method: req.method.unwrap_or("").to_string(),
        path: path.to_string(),
        query,
        keep_alive: version == 1,
        ..Request::default()
    };
    let mut content_length: Option<usize> = None;
    let mut bearer = None;
    for h in req.headers.iter() {
        let value = std::str::from_utf8(h.value).unwrap_or("").trim();
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            match value.parse::<usize>() {
                Ok(n) if content_length.is_none_or(|c| c == n) => content_length = Some(n),
                _ => return Parsed::Reject(Refusal::MalformedHttp("invalid Content-Length")),
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Parsed::Reject(Refusal::ChunkedBody);
        } else if name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    out.keep_alive = false;
                } else if token.eq_ignore_ascii_case("keep-alive") {
                    out.keep_alive = true;
                } else if token.eq_ignore_ascii_case("upgrade") {
                    out.connection_upgrade = true;
                }
            }
        } else if name.eq_ignore_ascii_case("upgrade") {
            out.upgrade_websocket = value
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("websocket"));
        } else if name.eq_ignore_ascii_case("x-api-key") {
            out.api_key = Some(value.to_string());
        } else if name.eq_ignore_ascii_case("authorization") {
            bearer = bearer_token(value).map(String::from);
        } else if name.eq_ignore_ascii_case("sec-websocket-key") {
            out.ws_key = Some(value.to_string());
        } else if name.eq_ignore_ascii_case("sec-websocket-version") {
            out.ws_version = Some(value.to_string());
        }
    }
    // `Authorization: Bearer` is taken like `X-API-Key`, which wins when both are sent.
    out.api_key = out.api_key.or(bearer);
    let body_len = content_length.unwrap_or(0);
    if body_len > max_body {
        return Parsed::Reject(Refusal::BodyTooLarge);
    }
    if buf.len() < head_len + body_len {
        return Parsed::Partial;
    }
    out.body = buf[head_len..head_len + body_len].to_vec();
    Parsed::Request(Box::new(out), head_len + body_len)
}

/// The token of `Bearer TOKEN` (the scheme is case-insensitive, RFC 7235).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

impl Request {
    /// A query parameter's percent-decoded value.
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query.as_deref()?.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == name)
                .then(|| percent_decode(&v.replace('+', " ")))
                .flatten()
        })
    }
}

/// Decodes `%XX` escapes; `None` for a bad escape or text that is not UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

pub fn reason(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        302 => "Found",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// A response with a body and optional extra headers.
pub fn response(
    status: u16,
    content_type: &str,
    extra_headers: &[(&str, &str)],
    body: &[u8],
    close: bool,
) -> Bytes {
    let mut out = Vec::with_capacity(160 + body.len());
    out.extend_from_slice(
        format!(
            "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n",
            reason(status),
            body.len()
        )
        .as_bytes(),
    );
    for (name, value) in extra_headers {
        out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    Bytes::from(out)
}

/// The body of a refusal answered over HTTP: `{"error":"…"}`.
pub fn refusal_body(why: &Refusal) -> Vec<u8> {
    serde_json::json!({ "error": why.message() })
        .to_string()
        .into_bytes()
}

/// The answer to a refused HTTP request: its status, headers and body.
pub fn refusal(why: &Refusal, close: bool) -> Bytes {
    let body = refusal_body(why);
    response(
        why.status(),
        "application/json",
        why.headers(),
        &body,
        close,
    )
}

/// Why a WebSocket handshake is refused, or `None` when it is valid.
pub fn handshake_problem(req: &Request) -> Option<Refusal> {
    if !req.upgrade_websocket {
        return Some(Refusal::BadHandshake(
            "WebSocket endpoint: send 'Upgrade: websocket'",
        ));
    }
    if !req.connection_upgrade {
        return Some(Refusal::BadHandshake(
            "WebSocket handshake needs 'Connection: Upgrade'",
        ));
    }
    if req.ws_version.as_deref() != Some("13") {
        return Some(Refusal::BadWebSocketVersion);
    }
    match req.ws_key.as_deref() {
        Some(k) if k.len() == 24 && k.ends_with("==") => None,
        _ => Some(Refusal::BadHandshake(
            "missing or invalid Sec-WebSocket-Key",
        )),
    }
}

/// The 101 answer to a valid handshake.
pub fn switching_protocols(ws_key: &str) -> Bytes {
    let accept = crate::wire::handshake::accept_key(ws_key.as_bytes());
    Bytes::from(format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    ))
}

/// Compares a presented key with every configured key without an early exit.
pub fn key_matches(presented: &str, keys: &[String]) -> bool {
    let mut found = false;
    for key in keys {
        found |= constant_time_eq(presented.as_bytes(), key.as_bytes());
    }
    found
}

/// Whether two byte strings are equal, in a time that depends on their lengths only.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= usize::from(x ^ y);
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(raw: &str) -> (Box<Request>, usize) {
        match parse(raw.as_bytes(), 1024) {
            Parsed::Request(r, n) => (r, n),
            other => panic!("{raw:?}: {other:?}"),
        }
    }

    fn rejected(raw: &[u8]) -> u16 {
        match parse(raw, 1024) {
            Parsed::Reject(r) => r.status(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn parses_a_request_with_body_and_keeps_the_rest() {
        let raw = "POST /topics HTTP/1.1\r\nHost: x\r\nContent-Length: 17\r\n\r\n{\"name\":\"orders\"}GET /health HTTP/1.1\r\n\r\n";
        let (r, used) = request(raw);
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/topics");
        assert_eq!(r.body, b"{\"name\":\"orders\"}");
        assert!(r.keep_alive);
        let (next, _) = request(&raw[used..]);
        assert_eq!(next.path, "/health");
    }

    #[test]
    fn waits_for_the_whole_head_and_body() {
        assert!(matches!(
            parse(b"GET /health HTTP/1.1\r\nHo", 1024),
            Parsed::Partial
        ));
        assert!(matches!(
            parse(
                b"POST /topics HTTP/1.1\r\nContent-Length: 10\r\n\r\n{\"na",
                1024
            ),
            Parsed::Partial
        ));
    }

    #[test]
    fn connection_and_upgrade_headers() {
        let (r, _) = request("GET / HTTP/1.1\r\nConnection: close\r\n\r\n");
        assert!(!r.keep_alive);
        let (r, _) = request("GET / HTTP/1.0\r\n\r\n");
        assert!(!r.keep_alive);
        let (r, _) = request(
            "GET /ws?api_key=a%2Bb&x=1 HTTP/1.1\r\nConnection: keep-alive, Upgrade\r\nUpgrade: WebSocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nX-API-Key: k\r\n\r\n",
        );
        assert!(r.connection_upgrade && r.upgrade_websocket);
        assert_eq!(r.path, "/ws");
        assert_eq!(r.query_param("api_key").as_deref(), Some("a+b"));
        assert_eq!(r.api_key.as_deref(), Some("k"));
        assert_eq!(handshake_problem(&r), None);
        let resp = switching_protocols(r.ws_key.as_deref().unwrap());
        // RFC 6455 §1.3's worked example.
        assert!(
            std::str::from_utf8(&resp)
                .unwrap()
                .contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
        );
    }

    #[test]
    fn refuses_bad_requests_with_their_status() {
        assert_eq!(rejected(b"\x00\x01garbage\r\n\r\n"), 400);
        assert_eq!(
            rejected(b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n"),
            400
        );
        assert_eq!(
            rejected(b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            400
        );
        assert_eq!(
            rejected(b"POST /topics HTTP/1.1\r\nContent-Length: 2048\r\n\r\n"),
            413
        );
        assert_eq!(
            rejected(b"POST /topics HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            411
        );
        let many: String = (0..70).map(|i| format!("X-{i}: y\r\n")).collect();
        assert_eq!(
            rejected(format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes()),
            431
        );
        let big = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n", "a".repeat(MAX_HEAD));
        assert_eq!(rejected(big.as_bytes()), 431);
    }

    #[test]
    fn handshake_problems_are_named() {
        let base = |extra: &str| request(&format!("GET /ws HTTP/1.1\r\n{extra}\r\n")).0;
        assert!(
            handshake_problem(&base(""))
                .unwrap()
                .message()
                .contains("Upgrade")
        );
        let r = base(
            "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
        );
        assert!(handshake_problem(&r).unwrap().message().contains("Version"));
        let r = base("Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n");
        assert!(handshake_problem(&r).unwrap().message().contains("Key"));
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%3Ab").as_deref(), Some("a:b"));
        assert_eq!(percent_decode("plain").as_deref(), Some("plain"));
        assert_eq!(percent_decode("bad%2"), None);
        assert_eq!(percent_decode("bad%zz"), None);
        assert_eq!(percent_decode("%ff"), None);
    }

    #[test]
    fn bearer_is_an_api_key() {
        let key = |headers: &str| {
            request(&format!("GET /topics HTTP/1.1\r\n{headers}\r\n"))
                .0
                .api_key
        };
        assert_eq!(key("Authorization: Bearer k1\r\n").as_deref(), Some("k1"));
        assert_eq!(key("authorization: bearer  k1 \r\n").as_deref(), Some("k1"));
        assert_eq!(key("Authorization: Basic azE6\r\n"), None);
        assert_eq!(key("Authorization: Bearer\r\n"), None);
        assert_eq!(key("Authorization: Bearer \r\n"), None);
        let both = "Authorization: Bearer b\r\nX-API-Key: x\r\n";
        assert_eq!(key(both).as_deref(), Some("x"));
        let both = "X-API-Key: x\r\nAuthorization: Bearer b\r\n";
        assert_eq!(key(both).as_deref(), Some("x"));
    }

    #[test]
    fn keys_compare_whole() {
        let keys = vec!["k1".to_string(), "secret".to_string()];
        assert!(key_matches("secret", &keys));
        assert!(key_matches("k1", &keys));
        assert!(!key_matches("secre", &keys));
        assert!(!key_matches("secrets", &keys));
        assert!(!key_matches("", &keys));
    }
}
