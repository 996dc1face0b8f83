//! The one WebSocket frame codec (RFC 6455 §5): unmasked server frames built
//! in place (the server), masked client frames (the CLI, the bench and the
//! tests), and a parser of either kind (every reader). Every frame header is
//! written by [`write_header`].

use bytes::Bytes;

use crate::refusal::Refusal;

/// Close codes that end a connection cleanly (RFC 6455 §7.4.1).
pub const CLOSE_NORMAL: u16 = 1000;
pub const CLOSE_GOING_AWAY: u16 = 1001;

pub const CONTINUATION: u8 = 0x0;
pub const TEXT: u8 = 0x1;
pub const BINARY: u8 = 0x2;
pub const CLOSE: u8 = 0x8;
pub const PING: u8 = 0x9;
pub const PONG: u8 = 0xA;

/// The FIN bit of a frame's first byte.
pub const FIN: u8 = 0x80;

/// The longest header: two bytes, a 64-bit length and a masking key.
pub const MAX_HEADER: usize = 14;

/// A frame header, as it goes on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    bytes: [u8; MAX_HEADER],
    len: usize,
}

impl std::ops::Deref for Header {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// The header of a frame whose first byte is `first` (FIN and opcode) and whose
/// payload is `len` bytes, masked with `mask` when given.
pub fn header(first: u8, len: usize, mask: Option<[u8; 4]>) -> Header {
    let mut bytes = [0; MAX_HEADER];
    let n = header_len(len, mask.is_some());
    write_header(&mut bytes[..n], first, len, mask);
    Header { bytes, len: n }
}

/// Bytes of the header of a `len`-byte payload: the length takes the shortest
/// of its three forms (7, 16 or 64 bits), and a mask 4 more.
#[inline]
pub fn header_len(len: usize, masked: bool) -> usize {
    let base = match len {
        0..=125 => 2,
        126..=65535 => 4,
        _ => 10,
    };
    if masked { base + 4 } else { base }
}

/// Writes a header into `dst`, which is exactly [`header_len`] bytes: the one
/// place a frame header is written. Every copy has a fixed size, so the server
/// pays no `memcpy` call per frame.
#[inline]
pub fn write_header(dst: &mut [u8], first: u8, len: usize, mask: Option<[u8; 4]>) {
    dst[0] = first;
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    let at = match len {
        0..=125 => {
            dst[1] = mask_bit | len as u8;
            2
        }
        126..=65535 => {
            dst[1] = mask_bit | 126;
            dst[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            4
        }
        _ => {
            dst[1] = mask_bit | 127;
            dst[2..10].copy_from_slice(&(len as u64).to_be_bytes());
            10
        }
    };
    if let Some(mask) = mask {
        dst[at..at + 4].copy_from_slice(&mask);
    }
}

// ---- server frames: unmasked ----

/// Room kept in front of a server frame's payload for its largest header.
const HEADER_ROOM: usize = 10;

/// Builds one server-to-client frame in a single buffer: the JSON is written
/// after reserved header room, and the header is filled in at the end.
pub struct FrameBuilder {
    buf: Vec<u8>,
    /// Whether the buffer is a spare, and goes back to the spares after use.
    recycled: bool,
}

impl FrameBuilder {
    pub fn with_capacity(payload: usize) -> Self {
        Self::in_buffer(Vec::with_capacity(HEADER_ROOM + payload), false)
    }

    /// A builder in a spare buffer ([`super::recycle`]), for an event frame.
    pub fn recycled(payload: usize) -> Self {
        Self::in_buffer(super::recycle::buffer(HEADER_ROOM + payload), true)
    }

    fn in_buffer(mut buf: Vec<u8>, recycled: bool) -> Self {
        buf.extend_from_slice(&[0; HEADER_ROOM]);
        FrameBuilder { buf, recycled }
    }

    /// The payload written so far; append JSON to it.
    pub fn payload(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// A final text frame (FIN, opcode 1, unmasked).
    pub fn text(self) -> Bytes {
        self.finish(FIN | TEXT)
    }

    fn finish(mut self, first: u8) -> Bytes {
        let len = self.buf.len() - HEADER_ROOM;
        let start = HEADER_ROOM - header_len(len, false);
        write_header(&mut self.buf[start..HEADER_ROOM], first, len, None);
        let frame = if self.recycled {
            super::recycle::share(self.buf)
        } else {
            Bytes::from(self.buf)
        };
        frame.slice(start..)
    }
}

/// Appends a final, unmasked text frame to `out`, its payload appended by
/// `write`: built in place, without a buffer of its own.
pub fn append_text(out: &mut Vec<u8>, write: impl FnOnce(&mut Vec<u8>)) {
    // Room for the header of a payload under 126 bytes, the usual answer.
    const ROOM: usize = 2;
    let start = out.len();
    out.extend_from_slice(&[0; ROOM]);
    write(out);
    let len = out.len() - start - ROOM;
    let n = header_len(len, false);
    if n > ROOM {
        // A longer payload: move it to make room for its longer header.
        let end = out.len();
        out.resize(end + n - ROOM, 0);
        out.copy_within(start + ROOM..end, start + n);
    }
    write_header(&mut out[start..start + n], FIN | TEXT, len, None);
}

/// A final, unmasked text frame holding `text`.
pub fn text_frame(text: &[u8]) -> Bytes {
    let mut frame = FrameBuilder::with_capacity(text.len());
    frame.payload().extend_from_slice(text);
    frame.text()
}

/// A close frame with a status code and a short reason (at most 123 bytes).
pub fn close_frame(code: u16, reason: &str) -> Bytes {
    let mut frame = FrameBuilder::with_capacity(2 + reason.len().min(123));
    push_close_payload(frame.payload(), code, reason);
    frame.finish(FIN | CLOSE)
}

/// Appends a close frame's payload: the code, then the reason cut to 123
/// bytes at a character boundary, so that the frame stays a control frame.
fn push_close_payload(out: &mut Vec<u8>, code: u16, reason: &str) {
    let mut reason_len = reason.len().min(123);
    while !reason.is_char_boundary(reason_len) {
        reason_len -= 1;
    }
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(&reason.as_bytes()[..reason_len]);
}

/// The close frame of a refusal that closes a WebSocket: its code and reason.
pub fn refusal_close(why: &Refusal) -> Option<Bytes> {
    why.close_code()
        .map(|code| close_frame(code, why.close_reason()))
}

/// A pong frame answering a ping that held `data` (at most 125 bytes).
pub fn pong_frame(data: &[u8]) -> Bytes {
    let mut frame = FrameBuilder::with_capacity(data.len());
    frame.payload().extend_from_slice(data);
    frame.finish(FIN | PONG)
}

/// An empty ping frame.
pub fn ping_frame() -> Bytes {
    Bytes::from_static(&[FIN | PING, 0x00])
}

// ---- client frames: masked ----

/// Appends one masked, final frame (RFC 6455 §5.3: clients must mask).
pub fn write_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8], mask: [u8; 4]) {
    out.extend_from_slice(&header(FIN | opcode, payload.len(), Some(mask)));
    let start = out.len();
    out.extend_from_slice(payload);
    let _ = apply_mask(&mut out[start..], mask);
}

/// Appends a masked close frame: empty, or with a code and a reason.
pub fn write_close(out: &mut Vec<u8>, close: Option<(u16, &str)>, mask: [u8; 4]) {
    let mut payload = Vec::new();
    if let Some((code, reason)) = close {
        push_close_payload(&mut payload, code, reason);
    }
    write_frame(out, CLOSE, &payload, mask);
}

/// A client's masking keys, a fresh one per frame (xorshift32). RFC 6455
/// §10.3 wants keys that a page's script cannot predict; these clients run
/// no one else's code, so a cheap generator will do.
#[derive(Clone, Debug)]
pub struct Masks(u32);

impl Masks {
    pub fn new(seed: u32) -> Masks {
        // Never zero: xorshift would stay there.
        Masks(seed | 1)
    }

    pub fn next_key(&mut self) -> [u8; 4] {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 17;
        self.0 ^= self.0 << 5;
        self.0.to_le_bytes()
    }
}

/// Masks or unmasks `payload` in place (the operation is its own inverse).
/// Returns whether every byte it leaves is ASCII (below 0x80), which the
/// server's reader uses to skip a second pass of UTF-8 validation.
pub fn apply_mask(payload: &mut [u8], mask: [u8; 4]) -> bool {
    // Eight bytes at a time (the server unmasks every client frame): in
    // memory order, so the word's bytes meet the mask's bytes in turn.
    let m = u64::from(u32::from_ne_bytes(mask));
    let wide = m | m << 32;
    // The bits of every byte left, OR-ed together.
    let mut seen = 0;
    let mut words = payload.chunks_exact_mut(8);
    for word in &mut words {
        let mut w = [0; 8];
        w.copy_from_slice(word);
        let unmasked = u64::from_ne_bytes(w) ^ wide;
        seen |= unmasked;
        word.copy_from_slice(&unmasked.to_ne_bytes());
    }
    for (i, b) in words.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i & 3];
        seen |= u64::from(*b);
    }
    seen & 0x8080_8080_8080_8080 == 0
}

// ---- parsing either kind ----

#[derive(Debug, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    pub opcode: u8,
    /// Where the payload (still masked, if `mask` is set) lies in the buffer.
    pub payload: std::ops::Range<usize>,
    pub mask: Option<[u8; 4]>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A whole frame, and the bytes it took.
    Frame(Frame, usize),
    /// More bytes are needed.
    Partial,
    Invalid(&'static str),
}

/// Parses the frame at the start of `buf`, refusing any over `max` bytes.
pub fn parse_frame(buf: &[u8], max: usize) -> Parsed {
    if buf.len() < 2 {
        return Parsed::Partial;
    }
    let fin = buf[0] & FIN != 0;
    let opcode = buf[0] & 0x0F;
    let masked = buf[1] & 0x80 != 0;
    let (len, mut at) = match buf[1] & 0x7F {
        126 if buf.len() < 4 => return Parsed::Partial,
        126 => (u16::from_be_bytes([buf[2], buf[3]]) as u64, 4),
        127 if buf.len() < 10 => return Parsed::Partial,
        127 => {
            let mut b = [0; 8];
            b.copy_from_slice(&buf[2..10]);
            (u64::from_be_bytes(b), 10)
        }
        n => (n as u64, 2),
    };
    if len > max as u64 {
        return Parsed::Invalid("frame larger than --max-frame");
    }
    let mask = if masked {
        if buf.len() < at + 4 {
            return Parsed::Partial;
        }
        let m = [buf[at], buf[at + 1], buf[at + 2], buf[at + 3]];
        at += 4;
        Some(m)
    } else {
        None
    };
    let end = at + len as usize;
    if buf.len() < end {
        return Parsed::Partial;
    }
    Parsed::Frame(
        Frame {
            fin,
            opcode,
            payload: at..end,
            mask,
        },
        end,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unmask(buf: &[u8]) -> (Frame, Vec<u8>) {
        let Parsed::Frame(frame, used) = parse_frame(buf, 1 << 20) else {
            panic!("not a frame")
        };
        assert_eq!(used, buf.len());
        let mask = frame.mask.expect("client frames are masked");
        let mut payload = buf[frame.payload.clone()].to_vec();
        apply_mask(&mut payload, mask);
        (frame, payload)
    }

    #[test]
    fn frame_headers_by_length() {
        assert_eq!(&text_frame(b"{}")[..], &[0x81, 2, b'{', b'}']);
        let f = text_frame(&[b'a'; 200]);
        assert_eq!(&f[..4], &[0x81, 126, 0, 200]);
        assert_eq!(f.len(), 204);
        let f = text_frame(&vec![b'a'; 70_000]);
        assert_eq!(f[1], 127);
        assert_eq!(u64::from_be_bytes(f[2..10].try_into().unwrap()), 70_000);
        assert_eq!(f.len(), 70_010);
        assert_eq!(
            &close_frame(1008, "slow")[..],
            &[0x88, 6, 0x03, 0xF0, b's', b'l', b'o', b'w']
        );
        assert_eq!(&ping_frame()[..], &[0x89, 0]);
    }

    #[test]
    fn frames_appended_in_place_are_the_frames_built_alone() {
        let mut out = b"before".to_vec();
        let mut want = out.clone();
        for len in [0, 1, 125, 126, 127, 200, 65535, 65536, 70_000] {
            let text = vec![b'x'; len];
            append_text(&mut out, |o| o.extend_from_slice(&text));
            want.extend_from_slice(&text_frame(&text));
            assert_eq!(out, want, "{len}");
        }
    }

    #[test]
    fn server_frames_parse_back_unmasked() {
        for len in [0, 125, 126, 65535, 65536] {
            let text = vec![b'x'; len];
            let f = text_frame(&text);
            let Parsed::Frame(frame, used) = parse_frame(&f, 1 << 20) else {
                panic!("length {len}: not a frame")
            };
            assert_eq!(used, f.len());
            assert_eq!((frame.fin, frame.opcode, frame.mask), (true, TEXT, None));
            assert_eq!(&f[frame.payload], &text[..]);
        }
        // A long reason is cut at a character boundary within 123 bytes.
        let f = close_frame(1001, &"é".repeat(100));
        assert_eq!(f[1], 2 + 122);
    }

    #[test]
    fn client_frames_round_trip_at_every_length_form() {
        for len in [0, 1, 125, 126, 65535, 65536, 70000] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut out = Vec::new();
            write_frame(&mut out, TEXT, &payload, [1, 2, 3, 4]);
            let (frame, got) = unmask(&out);
            assert!(frame.fin);
            assert_eq!(frame.opcode, TEXT);
            assert_eq!(got, payload, "length {len}");
            for cut in [1, out.len() / 2, out.len() - 1] {
                assert!(matches!(parse_frame(&out[..cut], 1 << 20), Parsed::Partial));
            }
        }
        let mut out = Vec::new();
        write_frame(&mut out, TEXT, &[0; 200], [0; 4]);
        assert!(matches!(parse_frame(&out, 100), Parsed::Invalid(_)));
    }

    #[test]
    fn client_close_frames_are_the_server_close_frames_masked() {
        for (code, reason) in [(1000, ""), (1001, "going away"), (4000, &*"é".repeat(100))] {
            let mut out = Vec::new();
            write_close(&mut out, Some((code, reason)), [9, 8, 7, 6]);
            let server = close_frame(code, reason);
            let (frame, payload) = unmask(&out);
            assert_eq!((frame.fin, frame.opcode), (true, CLOSE));
            assert_eq!(payload, server[2..]);
        }
        let mut out = Vec::new();
        write_close(&mut out, None, [1, 2, 3, 4]);
        assert_eq!(out, [FIN | CLOSE, 0x80, 1, 2, 3, 4]);
    }

    #[test]
    fn masks_change_with_every_frame() {
        let mut masks = Masks::new(0);
        let (a, b) = (masks.next_key(), masks.next_key());
        assert_ne!(a, b);
        assert_ne!(a, [0; 4]);
    }
}
