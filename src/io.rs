//! One outcome for every non-blocking read and write, used by the server,
//! the CLI and the bench alike (Sōzu's `SocketResult`).

use std::io::{self, IoSlice, Read, Write};

/// What one read or write attempt did.
#[derive(Debug)]
pub enum Io {
    /// This many bytes moved (never 0).
    Progress(usize),
    /// The socket has no more to give or take now: wait for readiness.
    WouldBlock,
    /// The peer is gone: end of stream, reset, aborted or broken pipe.
    Closed,
    /// Any other failure.
    Failed(io::Error),
}

impl Io {
    /// Classifies a raw result; `Ok(0)` is the peer's end of stream.
    pub fn from_result(result: io::Result<usize>) -> Io {
        match result {
            Ok(0) => Io::Closed,
            Ok(n) => Io::Progress(n),
            Err(e) => match e.kind() {
                io::ErrorKind::WouldBlock => Io::WouldBlock,
                io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::BrokenPipe
                | io::ErrorKind::UnexpectedEof
                | io::ErrorKind::NotConnected => Io::Closed,
                _ => Io::Failed(e),
            },
        }
    }
}

/// Reads once into `buf`, retrying on `Interrupted`.
pub fn read(source: &mut impl Read, buf: &mut [u8]) -> Io {
    loop {
        match source.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            result => return Io::from_result(result),
        }
    }
}

/// Writes once from `buf`, retrying on `Interrupted`.
pub fn write(sink: &mut impl Write, buf: &[u8]) -> Io {
    loop {
        match sink.write(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            result => return Io::from_result(result),
        }
    }
}

/// One vectored write, retrying on `Interrupted`.
pub fn write_vectored(sink: &mut impl Write, bufs: &[IoSlice<'_>]) -> Io {
    loop {
        match sink.write_vectored(bufs) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            result => return Io::from_result(result),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Script(Vec<io::Result<usize>>);

    impl Read for Script {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            self.0.remove(0)
        }
    }

    #[test]
    fn outcomes_are_classified() {
        let kinds = [
            (io::ErrorKind::WouldBlock, "WouldBlock"),
            (io::ErrorKind::ConnectionReset, "Closed"),
            (io::ErrorKind::BrokenPipe, "Closed"),
            (io::ErrorKind::ConnectionAborted, "Closed"),
            (io::ErrorKind::PermissionDenied, "Failed"),
        ];
        for (kind, want) in kinds {
            let got = format!("{:?}", Io::from_result(Err(kind.into())));
            assert!(got.starts_with(want), "{kind:?} gave {got}");
        }
        assert!(matches!(Io::from_result(Ok(0)), Io::Closed));
        assert!(matches!(Io::from_result(Ok(7)), Io::Progress(7)));
    }

    #[test]
    fn interrupted_is_retried() {
        let mut s = Script(vec![Err(io::ErrorKind::Interrupted.into()), Ok(3)]);
        assert!(matches!(read(&mut s, &mut [0; 8]), Io::Progress(3)));
    }
}
