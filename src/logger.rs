//! Log lines on stderr: `2026-11-30T05:11:34.974Z [INFO] message`.
//!
//! A dozen lines instead of simplelog: the server logs a few lines (start,
//! outages, shutdown), and simplelog's formatting machinery was ~200 kB of
//! the binary's pages resident right after start (measured: idle RSS of the
//! static build 2 172 kB with it, see the README's Performance section).

use std::io::Write;

use log::{LevelFilter, Log, Metadata, Record};

use crate::clock;

struct Stderr;

impl Log for Stderr {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let stamp = clock::format_millis(clock::now_millis());
        let stamp = std::str::from_utf8(&stamp).unwrap_or("1970-01-01T00:00:00.000Z");
        // One write per line, so lines from a panic elsewhere do not interleave.
        let line = format!("{stamp} [{}] {}\n", record.level(), record.args());
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

/// Sends log lines at `level` and above to stderr (once per process).
pub fn init(level: LevelFilter) {
    if log::set_logger(&Stderr).is_ok() {
        log::set_max_level(level);
    }
}
