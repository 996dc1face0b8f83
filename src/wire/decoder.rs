//! The server's reader of client WebSocket messages (RFC 6455 §5–6): frames
//! are parsed and unmasked in place in the caller's buffer, so a message that
//! came in one frame is handed on without a copy or an allocation. Fragments
//! are put together, control frames checked, and every violation named as the
//! close code it earns. No I/O.
//!
//! It replaced tungstenite's reader on the server, with the same checks in the
//! same order (frame size on the header, then masking, reserved bits,
//! opcodes, control frame rules, fragmentation, message size, UTF-8):
//! `scripts/callgrind.sh` at 1 subscriber went from 8 347 to 6 700
//! instructions per publish, and an idle WebSocket no longer holds a
//! tungstenite context and its read buffer.

use super::frame::{self, Parsed};
use crate::refusal::Refusal;

/// What a client sent.
#[derive(Debug, PartialEq, Eq)]
pub enum Message<'a> {
    Text(&'a str),
    Binary,
    /// A ping: answer with a pong holding the same bytes.
    Ping(&'a [u8]),
    Pong,
    /// A close frame, with its code and reason when it has them.
    Close(Option<(u16, &'a str)>),
}

/// Why a connection must be closed.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Violation {
    /// A frame or a message over the size limit (1009).
    TooBig,
    /// Invalid UTF-8 in a text message or a close reason (1007).
    Utf8,
    /// Anything else against RFC 6455 (1002).
    Protocol,
}

/// One connection's reading state between frames.
#[derive(Debug, Default)]
pub struct Decoder {
    /// A fragmented message being put together.
    partial: Option<Box<Partial>>,
    /// The last message put together from fragments, until the next call.
    done: Option<Box<Partial>>,
}

#[derive(Debug)]
struct Partial {
    text: bool,
    data: Vec<u8>,
    /// Bytes of `data` known to be valid UTF-8 (a character may be cut at the end).
    valid: usize,
}

impl Partial {
    /// Checks the UTF-8 of what was added: invalid only if it can never become valid.
    fn check(&mut self) -> Result<(), Violation> {
        if !self.text {
            return Ok(());
        }
        match std::str::from_utf8(&self.data[self.valid..]) {
            Ok(_) => self.valid = self.data.len(),
            Err(e) if e.error_len().is_none() => self.valid += e.valid_up_to(),
            Err(_) => return Err(Violation::Utf8),
        }
        Ok(())
    }
}

impl Decoder {
    /// Reads the next message at the start of `buf`, unmasking it in place.
    /// `Ok(None)`: more bytes are needed. Otherwise the message (`None` for a
    /// fragment that does not complete one) and the bytes it took.
    #[allow(clippy::type_complexity)]
    pub fn next<'b>(
        &'b mut self,
        buf: &'b mut [u8],
        max: usize,
    ) -> Result<Option<(Option<Message<'b>>, usize)>, Violation> {
        self.done = None;
        let (f, used) = match frame::parse_frame(buf, max) {
            Parsed::Partial => return Ok(None),
            Parsed::Invalid(_) => return Err(Violation::TooBig),
            Parsed::Frame(f, used) => (f, used),
        };
        let Some(mask) = f.mask else {
            return Err(Violation::Protocol);
        };
        if buf[0] & 0x70 != 0 {
            return Err(Violation::Protocol);
        }
        let payload = &mut buf[f.payload];
        let ascii = frame::apply_mask(payload, mask);
        let payload = &*payload;
        let message = match f.opcode {
            frame::CLOSE | frame::PING | frame::PONG if !f.fin || payload.len() > 125 => {
                return Err(Violation::Protocol);
            }
            frame::CLOSE => Some(Message::Close(close(payload)?)),
            frame::PING => Some(Message::Ping(payload)),
            frame::PONG => Some(Message::Pong),
            frame::CONTINUATION => {
                let Some(partial) = self.partial.as_mut() else {
                    return Err(Violation::Protocol);
                };
                if partial.data.len() + payload.len() > max {
                    return Err(Violation::TooBig);
                }
                partial.data.extend_from_slice(payload);
                partial.check()?;
                if !f.fin {
                    return Ok(Some((None, used)));
                }
                let done = self
                    .done
                    .insert(self.partial.take().ok_or(Violation::Protocol)?);
                Some(if done.text {
                    if done.valid != done.data.len() {
                        return Err(Violation::Utf8);
                    }
                    Message::Text(std::str::from_utf8(&done.data).map_err(|_| Violation::Utf8)?)
                } else {
                    Message::Binary
                })
            }
            frame::TEXT | frame::BINARY if self.partial.is_some() => {
                return Err(Violation::Protocol);
            }
            frame::TEXT | frame::BINARY if !f.fin => {
                let mut partial = Box::new(Partial {
                    text: f.opcode == frame::TEXT,
                    data: payload.to_vec(),
                    valid: 0,
                });
                partial.check()?;
                self.partial = Some(partial);
                None
            }
            frame::TEXT => Some(Message::Text(text(payload, ascii)?)),
            frame::BINARY => Some(Message::Binary),
            _ => return Err(Violation::Protocol),
        };
        Ok(Some((message, used)))
    }
}

/// A text frame's payload as text; `ascii` when unmasking found every byte
/// below 0x80 (measured: ~200 fewer instructions per publish at 1 → 1 than
/// validating the bench's 230-byte publish again).
fn text(payload: &[u8], ascii: bool) -> Result<&str, Violation> {
    if ascii {
        debug_assert!(payload.is_ascii());
        // SAFETY: ASCII is valid UTF-8, and `apply_mask` saw every byte below 0x80.
        return Ok(unsafe { std::str::from_utf8_unchecked(payload) });
    }
    std::str::from_utf8(payload).map_err(|_| Violation::Utf8)
}

/// A close frame's code and reason (the server's reader and the clients').
pub fn close(payload: &[u8]) -> Result<Option<(u16, &str)>, Violation> {
    match payload {
        [] => Ok(None),
        [_] => Err(Violation::Protocol),
        [hi, lo, reason @ ..] => {
            let reason = std::str::from_utf8(reason).map_err(|_| Violation::Utf8)?;
            Ok(Some((u16::from_be_bytes([*hi, *lo]), reason)))
        }
    }
}

/// The close frame answering a client's close (see [`close_answer`]).
pub fn close_reply(close: Option<(u16, &str)>) -> bytes::Bytes {
    match close_answer(close) {
        None => bytes::Bytes::from_static(&[frame::FIN | frame::CLOSE, 0]),
        Some((code, reason)) => frame::close_frame(code, reason),
    }
}

/// What answers a peer's close, on either side: its code and reason echoed,
/// or [`Refusal::UnsendableCloseCode`] (1002) for a code an endpoint may not
/// send (RFC 6455 §7.4), as tungstenite answered.
pub fn close_answer(close: Option<(u16, &str)>) -> Option<(u16, &str)> {
    match close {
        Some((code, _)) if !sendable(code) => {
            let why = Refusal::UnsendableCloseCode;
            why.close_code().map(|code| (code, why.close_reason()))
        }
        close => close,
    }
}

fn sendable(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1013 | 3000..=4999)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 1000;

    fn masked(first: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&frame::header(first, payload.len(), Some([1, 2, 3, 4])));
        let at = out.len();
        out.extend_from_slice(payload);
        frame::apply_mask(&mut out[at..], [1, 2, 3, 4]);
        out
    }

    /// Every message in `bytes`, or the violation that stopped it.
    fn read_all(bytes: &[u8]) -> Result<Vec<String>, Violation> {
        let mut buf = bytes.to_vec();
        let mut d = Decoder::default();
        let (mut at, mut got) = (0, Vec::new());
        while let Some((m, used)) = d.next(&mut buf[at..], MAX)? {
            at += used;
            got.extend(m.map(|m| format!("{m:?}")));
        }
        assert_eq!(at, bytes.len(), "bytes left over");
        Ok(got)
    }

    #[test]
    fn reads_messages_whole_and_in_fragments() {
        let mut bytes = masked(0x81, b"{\"type\":\"ping\"}");
        bytes.extend(masked(0x89, b"hi"));
        bytes.extend(masked(0x01, "caf\u{e9} ".as_bytes()[..4].as_ref()));
        bytes.extend(masked(0x8A, b""));
        bytes.extend(masked(0x00, &"caf\u{e9} ".as_bytes()[4..]));
        bytes.extend(masked(0x80, b"!"));
        bytes.extend(masked(0x82, &[0xff]));
        bytes.extend(masked(0x88, &[0x03, 0xe8, b'o', b'k']));
        bytes.extend(masked(0x88, &[]));
        assert_eq!(
            read_all(&bytes).unwrap(),
            [
                r#"Text("{\"type\":\"ping\"}")"#,
                "Ping([104, 105])",
                "Pong",
                "Text(\"café !\")",
                "Binary",
                "Close(Some((1000, \"ok\")))",
                "Close(None)",
            ]
        );
        // Cut anywhere: more bytes are needed, nothing is taken.
        let whole = masked(0x81, &[b'x'; 300]);
        for cut in 0..whole.len() {
            let mut buf = whole[..cut].to_vec();
            assert_eq!(Decoder::default().next(&mut buf, MAX), Ok(None));
        }
    }

    #[test]
    fn names_each_violation() {
        let cases: Vec<(Vec<u8>, Violation)> = vec![
            // Unmasked.
            (vec![0x81, 0x01, b'x'], Violation::Protocol),
            // Reserved bits, reserved opcodes.
            (masked(0xC1, b"x"), Violation::Protocol),
            (masked(0x83, b"x"), Violation::Protocol),
            (masked(0x8B, b"x"), Violation::Protocol),
            // Control frames: fragmented, too long; a close of one byte.
            (masked(0x09, b"x"), Violation::Protocol),
            (masked(0x89, &[b'x'; 126]), Violation::Protocol),
            (masked(0x88, &[3]), Violation::Protocol),
            // Continuation first; a new message inside a fragmented one.
            (masked(0x80, b"x"), Violation::Protocol),
            (
                [masked(0x01, b"x"), masked(0x81, b"y")].concat(),
                Violation::Protocol,
            ),
            (
                [masked(0x02, b"x"), masked(0x82, b"y")].concat(),
                Violation::Protocol,
            ),
            // Size: a frame's header, or fragments adding up.
            (masked(0x81, &[b'x'; MAX + 1]), Violation::TooBig),
            (
                vec![0x81, 0xFF, 0x7f, 0, 0, 0, 0, 0, 0, 0],
                Violation::TooBig,
            ),
            (
                [masked(0x01, &[b'x'; 600]), masked(0x80, &[b'x'; 600])].concat(),
                Violation::TooBig,
            ),
            // UTF-8: whole, in a fragment, cut at the end, in a close reason.
            (masked(0x81, b"\xff"), Violation::Utf8),
            (masked(0x01, b"a\xffb"), Violation::Utf8),
            (
                [masked(0x01, b"a"), masked(0x80, b"\xc3")].concat(),
                Violation::Utf8,
            ),
            (masked(0x88, b"\x03\xe8\xff"), Violation::Utf8),
        ];
        for (bytes, want) in cases {
            assert_eq!(read_all(&bytes), Err(want), "{bytes:x?}");
        }
    }

    /// Whole text frames skip UTF-8 validation when unmasking saw only
    /// ASCII: a byte of 0x80 or more anywhere, in the eight-byte steps or the
    /// tail, still gets the frame validated (and refused when invalid).
    #[test]
    fn non_ascii_anywhere_in_a_text_frame_is_validated() {
        for len in 1..40 {
            for at in 0..len {
                let mut text = vec![b'a'; len];
                text[at] = 0xff;
                assert_eq!(read_all(&masked(0x81, &text)), Err(Violation::Utf8));
                text[at] = 0x80;
                assert_eq!(read_all(&masked(0x81, &text)), Err(Violation::Utf8));
                // Valid: a two-byte character.
                let mut text = vec![b'a'; len + 1];
                text[at..at + 2].copy_from_slice("é".as_bytes());
                let want = format!("{:?}", Message::Text(std::str::from_utf8(&text).unwrap()));
                assert_eq!(read_all(&masked(0x81, &text)), Ok(vec![want]));
            }
            let text = vec![b'\x7f'; len];
            assert!(read_all(&masked(0x81, &text)).is_ok());
        }
    }

    #[test]
    fn unmasking_tells_whether_every_byte_is_ascii() {
        for len in 0..40 {
            let mut bytes = vec![0x7f; len];
            assert!(frame::apply_mask(&mut bytes, [0; 4]));
            for at in 0..len {
                let mut bytes = vec![0x7f; len];
                bytes[at] = 0x80;
                assert!(!frame::apply_mask(&mut bytes, [0; 4]), "{len} {at}");
            }
            // Masked: the bytes after unmasking are what counts.
            let mask = [0x80, 0, 0x80, 0];
            let mut bytes = vec![b'a'; len];
            frame::apply_mask(&mut bytes, mask);
            assert!(frame::apply_mask(&mut bytes, mask));
            assert_eq!(bytes, vec![b'a'; len]);
        }
    }

    #[test]
    fn close_replies_echo_or_refuse_the_code() {
        assert_eq!(&close_reply(None)[..], &[0x88, 0]);
        assert_eq!(
            &close_reply(Some((1000, "bye")))[..],
            &frame::close_frame(1000, "bye")[..]
        );
        assert_eq!(
            &close_reply(Some((4001, "")))[..],
            &frame::close_frame(4001, "")[..]
        );
        for code in [0, 999, 1004, 1005, 1006, 1014, 1015, 1016, 2999, 5000] {
            assert_eq!(
                &close_reply(Some((code, "x")))[..],
                &frame::close_frame(1002, "Protocol violation")[..],
                "{code}"
            );
        }
    }
}
