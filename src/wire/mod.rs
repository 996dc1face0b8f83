//! The bytes on the wire, one codec each, shared by the server, the CLI, the
//! bench and the tests: WebSocket frames, the WebSocket handshake and HTTP
//! responses.

pub mod client;
pub mod decoder;
pub mod frame;
pub mod handshake;
pub mod recycle;
pub mod response;

/// Splits a URL's `host[:port]` (an IPv6 host in brackets) into the host and
/// the port's text; `None` when a `[` is not closed.
pub fn split_host_port(authority: &str) -> Option<(&str, Option<&str>)> {
    if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        return Some((host, after.strip_prefix(':')));
    }
    Some(match authority.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    })
}

/// Appends the decimal digits of `n`, two at a time (measured: ~50 fewer
/// instructions per publish at 1 → 1, which writes two seqs, than one at a time).
pub fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    while n >= 100 {
        let pair = (n % 100) as usize * 2;
        n /= 100;
        i -= 2;
        digits[i..i + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
    }
    if n >= 10 {
        let pair = n as usize * 2;
        i -= 2;
        digits[i..i + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
    } else {
        i -= 1;
        digits[i] = b'0' + n as u8;
    }
    out.extend_from_slice(&digits[i..]);
}

/// "00", "01", … "99".
const PAIRS: [u8; 200] = {
    let mut pairs = [0; 200];
    let mut n = 0;
    while n < 100 {
        pairs[2 * n] = b'0' + (n / 10) as u8;
        pairs[2 * n + 1] = b'0' + (n % 10) as u8;
        n += 1;
    }
    pairs
};

#[cfg(test)]
mod tests {
    #[test]
    fn push_u64_writes_decimal_digits() {
        let mut cases = vec![0, 1, 9, 10, 11, 99, 100, 101, 999, 1000, 12345, u64::MAX];
        cases.extend((0..20).map(|p| 10u64.pow(p)));
        cases.extend((1..20).map(|p| 10u64.pow(p) - 1));
        for n in cases {
            let mut out = b"x".to_vec();
            super::push_u64(&mut out, n);
            assert_eq!(out, format!("x{n}").as_bytes());
        }
    }

    #[test]
    fn split_host_port_reads_names_ipv4_and_bracketed_ipv6() {
        use super::split_host_port as split;
        assert_eq!(split("localhost"), Some(("localhost", None)));
        assert_eq!(split("127.0.0.1:6379"), Some(("127.0.0.1", Some("6379"))));
        assert_eq!(split("[::1]:8080"), Some(("::1", Some("8080"))));
        assert_eq!(split("[::1]"), Some(("::1", None)));
        assert_eq!(split("host:"), Some(("host", Some(""))));
        assert_eq!(split("[::1"), None);
    }
}
