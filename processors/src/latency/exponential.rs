//! Base-2 exponential histogram buckets as OpenTelemetry defines them, kept exactly.
//!
//! At scale `s` the bucket boundaries are powers of `base = 2^(2^-s)`; bucket `i` holds the
//! values in `(base^i, base^(i+1)]`. Like the OpenTelemetry SDKs, a histogram starts at
//! `max_scale` and, whenever a value would need more than `max_size` buckets, lowers the scale
//! by the least amount that makes every value fit (each step down merges neighbouring bucket
//! pairs). The scale of a histogram is therefore the largest scale ≤ `max_scale` at which all
//! its values fit in `max_size` buckets. Every value is counted in its own bucket: the buckets
//! are exact, not derived from another histogram (up to floating-point rounding of the
//! logarithm for values within ~1e-15 of a boundary, as in the SDKs).

/// The lowest scale OpenTelemetry allows (buckets grow by a factor 2^1024).
pub const MIN_SCALE: i32 = -10;
/// The highest scale OpenTelemetry allows.
pub const MAX_SCALE: i32 = 20;

/// `v = frac · 2^exp` with `frac` in `[0.5, 1)`, for a finite `v > 0` (C's `frexp`).
fn frexp(v: f64) -> (f64, i32) {
    let bits = v.to_bits();
    let raw = ((bits >> 52) & 0x7ff) as i32;
    if raw == 0 {
        // Subnormal: scale into the normal range first.
        let (f, e) = frexp(v * f64::from_bits(0x43f0_0000_0000_0000)); // 2^64
        return (f, e - 64);
    }
    let frac = f64::from_bits((bits & !(0x7ff << 52)) | (1022 << 52));
    (frac, raw - 1022)
}

/// The index of the bucket holding `v > 0` at `scale`: `ceil(log2(v) · 2^scale) - 1`, exact for
/// powers of two (the OpenTelemetry Go SDK's mapping).
pub fn index(v: f64, scale: i32) -> i32 {
    let (frac, exp) = frexp(v);
    if scale <= 0 {
        // frexp's exponent is one above floor(log2 v), and two above for exact powers of two
        // (which belong to the bucket below: buckets are closed at their upper end).
        let correction = if frac == 0.5 { 2 } else { 1 };
        (exp - correction) >> -scale
    } else {
        let factor = std::f64::consts::LOG2_E * f64::from(1u32 << scale);
        (exp << scale) + (frac.ln() * factor) as i32 - 1
    }
}

/// The lower boundary of bucket `index` at `scale`: `2^(index · 2^-scale)`.
pub fn lower_boundary(index: i32, scale: i32) -> f64 {
    if scale <= 0 {
        2f64.powi(index << -scale)
    } else {
        (f64::from(index) / f64::from(1u32 << scale)).exp2()
    }
}

/// One exponential histogram of values ≥ 0 (latencies: no negative buckets).
#[derive(Clone, Debug, PartialEq)]
pub struct ExponentialHistogram {
    max_size: usize,
    max_scale: i32,
    scale: i32,
    zero_count: u64,
    /// Index of `counts[0]`.
    offset: i32,
    counts: Vec<u64>,
}

impl ExponentialHistogram {
    /// An empty histogram; `max_size` ≥ 2 buckets, `max_scale` in `MIN_SCALE..=MAX_SCALE`.
    pub fn new(max_size: usize, max_scale: i32) -> Self {
        ExponentialHistogram {
            max_size: max_size.max(2),
            max_scale: max_scale.clamp(MIN_SCALE, MAX_SCALE),
            scale: max_scale.clamp(MIN_SCALE, MAX_SCALE),
            zero_count: 0,
            offset: 0,
            counts: Vec::new(),
        }
    }

    pub fn scale(&self) -> i32 {
        self.scale
    }

    pub fn zero_count(&self) -> u64 {
        self.zero_count
    }

    /// Index of the first positive bucket.
    pub fn offset(&self) -> i32 {
        self.offset
    }

    /// Counts of the positive buckets from `offset()` on.
    pub fn counts(&self) -> &[u64] {
        &self.counts
    }

    /// Values recorded (zeros included).
    pub fn count(&self) -> u64 {
        self.zero_count + self.counts.iter().sum::<u64>()
    }

    /// Forgets every value and returns to `max_scale` (a delta period's start).
    pub fn reset(&mut self) {
        self.scale = self.max_scale;
        self.zero_count = 0;
        self.offset = 0;
        self.counts.clear();
    }

    /// Counts `v` (`v ≤ 0` and NaN count as zeros).
    pub fn record(&mut self, v: f64) {
        if v.is_nan() || v <= 0.0 {
            self.zero_count += 1;
            return;
        }
        let v = v.min(f64::MAX);
        let mut idx = index(v, self.scale);
        if self.counts.is_empty() {
            self.offset = idx;
            self.counts.push(1);
            return;
        }
        let end = self.offset + self.counts.len() as i32 - 1;
        let (mut low, mut high) = (self.offset.min(idx), end.max(idx));
        let mut change = 0;
        while (i64::from(high) - i64::from(low)) as usize >= self.max_size
            && self.scale - change > MIN_SCALE
        {
            low >>= 1;
            high >>= 1;
            change += 1;
        }
        if change > 0 {
            self.downscale(change);
            // index(v, s - c) == index(v, s) >> c for this mapping; shifting keeps the value
            // consistent with the merged buckets.
            idx >>= change;
        }
        if idx < self.offset {
            let grow = (self.offset - idx) as usize;
            self.counts.splice(0..0, std::iter::repeat_n(0, grow));
            self.offset = idx;
        }
        let pos = (idx - self.offset) as usize;
        if pos >= self.counts.len() {
            self.counts.resize(pos + 1, 0);
        }
        self.counts[pos] += 1;
    }

    /// Lowers the scale by `change`, merging buckets.
    fn downscale(&mut self, change: i32) {
        self.scale -= change;
        if self.counts.is_empty() {
            return;
        }
        let new_offset = self.offset >> change;
        let end = self.offset + self.counts.len() as i32 - 1;
        let mut merged = vec![0u64; ((end >> change) - new_offset + 1) as usize];
        for (i, c) in self.counts.iter().enumerate() {
            let idx = (self.offset + i as i32) >> change;
            merged[(idx - new_offset) as usize] += c;
        }
        self.offset = new_offset;
        self.counts = merged;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny deterministic generator (xorshift64*), so that failures reproduce.
    pub(crate) struct Rng(pub u64);
    impl Rng {
        pub fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        /// Uniform in [0, 1).
        pub fn unit(&mut self) -> f64 {
            (self.next() >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    #[test]
    fn frexp_matches_the_definition() {
        for v in [
            1.0,
            0.5,
            3.0,
            1e-9,
            123456.789,
            f64::MIN_POSITIVE / 8.0,
            f64::MAX,
        ] {
            let (f, e) = frexp(v);
            assert!((0.5..1.0).contains(&f), "{v}: frac {f}");
            // (Scaled by 2^100 so that subnormal inputs do not underflow the check.)
            assert_eq!(f * 2f64.powi(e + 100), v * 2f64.powi(100), "{v}");
        }
    }

    #[test]
    fn powers_of_two_close_their_bucket() {
        // Buckets are (base^i, base^(i+1)]: 2^k is the upper end of bucket (k << scale) - 1.
        for scale in MIN_SCALE..=MAX_SCALE {
            for k in [-30, -10, -1, 0, 1, 7, 30] {
                let v = 2f64.powi(k);
                let want = if scale >= 0 {
                    (k << scale) - 1
                } else {
                    // floor((k·2^scale) - ε) for the exact power: (k - 1) >> -scale.
                    (k - 1) >> -scale
                };
                assert_eq!(index(v, scale), want, "2^{k} at scale {scale}");
            }
        }
    }

    #[test]
    fn index_of_boundaries_and_just_above() {
        for scale in [-3, -1, 0, 1, 3, 8, 12, 20] {
            for i in [-40, -7, -1, 0, 1, 5, 33] {
                let lower = lower_boundary(i, scale);
                // The boundary itself closes bucket i-1; a value a hair above opens bucket i.
                let above = lower * (1.0 + 1e-12);
                let below = lower * (1.0 - 1e-12);
                assert_eq!(index(above, scale), i, "above base^{i} at scale {scale}");
                assert_eq!(
                    index(below, scale),
                    i - 1,
                    "below base^{i} at scale {scale}"
                );
                // Mid-bucket (geometric middle).
                let mid = (lower * lower_boundary(i + 1, scale)).sqrt();
                assert_eq!(
                    index(mid, scale),
                    i,
                    "middle of bucket {i} at scale {scale}"
                );
            }
        }
        // A few hand-checked values: scale 1 has base √2.
        assert_eq!(index(1.5, 1), 1); // (√2, 2]
        assert_eq!(index(1.2, 1), 0); // (1, √2]
        assert_eq!(index(3.0, 0), 1); // (2, 4]
        assert_eq!(index(3.0, -1), 0); // (1, 4]
        assert_eq!(index(0.020, 0), -6); // (1/64, 1/32]
    }

    /// The largest scale ≤ max_scale at which [min, max] fits in max_size buckets, by search.
    fn reference_scale(values: &[f64], max_size: usize, max_scale: i32) -> i32 {
        let positive: Vec<f64> = values.iter().copied().filter(|v| *v > 0.0).collect();
        if positive.is_empty() {
            return max_scale;
        }
        let lo = positive.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = positive.iter().copied().fold(0.0, f64::max);
        (MIN_SCALE..=max_scale)
            .rev()
            .find(|&s| ((index(hi, s) - index(lo, s)) as usize) < max_size)
            .unwrap_or(MIN_SCALE)
    }

    #[test]
    fn scale_is_the_largest_that_fits_max_size() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for round in 0..300 {
            let max_size = [2, 4, 20, 160][round % 4];
            let max_scale = [20, 8, 3, 0, -2][round % 5];
            // Latency-like values spanning 1 µs … 10 s, in random spreads.
            let spread = rng.unit() * 7.0;
            let base = 1e-6 * 10f64.powf(rng.unit() * 3.0);
            let n = 1 + (rng.next() % 200) as usize;
            let values: Vec<f64> = (0..n)
                .map(|_| base * 10f64.powf(rng.unit() * spread))
                .collect();
            let mut h = ExponentialHistogram::new(max_size, max_scale);
            for v in &values {
                h.record(*v);
            }
            let want = reference_scale(&values, max_size, max_scale);
            assert_eq!(
                h.scale(),
                want,
                "round {round}: max_size {max_size}, max_scale {max_scale}"
            );
            assert!(h.counts().len() <= max_size);
            assert_eq!(h.count(), n as u64);
            // Every value is counted in the bucket its index names at the final scale.
            let mut exact = vec![0u64; h.counts().len()];
            for v in &values {
                exact[(index(*v, h.scale()) - h.offset()) as usize] += 1;
            }
            assert_eq!(h.counts(), &exact[..], "round {round}");
        }
    }

    #[test]
    fn known_distribution_counts() {
        // 1, 2, 3, 4, 5, 6, 7, 8 at scale 0 (buckets (2^i, 2^(i+1)]):
        // 1 → bucket -1, 2 → 0, 3 and 4 → 1, 5..8 → 2.
        let mut h = ExponentialHistogram::new(160, 0);
        for v in 1..=8 {
            h.record(f64::from(v));
        }
        assert_eq!(
            (h.scale(), h.offset(), h.counts()),
            (0, -1, &[1, 1, 2, 4][..])
        );
        // The same with max_size 2: scale -2 (buckets (16^i, 16^(i+1)]): 1 → -1, 2..8 → 0.
        let mut h = ExponentialHistogram::new(2, 0);
        for v in 1..=8 {
            h.record(f64::from(v));
        }
        assert_eq!((h.scale(), h.offset(), h.counts()), (-2, -1, &[1, 7][..]));
        // 20 ms ± 1 ms at max_scale 20, max_size 160: the scale is the largest at which
        // (0.019, 0.021] spans ≤ 160 buckets: log2(21/19) · 2^s < ~160 → s = 10.
        let mut h = ExponentialHistogram::new(160, 20);
        for i in 0..=200 {
            h.record(0.019 + f64::from(i) * 1e-5);
        }
        assert_eq!(h.scale(), 10);
        assert_eq!(h.count(), 201);
    }

    #[test]
    fn zeros_go_to_the_zero_count() {
        let mut h = ExponentialHistogram::new(160, 20);
        h.record(0.0);
        h.record(0.0);
        h.record(0.25);
        assert_eq!(h.zero_count(), 2);
        assert_eq!(h.count(), 3);
        assert_eq!(h.counts(), &[1]);
        assert_eq!(h.offset(), index(0.25, 20));
        h.reset();
        assert_eq!((h.count(), h.scale(), h.counts().len()), (0, 20, 0));
    }

    #[test]
    fn downscale_merges_pairs_like_the_sdk() {
        // The Go SDK's example: offset -6, counts 3,1,2,...,10, downscaled by 2 →
        // offset -2, counts 4, 14, 30, 10.
        let mut h = ExponentialHistogram::new(160, 5);
        h.offset = -6;
        h.counts = vec![3, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
        h.downscale(2);
        assert_eq!(
            (h.scale, h.offset, &h.counts[..]),
            (3, -2, &[4, 14, 30, 10][..])
        );
    }
}
