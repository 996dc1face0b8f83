//! The CLI's blocking connection: a socket and the bytes read from it but
//! not yet used. Every read and write is an [`Io`] outcome and waits until a
//! deadline at most; `Io::WouldBlock` means that the deadline passed. The
//! REST client and the WebSocket client both speak through it.

use std::io;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::io::Io;

/// Bytes asked of the socket per read.
const CHUNK: usize = 16 << 10;

pub(super) struct Conn {
    stream: TcpStream,
    /// Bytes read and not used yet.
    pub buf: Vec<u8>,
}

impl Conn {
    pub fn new(stream: TcpStream) -> Conn {
        Conn {
            stream,
            buf: Vec::new(),
        }
    }

    /// Writes all of `bytes` by `deadline`: `Ok`, or the outcome that stopped it.
    pub fn send(&mut self, mut bytes: &[u8], deadline: Instant) -> Result<(), Io> {
        while !bytes.is_empty() {
            let left = time_left(deadline)?;
            if let Err(e) = self.stream.set_write_timeout(Some(left)) {
                return Err(Io::Failed(e));
            }
            match timed_out(crate::io::write(&mut self.stream, bytes)) {
                Io::Progress(n) => bytes = &bytes[n..],
                stopped => return Err(stopped),
            }
        }
        Ok(())
    }

    /// Reads once, appending to `buf`, waiting until `deadline` at most
    /// (`None`: for as long as it takes).
    pub fn fill(&mut self, deadline: Option<Instant>) -> Io {
        let timeout = match deadline.map(time_left).transpose() {
            Ok(timeout) => timeout,
            Err(passed) => return passed,
        };
        if let Err(e) = self.stream.set_read_timeout(timeout) {
            return Io::Failed(e);
        }
        let at = self.buf.len();
        self.buf.resize(at + CHUNK, 0);
        let read = timed_out(crate::io::read(&mut self.stream, &mut self.buf[at..]));
        let n = match read {
            Io::Progress(n) => n,
            _ => 0,
        };
        self.buf.truncate(at + n);
        read
    }
}

/// The time left before `deadline`, or `Io::WouldBlock` when it has passed.
fn time_left(deadline: Instant) -> Result<Duration, Io> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(Io::WouldBlock);
    }
    Ok(left)
}

/// A blocking socket reports its timeout as `WouldBlock`, or on some systems
/// as `TimedOut`: either way, the deadline passed.
fn timed_out(io: Io) -> Io {
    match io {
        Io::Failed(e) if e.kind() == io::ErrorKind::TimedOut => Io::WouldBlock,
        io => io,
    }
}
