//! Spare buffers for event frames. An event is built once and shared by its
//! topic's history and every subscriber's queue; when the last of them lets
//! go, its buffer comes back here for the next event instead of going back
//! to `malloc`, which on this path (hundreds of events built in a loop turn
//! before any is freed) takes its slow route every time. Measured: ~200
//! fewer instructions per publish at 1 → 1 (`scripts/callgrind.sh`).
//!
//! Bounded: at most [`MAX_SPARE`] buffers of at most [`MAX_CAPACITY`] bytes
//! each are kept, per thread (the server has one).
//!
//! Beside them, one buffer of a run of answers written into a connection's
//! queue (`Outbound::write`) is kept, at most [`MAX_RUN`] bytes: a run is
//! written and sent within a turn, so the next turn's run takes it, already
//! grown to a turn's worth (measured: ~190 fewer instructions per publish at
//! 1 → 1 than a fresh buffer growing each turn).

use std::cell::{Cell, RefCell};

use bytes::Bytes;

/// Buffers kept.
const MAX_SPARE: usize = 256;
/// The largest buffer kept, in bytes: bigger frames come and go through `malloc`.
const MAX_CAPACITY: usize = 1024;

/// The largest run buffer kept, in bytes.
const MAX_RUN: usize = 64 << 10;

/// The first capacity of a new run buffer.
const FIRST_RUN: usize = 4096;

thread_local! {
    static SPARE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    static RUN: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// An empty buffer for a run of written answers: the kept one, if there is one.
pub fn run() -> Vec<u8> {
    match RUN.try_with(Cell::take) {
        Ok(buf) if buf.capacity() > 0 => buf,
        _ => Vec::with_capacity(FIRST_RUN),
    }
}

/// A run buffer whose bytes were all sent, kept for the next run.
pub fn run_done(mut buf: Vec<u8>) {
    if buf.capacity() <= MAX_RUN {
        buf.clear();
        let _ = RUN.try_with(|run| run.set(buf));
    }
}

/// An empty buffer with room for `capacity` bytes, a spare one if there is
/// one. A spare more than twice as big is let go: a frame kept in a topic's
/// history holds no more than twice its size.
pub fn buffer(capacity: usize) -> Vec<u8> {
    let spare = SPARE.try_with(|spare| spare.borrow_mut().pop());
    match spare {
        Ok(Some(mut buf)) if buf.capacity() <= 2 * capacity => {
            buf.reserve(capacity);
            buf
        }
        _ => Vec::with_capacity(capacity),
    }
}

/// `buf` as shared bytes whose buffer becomes a spare once the last copy is dropped.
pub fn share(buf: Vec<u8>) -> Bytes {
    Bytes::from_owner(Recycled(buf))
}

/// How many spare buffers there are now.
#[cfg(test)]
fn spares() -> usize {
    SPARE.with(|spare| spare.borrow().len())
}

struct Recycled(Vec<u8>);

impl AsRef<[u8]> for Recycled {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Recycled {
    fn drop(&mut self) {
        let mut buf = std::mem::take(&mut self.0);
        if buf.capacity() > MAX_CAPACITY {
            return;
        }
        buf.clear();
        // Dropped while the thread ends: the buffer is simply freed.
        let _ = SPARE.try_with(|spare| {
            let mut spare = spare.borrow_mut();
            if spare.len() < MAX_SPARE {
                spare.push(buf);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_run_buffer_is_kept_and_not_a_big_one() {
        let mut buf = run();
        assert!(buf.is_empty() && buf.capacity() >= FIRST_RUN);
        buf.extend_from_slice(&[1; 5000]);
        let grown = buf.capacity();
        run_done(buf);
        let again = run();
        assert!(again.is_empty());
        assert_eq!(again.capacity(), grown);
        run_done(vec![0; MAX_RUN + 1]);
        assert_eq!(run().capacity(), FIRST_RUN);
    }

    #[test]
    fn buffers_come_back_when_the_last_copy_goes_and_no_more_than_kept() {
        let before = spares();
        let mut buf = buffer(100);
        assert!(buf.is_empty() && buf.capacity() >= 100);
        buf.extend_from_slice(b"frame");
        let frame = share(buf);
        let copy = frame.clone();
        let tail = frame.slice(2..);
        drop(frame);
        drop(copy);
        assert_eq!(spares(), before, "a copy is still held");
        assert_eq!(&tail[..], b"ame");
        drop(tail);
        assert_eq!(spares(), before + 1);
        let again = buffer(100);
        assert!(again.is_empty(), "a spare comes back empty");
        assert_eq!(spares(), before);
        drop(share(again));
        // A spare much bigger than asked for is let go.
        let small = buffer(10);
        assert!(small.capacity() < 100);
        assert_eq!(spares(), before);
        // Big buffers are not kept.
        drop(share(vec![0; MAX_CAPACITY + 1]));
        assert_eq!(spares(), before);
        // Nor more than MAX_SPARE.
        let frames: Vec<Bytes> = (0..MAX_SPARE + 10).map(|_| share(buffer(8))).collect();
        drop(frames);
        assert_eq!(spares(), MAX_SPARE);
    }
}
