//! Tests of a latency series' recorder: explicit buckets and quantiles within the
//! hdrhistogram's precision, exponential buckets exact.

use super::super::exponential;
use super::super::DEFAULT_BOUNDARIES;
use super::*;
use crate::testing::Rng;

#[test]
fn explicit_buckets_are_within_the_hdr_precision_of_exact() {
    let mut rng = Rng(42);
    for sf in [1u8, 2, 3] {
        let mut r = Recorder::new(sf, None);
        let mut values: Vec<u64> = (0..5000).map(|_| rng.latency_ns()).collect();
        // Exact hits on bounds too.
        values.extend([1_000_000, 10_000_000, 250_000]);
        for v in &values {
            r.record(*v);
        }
        let bounds = DEFAULT_BOUNDARIES;
        let counts = r.explicit_counts(&bounds);
        assert_eq!(counts.iter().sum::<u64>(), values.len() as u64);
        let eps = 10f64.powi(-i32::from(sf));
        let le = |x: f64| values.iter().filter(|v| (**v as f64) * 1e-9 <= x).count() as u64;
        let mut cum = 0;
        for (i, b) in bounds.iter().enumerate() {
            cum += counts[i];
            assert!(
                le(b * (1.0 - eps)) <= cum && cum <= le(b * (1.0 + eps)),
                "sf {sf}, ≤ {b}: hdr {cum}, exact {} (± {eps})",
                le(*b)
            );
        }
    }
}

#[test]
fn quantiles_are_within_the_configured_precision() {
    // Property: for random inputs the hdrhistogram's quantiles lie within 10^-sf (relative)
    // above the exact quantile (the sample of rank ⌈q·n⌉).
    let mut rng = Rng(7);
    for round in 0..60 {
        let sf = 1 + (round % 3) as u8;
        let n = 1 + (rng.next() % 3000) as usize;
        let mut values: Vec<u64> = (0..n).map(|_| rng.latency_ns()).collect();
        let mut r = Recorder::new(sf, Some((160, 20)));
        for v in &values {
            r.record(*v);
        }
        values.sort_unstable();
        let eps = 10f64.powi(-i32::from(sf));
        for q in [0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999, 1.0] {
            let rank = ((q * n as f64).ceil() as usize).max(1);
            let exact = values[rank - 1] as f64 * 1e-9;
            let got = r.quantile(q);
            assert!(
                got >= exact * (1.0 - 1e-12) && got <= exact * (1.0 + eps) + 1e-9,
                "round {round} (sf {sf}, n {n}) q {q}: hdr {got}, exact {exact}"
            );
        }
    }
}

#[test]
fn exponential_counts_match_an_exact_recount() {
    let mut rng = Rng(99);
    let mut r = Recorder::new(2, Some((20, 20)));
    let mut values = Vec::new();
    for _ in 0..1000 {
        let ns = rng.latency_ns();
        values.push(ns as f64 * 1e-9);
        r.record(ns);
    }
    r.record(0);
    let e = r.exponential().unwrap();
    assert_eq!(e.zero_count(), 1);
    let mut want = vec![0u64; e.counts().len()];
    for v in &values {
        want[(exponential::index(*v, e.scale()) - e.offset()) as usize] += 1;
    }
    assert_eq!(e.counts(), &want[..]);
    assert_eq!(r.count(), 1001);
}
