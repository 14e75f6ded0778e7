//! Order statistics of what tests measured.

/// The middle value (the upper one of an even count); NaN when there is none.
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The value at quantile `q` (0..=1), nearest rank; panics when `v` is empty.
pub fn percentile<T: Ord + Copy>(v: &mut [T], q: f64) -> T {
    assert!(!v.is_empty(), "a percentile of nothing");
    v.sort();
    v[((v.len() - 1) as f64 * q).round() as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_percentiles() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 3.0);
        assert!(median(&mut []).is_nan());
        let mut v = [5, 1, 4, 2, 3];
        assert_eq!(percentile(&mut v, 0.5), 3);
        assert_eq!(percentile(&mut v, 0.99), 5);
        assert_eq!(percentile(&mut v, 0.0), 1);
    }
}
