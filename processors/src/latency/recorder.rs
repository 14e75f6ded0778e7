//! What one latency series records: an hdrhistogram (explicit buckets, quantiles), optional
//! exact exponential buckets, and exact count, sum, min and max.

use hdrhistogram::Histogram;

use periscope_pipeline::model::{
    ExponentialBuckets, ExponentialHistogramPoint, HistogramPoint, KeyValue,
};

use super::exponential::ExponentialHistogram;

/// Largest value an hdrhistogram records (1 hour, in ns); larger ones are recorded as this.
const HDR_MAX_NS: u64 = 3_600_000_000_000;

/// One series: every sample of one metric for one attribute set (since the series started,
/// or since the last delta point).
#[derive(Clone, Debug)]
pub struct Recorder {
    hdr: Histogram<u64>,
    exp: Option<ExponentialHistogram>,
    count: u64,
    sum_ns: u128,
    min_ns: u64,
    max_ns: u64,
}

impl Recorder {
    /// A series recording with `significant_figures` (1–5) and, with `exponential`
    /// `(max_size, max_scale)`, exact exponential buckets.
    pub fn new(significant_figures: u8, exponential: Option<(usize, i32)>) -> Self {
        Recorder {
            hdr: Histogram::new(significant_figures.clamp(1, 5))
                .expect("1 to 5 significant figures are valid"),
            exp: exponential.map(|(size, scale)| ExponentialHistogram::new(size, scale)),
            count: 0,
            sum_ns: 0,
            min_ns: u64::MAX,
            max_ns: 0,
        }
    }

    /// Records one sample of `ns` nanoseconds.
    pub fn record(&mut self, ns: u64) {
        // Auto-resizing: recording can only fail past u64 limits, which the clamp excludes.
        let _ = self.hdr.record(ns.min(HDR_MAX_NS));
        if let Some(e) = &mut self.exp {
            e.record(ns as f64 * 1e-9);
        }
        self.count += 1;
        self.sum_ns += u128::from(ns);
        self.min_ns = self.min_ns.min(ns);
        self.max_ns = self.max_ns.max(ns);
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// Smallest sample, seconds (0 without samples).
    pub fn min(&self) -> f64 {
        self.min_max().0.unwrap_or(0.0)
    }

    /// Largest sample, seconds (0 without samples).
    pub fn max(&self) -> f64 {
        self.min_max().1.unwrap_or(0.0)
    }

    /// Sum of the samples, seconds.
    pub fn sum(&self) -> f64 {
        self.sum_ns as f64 * 1e-9
    }

    /// The value at quantile `q` (0–1), seconds, from the hdrhistogram: the highest value
    /// equivalent to the sample of rank ⌈q·count⌉, so within 10^-significant_figures (relative)
    /// above the exact quantile.
    pub fn quantile(&self, q: f64) -> f64 {
        self.hdr.value_at_quantile(q) as f64 * 1e-9
    }

    /// Explicit bucket counts for `bounds` (seconds; bucket i holds (bounds[i-1], bounds[i]],
    /// the last one everything above), from the hdrhistogram: each of its cells is counted at
    /// its lowest equivalent value, so a sample within the hdrhistogram's precision above a
    /// bound may be counted in the bucket below it.
    pub fn explicit_counts(&self, bounds: &[f64]) -> Vec<u64> {
        let mut counts = vec![0u64; bounds.len() + 1];
        for v in self.hdr.iter_recorded() {
            let secs = self.hdr.lowest_equivalent(v.value_iterated_to()) as f64 * 1e-9;
            counts[bounds.partition_point(|b| *b < secs)] += v.count_at_value();
        }
        counts
    }

    /// The exact exponential buckets, when they are on.
    pub(crate) fn exponential(&self) -> Option<&ExponentialHistogram> {
        self.exp.as_ref()
    }

    /// Smallest and largest sample, seconds (none without samples).
    pub(crate) fn min_max(&self) -> (Option<f64>, Option<f64>) {
        if self.count == 0 {
            (None, None)
        } else {
            (
                Some(self.min_ns as f64 * 1e-9),
                Some(self.max_ns as f64 * 1e-9),
            )
        }
    }

    /// The series' points: explicit buckets at `bounds` (when given), and the exponential
    /// buckets (when on), with exact count, sum, min and max.
    pub(crate) fn points(
        &self,
        attributes: Vec<KeyValue>,
        start_time_ns: u64,
        time_ns: u64,
        bounds: Option<&[f64]>,
    ) -> (Option<HistogramPoint>, Option<ExponentialHistogramPoint>) {
        let (min, max) = self.min_max();
        let explicit = bounds.map(|bounds| HistogramPoint {
            attributes: attributes.clone(),
            start_time_ns,
            time_ns,
            count: self.count(),
            sum: Some(self.sum()),
            min,
            max,
            explicit_bounds: bounds.to_vec(),
            bucket_counts: self.explicit_counts(bounds),
        });
        let exponential = self.exponential().map(|e| ExponentialHistogramPoint {
            attributes,
            start_time_ns,
            time_ns,
            count: self.count(),
            sum: Some(self.sum()),
            min,
            max,
            scale: e.scale(),
            zero_count: e.zero_count(),
            positive: ExponentialBuckets {
                offset: e.offset(),
                bucket_counts: e.counts().to_vec(),
            },
            negative: ExponentialBuckets::default(),
        });
        (explicit, exponential)
    }
}

#[cfg(test)]
mod tests;
