//! Wall-clock stamps for server messages: RFC 3339, UTC, milliseconds.

use std::time::{SystemTime, UNIX_EPOCH};

/// Length of a stamp such as `2025-08-25T10:00:00.123Z`.
pub const STAMP_LEN: usize = 24;

/// A formatted stamp, cached per millisecond: a burst of publishes in the same
/// millisecond formats the time once.
#[derive(Default)]
pub struct Clock {
    last_ms: u64,
    stamp: [u8; STAMP_LEN],
}

impl Clock {
    /// The current time as an RFC 3339 stamp.
    pub fn now(&mut self) -> &str {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        self.at(ms)
    }

    /// The stamp of `ms` milliseconds since the Unix epoch.
    pub fn at(&mut self, ms: u64) -> &str {
        if ms != self.last_ms || self.stamp[0] == 0 {
            self.stamp = format_millis(ms);
            self.last_ms = ms;
        }
        // The stamp holds ASCII digits and punctuation only.
        std::str::from_utf8(&self.stamp).unwrap_or("1970-01-01T00:00:00.000Z")
    }
}

/// Formats milliseconds since the Unix epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn format_millis(ms: u64) -> [u8; STAMP_LEN] {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    let mut out = *b"0000-00-00T00:00:00.000Z";
    put(&mut out[0..4], year as u64);
    put(&mut out[5..7], month as u64);
    put(&mut out[8..10], day as u64);
    put(&mut out[11..13], rem / 3600);
    put(&mut out[14..16], rem % 3600 / 60);
    put(&mut out[17..19], rem % 60);
    put(&mut out[20..23], ms % 1000);
    out
}

fn put(dst: &mut [u8], mut n: u64) {
    for b in dst.iter_mut().rev() {
        *b = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// Howard Hinnant's days-to-civil algorithm (proleptic Gregorian calendar).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::OffsetDateTime;

    #[test]
    fn matches_the_time_crate() {
        let mut clock = Clock::default();
        for ms in [
            0u64,
            951_782_400_123,     // 2000-02-29
            1_756_116_000_123,   // 2025-08-25T10:00:00.123Z
            4_102_444_799_999,   // 2099-12-31T23:59:59.999Z
            1_709_251_199_000,   // 2024-02-29T23:59:59Z
            253_402_300_799_999, // 9999-12-31
        ] {
            let t = OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000).unwrap();
            let want = format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
                t.year(),
                t.month() as u8,
                t.day(),
                t.hour(),
                t.minute(),
                t.second(),
                t.millisecond()
            );
            assert_eq!(clock.at(ms), want);
        }
        assert_eq!(clock.at(1_756_116_000_123), "2025-08-25T10:00:00.123Z");
    }
}
