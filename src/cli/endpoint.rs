//! Where the server is: `http://host:port[/prefix]`, and how to reach it.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// A parsed server URL. `ws://` and `http://` name the same server.
#[derive(Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// Host name or IP address, without IPv6 brackets.
    host: String,
    port: u16,
    /// Path prefix in front of `/topics`, `/ws`…; empty or `/…` without a trailing slash.
    prefix: String,
}

impl Endpoint {
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        let bad = |why: &str| format!("invalid URL '{url}': {why} (expected http://HOST:PORT)");
        let rest = match url.split_once("://") {
            Some((scheme, rest)) => match scheme.to_ascii_lowercase().as_str() {
                "http" | "ws" => rest,
                "https" | "wss" => {
                    return Err(format!(
                        "invalid URL '{url}': TLS is not supported by this client; \
                         reach the server over plain http://"
                    ));
                }
                _ => return Err(bad("the scheme must be http:// or ws://")),
            },
            None => url,
        };
        let (authority, path) = match rest.find(['/', '?', '#']) {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if path.contains(['?', '#']) {
            return Err(bad("a query or fragment is not allowed"));
        }
        if authority.contains('@') {
            return Err(bad("user information is not supported; use --api-key"));
        }
        let (host, port) =
            crate::wire::split_host_port(authority).ok_or_else(|| bad("unclosed '['"))?;
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let port = match port {
            None => 80,
            Some(p) => p.parse().map_err(|_| bad("the port must be a number"))?,
        };
        Ok(Endpoint {
            host: host.to_string(),
            port,
            prefix: path.trim_end_matches('/').to_string(),
        })
    }

    /// `host:port` as the `Host` header wants it.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The request target of `path` (which starts with `/`).
    pub fn path(&self, path: &str) -> String {
        format!("{}{path}", self.prefix)
    }

    pub fn http_url(&self) -> String {
        format!("http://{}{}", self.authority(), self.prefix)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}{}", self.authority(), self.path("/ws"))
    }

    /// Connects to the first address of the host that answers within `timeout`.
    pub fn connect(&self, timeout: Duration) -> Result<TcpStream, String> {
        let deadline = Instant::now() + timeout;
        let fail = |err: &dyn std::fmt::Display| format!("cannot reach {}: {err}", self.http_url());
        let addrs = self.resolve().map_err(|e| fail(&e))?;
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no address for the host");
        for addr in addrs {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                last = io::Error::new(io::ErrorKind::TimedOut, "connection timed out");
                break;
            }
            match TcpStream::connect_timeout(&addr, left) {
                Ok(stream) => {
                    // Small requests and answers: do not wait to coalesce them.
                    let _ = stream.set_nodelay(true);
                    return Ok(stream);
                }
                Err(err) => last = err,
            }
        }
        Err(fail(&last))
    }

    pub(crate) fn resolve(&self) -> io::Result<Vec<SocketAddr>> {
        if let Ok(ip) = self.host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, self.port)]);
        }
        // A static binary in an empty root has no NSS modules and no /etc/hosts.
        if self.host.eq_ignore_ascii_case("localhost") {
            return Ok(vec![
                SocketAddr::new(Ipv4Addr::LOCALHOST.into(), self.port),
                SocketAddr::new(Ipv6Addr::LOCALHOST.into(), self.port),
            ]);
        }
        Ok((self.host.as_str(), self.port).to_socket_addrs()?.collect())
    }
}

/// Percent-encodes a path segment: everything but RFC 3986 unreserved characters.
pub fn encode_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms_users_type() {
        let e = Endpoint::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!(e.ws_url(), "ws://127.0.0.1:8080/ws");
        assert_eq!(e.path("/topics"), "/topics");
        let e = Endpoint::parse("ws://example.com/pubsub/").unwrap();
        assert_eq!(e.authority(), "example.com:80");
        assert_eq!(e.path("/topics"), "/pubsub/topics");
        assert_eq!(e.ws_url(), "ws://example.com:80/pubsub/ws");
        let e = Endpoint::parse("localhost:9000").unwrap();
        assert_eq!(e.http_url(), "http://localhost:9000");
        let e = Endpoint::parse("http://[::1]:8080").unwrap();
        assert_eq!(e.authority(), "[::1]:8080");
        assert_eq!(e.resolve().unwrap(), vec!["[::1]:8080".parse().unwrap()]);
    }

    #[test]
    fn refuses_what_it_cannot_speak() {
        for url in [
            "https://h",
            "wss://h",
            "ftp://h",
            "http://",
            "http://h:x",
            "http://h:99999",
            "http://u:p@h",
            "http://h/?a=1",
            "http://[::1",
        ] {
            assert!(Endpoint::parse(url).is_err(), "{url}");
        }
    }

    #[test]
    fn encodes_everything_but_unreserved() {
        assert_eq!(encode_segment("a-b_c.d~e"), "a-b_c.d~e");
        assert_eq!(encode_segment("a:b/c d%"), "a%3Ab%2Fc%20d%25");
        assert_eq!(encode_segment("é"), "%C3%A9");
    }
}
