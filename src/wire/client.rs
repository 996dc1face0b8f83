//! The clients' reader of server WebSocket messages (RFC 6455 §5–6), shared
//! by the CLI and the bench. Server frames are unmasked, so a message that
//! came in one frame is handed on as a slice of the caller's buffer, with no
//! copy and no UTF-8 pass (the bench reads millions of them; the CLI checks
//! its text itself). Fragments are put together, though the server never
//! sends any: another server may. Each violation is named as tungstenite's
//! client named it. No I/O.

use super::frame::{self, Parsed};

/// What the server sent.
#[derive(Debug, PartialEq, Eq)]
pub enum Message<'a> {
    /// A text message's bytes, not checked for UTF-8.
    Text(&'a [u8]),
    Binary,
    /// A ping: answer with a pong holding the same bytes.
    Ping(&'a [u8]),
    Pong,
    /// A close frame, with its code and reason when it has them.
    Close(Option<(u16, &'a str)>),
}

/// A frame or a message over the size limit.
pub const TOO_BIG: &str = "Message too long";

/// One connection's reading state between frames.
#[derive(Debug, Default)]
pub struct Reader {
    /// A fragmented message being put together: whether it is text, and its bytes.
    partial: Option<(bool, Vec<u8>)>,
    /// The last message put together from fragments, until the next call.
    done: Vec<u8>,
}

impl Reader {
    /// Reads the next message at the start of `buf`. `Ok(None)`: more bytes
    /// are needed. Otherwise the message (`None` for a fragment that does not
    /// complete one) and the bytes it took.
    #[allow(clippy::type_complexity)]
    pub fn next<'b>(
        &'b mut self,
        buf: &'b [u8],
        max: usize,
    ) -> Result<Option<(Option<Message<'b>>, usize)>, &'static str> {
        let (f, used) = match frame::parse_frame(buf, max) {
            Parsed::Partial => return Ok(None),
            Parsed::Invalid(_) => return Err(TOO_BIG),
            Parsed::Frame(f, used) => (f, used),
        };
        if buf[0] & 0x70 != 0 {
            return Err("Reserved bits are non-zero");
        }
        if f.mask.is_some() {
            return Err("Received a masked frame from server");
        }
        let payload = &buf[f.payload];
        let control = f.opcode & 0x8 != 0;
        if control && !f.fin {
            return Err("Fragmented control frame");
        }
        if control && payload.len() > 125 {
            return Err("Control frame too big (payload must be 125 bytes or less)");
        }
        let message = match f.opcode {
            frame::CLOSE => match super::decoder::close(payload) {
                Ok(close) => Message::Close(close),
                Err(_) => return Err("Invalid close sequence"),
            },
            frame::PING => Message::Ping(payload),
            frame::PONG => Message::Pong,
            frame::TEXT | frame::BINARY if self.partial.is_some() => {
                return Err("While waiting for more fragments received a new message");
            }
            frame::TEXT | frame::BINARY if !f.fin => {
                self.partial = Some((f.opcode == frame::TEXT, payload.to_vec()));
                return Ok(Some((None, used)));
            }
            frame::TEXT => Message::Text(payload),
            frame::BINARY => Message::Binary,
            frame::CONTINUATION => {
                let Some((_, data)) = self.partial.as_mut() else {
                    return Err("Continue frame but nothing to continue");
                };
                if data.len() + payload.len() > max {
                    return Err(TOO_BIG);
                }
                data.extend_from_slice(payload);
                if !f.fin {
                    return Ok(Some((None, used)));
                }
                let (text, data) = self.partial.take().unwrap_or_default();
                self.done = data;
                if text {
                    Message::Text(&self.done)
                } else {
                    Message::Binary
                }
            }
            _ => return Err("Unknown frame type"),
        };
        Ok(Some((Some(message), used)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 1000;

    fn unmasked(first: u8, payload: &[u8]) -> Vec<u8> {
        [&frame::header(first, payload.len(), None)[..], payload].concat()
    }

    /// Every message in `bytes`, which must hold whole frames only, or the
    /// violation that stopped it.
    fn read_all(mut bytes: &[u8]) -> Result<Vec<String>, &'static str> {
        let mut reader = Reader::default();
        let mut got = Vec::new();
        while !bytes.is_empty() {
            let (m, used) = reader.next(bytes, MAX)?.expect("a whole frame");
            got.extend(m.map(|m| format!("{m:?}")));
            bytes = &bytes[used..];
        }
        Ok(got)
    }

    #[test]
    fn reads_server_frames_whole_and_in_fragments() {
        let mut bytes = frame::text_frame(b"{}").to_vec();
        bytes.extend(frame::ping_frame());
        bytes.extend(unmasked(0x01, b"ab"));
        bytes.extend(frame::pong_frame(b""));
        bytes.extend(unmasked(0x00, b"cd"));
        bytes.extend(unmasked(0x80, b"e"));
        bytes.extend(unmasked(0x02, &[0xff]));
        bytes.extend(unmasked(0x80, &[0xfe]));
        bytes.extend(frame::close_frame(1001, "bye"));
        bytes.extend(unmasked(0x88, b""));
        let text = |s: &str| format!("{:?}", Message::Text(s.as_bytes()));
        assert_eq!(
            read_all(&bytes).unwrap(),
            [
                text("{}"),
                "Ping([])".to_string(),
                "Pong".to_string(),
                text("abcde"),
                "Binary".to_string(),
                "Close(Some((1001, \"bye\")))".to_string(),
                "Close(None)".to_string(),
            ]
        );
        // Cut anywhere: more bytes are needed, nothing is taken.
        let whole = frame::text_frame(&[b'x'; 300]);
        for cut in 0..whole.len() {
            assert_eq!(Reader::default().next(&whole[..cut], MAX), Ok(None));
        }
    }

    #[test]
    fn names_each_violation() {
        let mut masked = Vec::new();
        frame::write_frame(&mut masked, frame::TEXT, b"x", [1, 2, 3, 4]);
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (masked, "masked"),
            (unmasked(0xC1, b"x"), "Reserved bits"),
            (unmasked(0x83, b"x"), "Unknown"),
            (unmasked(0x8B, b"x"), "Unknown"),
            (unmasked(0x09, b"x"), "Fragmented control"),
            (unmasked(0x89, &[b'x'; 126]), "Control frame too big"),
            (unmasked(0x88, &[3]), "Invalid close"),
            (unmasked(0x80, b"x"), "nothing to continue"),
            (
                [unmasked(0x01, b"x"), unmasked(0x81, b"y")].concat(),
                "new message",
            ),
            (unmasked(0x81, &[b'x'; MAX + 1]), TOO_BIG),
            (
                [unmasked(0x01, &[b'x'; 600]), unmasked(0x80, &[b'x'; 600])].concat(),
                TOO_BIG,
            ),
        ];
        for (bytes, want) in cases {
            let got = read_all(&bytes).unwrap_err();
            assert!(got.contains(want), "{bytes:x?}: {got}");
        }
    }
}
