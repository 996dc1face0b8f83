//! The bytes on the wire, one codec each, shared by the server, the CLI, the
//! bench and the tests: WebSocket frames and HTTP responses.

pub mod decoder;
pub mod frame;
pub mod response;

/// Appends the decimal digits of `n`.
pub fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}
