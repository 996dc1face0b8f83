//! The WebSocket opening handshake (RFC 6455 §4): the accept key the server
//! answers with and the client checks, and the request a client sends (the
//! CLI and the bench). No I/O.

use sha1::{Digest, Sha1};

use super::response::Head;

/// The GUID every accept key is derived with (RFC 6455 §1.3).
const KEY_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key`: base64 of the SHA-1 of
/// the key and the GUID.
pub fn accept_key(key: &[u8]) -> String {
    let mut sha1 = Sha1::new();
    sha1.update(key);
    sha1.update(KEY_GUID);
    base64(&sha1.finalize())
}

/// A fresh `Sec-WebSocket-Key`: 16 random bytes, in base64.
pub fn new_key() -> String {
    base64(uuid::Uuid::new_v4().as_bytes())
}

/// Standard base64 with padding (RFC 4648 §4); the handshake's keys are its
/// only use, not worth a dependency.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for group in bytes.chunks(3) {
        let b = [
            group[0],
            *group.get(1).unwrap_or(&0),
            *group.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= group.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Appends the upgrade request for `path` on `host` (`host:port`), with the
/// API key as `X-API-Key` when there is one.
pub fn write_request(out: &mut Vec<u8>, path: &str, host: &str, api_key: Option<&str>, key: &str) {
    out.extend_from_slice(
        format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        )
        .as_bytes(),
    );
    if let Some(api_key) = api_key {
        out.extend_from_slice(format!("X-API-Key: {api_key}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

/// Whether a header value can carry `value`: visible ASCII, spaces and tabs.
pub fn is_header_value(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
}

/// Whether `path` can stand as a request target as it is: the bytes of a
/// URI path that need no percent-encoding, UTF-8, and `"`, `{` and `}`,
/// which servers take in practice (the `http` crate's rule).
pub fn is_request_path(path: &str) -> bool {
    path.bytes().all(|b| {
        matches!(b, b'!' | b'$'..=b';' | b'=' | b'@'..=b'_' | b'a'..=b'z' | b'|' | b'~')
            || matches!(b, b'"' | b'{' | b'}' | 0x80..=0xFF)
    })
}

/// Checks a `101` answer to a request sent with `key`; the error says what
/// is wrong with it (RFC 6455 §4.1, the client's checks).
pub fn check_answer(head: &Head, key: &str) -> Result<(), &'static str> {
    let header = |name: &str| super::response::header(&head.headers, name);
    if !header("Upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket")) {
        return Err("No \"Upgrade: websocket\" header");
    }
    if !header("Connection").is_some_and(|v| v.eq_ignore_ascii_case("Upgrade")) {
        return Err("No \"Connection: upgrade\" header");
    }
    if header("Sec-WebSocket-Accept") != Some(accept_key(key.as_bytes()).as_str()) {
        return Err("Key mismatch in \"Sec-WebSocket-Accept\" header");
    }
    if header("Sec-WebSocket-Protocol").is_some() {
        return Err("Server sent a subprotocol but none was requested");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_is_the_rfc_example() {
        // RFC 6455 §1.3.
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn base64_pads_every_length() {
        // RFC 4648 §10.
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in cases {
            assert_eq!(base64(plain.as_bytes()), encoded, "{plain}");
        }
        assert_eq!(base64(&[0xfb, 0xff, 0xbf]), "+/+/");
        let key = new_key();
        assert_eq!((key.len(), key.ends_with("==")), (24, true));
        assert_ne!(key, new_key());
    }

    #[test]
    fn requests_carry_the_key_and_the_api_key() {
        let mut out = Vec::new();
        write_request(&mut out, "/p/ws", "[::1]:80", Some("k"), "a2V5");
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("GET /p/ws HTTP/1.1\r\nHost: [::1]:80\r\n"));
        assert!(text.contains("\r\nSec-WebSocket-Key: a2V5\r\n"));
        assert!(text.ends_with("\r\nX-API-Key: k\r\n\r\n"));
        assert!(is_header_value("k 1\tx~") && !is_header_value("k\n") && !is_header_value("é"));
        assert!(is_request_path("/a-b/{x}/é/ws") && !is_request_path("/a b/ws"));
    }

    #[test]
    fn answers_are_checked_like_tungstenite_checks_them() {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let head = |extra: &str| {
            let text = format!("HTTP/1.1 101 Switching Protocols\r\n{extra}\r\n");
            super::super::response::parse_head(text.as_bytes())
                .unwrap()
                .unwrap()
        };
        let good = "Upgrade: websocket\r\nConnection: Upgrade\r\n\
                    Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n";
        assert_eq!(check_answer(&head(good), key), Ok(()));
        let bad = [
            "Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n",
            "Upgrade: websocket\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n",
            "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: x\r\n",
        ];
        for extra in bad {
            assert!(check_answer(&head(extra), key).is_err(), "{extra}");
        }
        let protocol = format!("{good}Sec-WebSocket-Protocol: chat\r\n");
        assert!(check_answer(&head(&protocol), key).is_err());
    }
}
