//! A log-linear latency histogram: fixed memory, under 1 % error, O(1) record.

/// Values below this are kept exactly; above, 64 buckets per power of two.
const EXACT: u64 = 128;
const PER_OCTAVE: usize = 64;
const BUCKETS: usize = EXACT as usize + (64 - 7) * PER_OCTAVE;

pub struct Histogram {
    counts: Box<[u64]>,
    total: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; BUCKETS].into_boxed_slice(),
            total: 0,
            max: 0,
        }
    }
}

fn bucket_of(v: u64) -> usize {
    if v < EXACT {
        return v as usize;
    }
    let octave = 63 - v.leading_zeros() as usize; // ≥ 7
    let mantissa = (v >> (octave - 6)) as usize; // in 64..128
    EXACT as usize + (octave - 7) * PER_OCTAVE + (mantissa - 64)
}

/// The largest value that lands in bucket `b`.
fn upper_bound(b: usize) -> u64 {
    if b < EXACT as usize {
        return b as u64;
    }
    let octave = (b - EXACT as usize) / PER_OCTAVE + 7;
    let mantissa = ((b - EXACT as usize) % PER_OCTAVE + 64) as u64;
    let shift = octave - 6;
    // The top bucket's bound is 2^64 - 1: compute it wider.
    ((((mantissa + 1) as u128) << shift) - 1).min(u64::MAX as u128) as u64
}

impl Histogram {
    pub fn record(&mut self, v: u64) {
        self.counts[bucket_of(v)] += 1;
        self.total += 1;
        self.max = self.max.max(v);
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    /// The value at quantile `q` (0..=1), rounded up to its bucket's bound
    /// (and never above the largest value seen); 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (b, &n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return upper_bound(b).min(self.max);
            }
        }
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_every_value_in_order() {
        let mut last = 0;
        for v in (0..100_000u64).chain([u64::MAX / 3, u64::MAX]) {
            let b = bucket_of(v);
            assert!(b >= last && b < BUCKETS, "{v}");
            assert!(upper_bound(b) >= v, "{v} above its bucket's bound");
            last = b;
        }
    }

    #[test]
    fn quantiles_are_within_two_percent() {
        let mut h = Histogram::default();
        for v in 1..=10_000u64 {
            h.record(v * 10);
        }
        for (q, exact) in [(0.5, 50_000.0), (0.9, 90_000.0), (0.99, 99_000.0)] {
            let got = h.quantile(q) as f64;
            assert!((got - exact).abs() / exact < 0.02, "q{q}: {got}");
        }
        assert_eq!(h.quantile(1.0), 100_000);
        assert_eq!(h.max(), 100_000);
        assert_eq!(h.count(), 10_000);
        assert_eq!(Histogram::default().quantile(0.5), 0);
    }
}
