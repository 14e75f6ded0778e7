//! Tests of the series tables: the limit and its overflow series, the one warning, cumulative
//! and delta collects, kernel totals, and retirement.

use super::*;
use crate::testing::{overflow_warnings, warnings};

fn options(limit: usize, temporality: Temporality) -> TableOptions {
    TableOptions {
        processor: "test/x".into(),
        limit: NonZeroUsize::new(limit).expect("a limit of at least 1"),
        temporality,
        start_ns: 100,
    }
}

/// What a collect emits, as (key, or `None` for the overflow series; value), sorted.
fn sorted<'a, V>(rows: impl Iterator<Item = (Series<'a, u32>, V)>) -> Vec<(Option<u32>, V)> {
    let mut r: Vec<_> = rows
        .map(|(s, v)| {
            let key = match s {
                Series::Key(k) => Some(*k),
                Series::Overflow => None,
            };
            (key, v)
        })
        .collect();
    r.sort_by_key(|(k, _)| k.map_or(u32::MAX, |k| k));
    r
}

fn rows<V: Copy>(t: &SeriesTable<u32, V>) -> Vec<(Option<u32>, V)> {
    sorted(t.iter().map(|(s, v)| (s, *v)))
}

fn totals<C: Counts>(t: &TotalsTable<u32, C>) -> Vec<(Option<u32>, C)> {
    sorted(t.iter())
}

#[test]
fn series_past_the_limit_go_to_one_overflow_series_with_one_warning() {
    let (t, logged) = warnings(|| {
        let mut t: SeriesTable<u32, u64> =
            SeriesTable::new(&options(2, Temporality::Cumulative), "m");
        for key in [1, 2, 3, 4, 1, 5] {
            *t.value(key, || 0) += 10;
        }
        t
    });
    assert_eq!(
        rows(&t),
        [(Some(1), 20), (Some(2), 10), (None, 30)],
        "2 series and the rest in the overflow series"
    );
    assert_eq!(t.len(), 2);
    assert_eq!(overflow_warnings(&logged), 1, "{logged:?}");
    let line = &logged[0];
    assert!(
        line.contains("test/x") && line.contains("limit=2"),
        "{line}"
    );
}

#[test]
fn cumulative_keeps_values_and_its_start() {
    let mut t: SeriesTable<u32, u64> = SeriesTable::new(&options(4, Temporality::Cumulative), "m");
    *t.value(1, || 0) += 1;
    t.finish_collect(200);
    assert_eq!(t.start_ns(), 100);
    *t.value(1, || 0) += 1;
    assert_eq!(rows(&t), [(Some(1), 2)]);
}

#[test]
fn delta_forgets_every_series_and_moves_its_start() {
    let mut t: SeriesTable<u32, u64> = SeriesTable::new(&options(1, Temporality::Delta), "m");
    *t.value(1, || 0) += 1;
    *t.value(2, || 0) += 5;
    assert_eq!(rows(&t), [(Some(1), 1), (None, 5)]);
    t.finish_collect(200);
    assert_eq!(t.start_ns(), 200);
    assert!(t.is_empty(), "a series without new data is not emitted");
    // The slot is free again.
    *t.value(2, || 0) += 3;
    assert_eq!(rows(&t), [(Some(2), 3)]);
}

#[test]
fn a_retired_series_is_emitted_once_more_then_dropped_and_frees_its_slot() {
    let (t, logged) = warnings(|| {
        let mut t: SeriesTable<u32, u64> =
            SeriesTable::new(&options(1, Temporality::Cumulative), "m");
        *t.value(1, || 0) += 7;
        t.retire(&1);
        assert_eq!(rows(&t), [(Some(1), 7)], "emitted once more");
        t.finish_collect(200);
        assert!(t.is_empty(), "then gone");
        *t.value(2, || 0) += 1;
        t
    });
    assert_eq!(rows(&t), [(Some(2), 1)], "its slot went to a new series");
    assert_eq!(overflow_warnings(&logged), 0);
}

#[test]
fn removed_series_are_not_emitted() {
    let mut t: SeriesTable<u32, u64> = SeriesTable::new(&options(1, Temporality::Cumulative), "m");
    *t.value(1, || 0) += 1;
    t.retire(&1);
    t.remove(&1);
    t.finish_collect(200);
    *t.value(2, || 0) += 1;
    assert_eq!(rows(&t), [(Some(2), 1)]);
}

#[test]
fn sorted_rows_put_the_overflow_series_last() {
    let mut t: SeriesTable<u32, u64> = SeriesTable::new(&options(3, Temporality::Cumulative), "m");
    for key in [9, 3, 5, 1] {
        *t.value(key, || 0) += 1;
    }
    let order: Vec<Option<u32>> = t
        .sorted_by_key(|k| *k)
        .into_iter()
        .map(|(s, _)| match s {
            Series::Key(k) => Some(*k),
            Series::Overflow => None,
        })
        .collect();
    assert_eq!(order, [Some(3), Some(5), Some(9), None]);
}

#[test]
fn kernel_totals_are_reported_whole_or_by_their_increase() {
    let mut cumulative: TotalsTable<u32, [u64; 2]> =
        TotalsTable::new(&options(4, Temporality::Cumulative), "m");
    let mut delta: TotalsTable<u32, [u64; 2]> =
        TotalsTable::new(&options(4, Temporality::Delta), "m");
    for t in [&mut cumulative, &mut delta] {
        t.set(1, [10, 1000]);
        t.set(1, [12, 1200]);
    }
    assert_eq!(totals(&cumulative), [(Some(1), [12, 1200])]);
    assert_eq!(totals(&delta), [(Some(1), [12, 1200])]);
    cumulative.finish_collect(200);
    delta.finish_collect(200);
    assert_eq!(delta.start_ns(), 200);
    assert_eq!(cumulative.start_ns(), 100);
    // Nothing new: the delta series is still emitted, with 0.
    assert_eq!(totals(&delta), [(Some(1), [0, 0])]);
    for t in [&mut cumulative, &mut delta] {
        t.set(1, [15, 1500]);
    }
    assert_eq!(totals(&cumulative), [(Some(1), [15, 1500])]);
    assert_eq!(totals(&delta), [(Some(1), [3, 300])]);
}

#[test]
fn kernel_totals_past_the_limit_add_their_increase_to_the_overflow_series() {
    let (t, logged) = warnings(|| {
        let mut t: TotalsTable<u32, u64> = TotalsTable::new(&options(1, Temporality::Delta), "m");
        t.set(1, 5);
        t.set(2, 10);
        t.set(3, 20);
        assert!(t.contains(&3), "counted in the overflow series");
        assert_eq!(totals(&t), [(Some(1), 5), (None, 30)]);
        t.finish_collect(200);
        t.set(2, 14);
        t.set(3, 20);
        t
    });
    assert_eq!(
        totals(&t),
        [(Some(1), 0), (None, 4)],
        "only what they added"
    );
    assert_eq!(overflow_warnings(&logged), 1, "{logged:?}");
}

#[test]
fn an_overflow_series_that_did_not_grow_is_left_out_of_a_delta_collect() {
    let mut t: TotalsTable<u32, u64> = TotalsTable::new(&options(1, Temporality::Delta), "m");
    t.add(1, 1);
    t.add(2, 1);
    t.add(3, 1);
    assert_eq!(totals(&t), [(Some(1), 1), (None, 2)]);
    t.finish_collect(200);
    t.add(1, 1);
    assert_eq!(totals(&t), [(Some(1), 1)]);
}

#[test]
fn final_totals_are_emitted_once_then_the_series_is_gone() {
    let mut t: TotalsTable<u32, u64> = TotalsTable::new(&options(1, Temporality::Delta), "m");
    t.set(1, 10);
    assert_eq!(totals(&t), [(Some(1), 10)]);
    t.finish_collect(200);
    // The device is gone; these are its last counts.
    t.set_final(1, 15);
    assert_eq!(totals(&t), [(Some(1), 5)], "the last increase");
    t.finish_collect(300);
    assert!(t.is_empty());
    assert!(!t.contains(&1));
    // The slot is free: a new device gets its own series, from its own total.
    t.set(2, 3);
    assert_eq!(totals(&t), [(Some(2), 3)]);
}

#[test]
fn a_retired_key_past_the_limit_keeps_what_it_added_in_the_overflow_series() {
    let mut t: TotalsTable<u32, u64> = TotalsTable::new(&options(1, Temporality::Cumulative), "m");
    t.set(1, 1);
    t.set(2, 10);
    t.set_final(2, 12);
    assert!(!t.contains(&2));
    t.finish_collect(200);
    assert_eq!(totals(&t), [(Some(1), 1), (None, 12)]);
    // Back again: a new source, counted from its own total.
    t.set(2, 4);
    assert_eq!(totals(&t), [(Some(1), 1), (None, 16)]);
}
