//! One cardinality-limited series table for every processor, in the spirit of
//! opentelemetry-rust's `ValueMap`: the series of one metric keyed by their attributes, at most
//! `cardinality_limit` of them. What a further series records goes to one series marked
//! `otel.metric.overflow=true` (docs/metrics.md), and the table logs one warning, naming the
//! processor, the metric and the limit, the first time that happens.
//!
//! Two kinds of values:
//! - [`SeriesTable`]: values recorded in user space (counts, histograms). Cumulative: they grow
//!   from the table's start. Delta: a collect forgets every series, so a series without new
//!   data in a period is not emitted, and its slot is free again.
//! - [`TotalsTable`]: running totals, set from cumulative counters the kernel keeps, or added
//!   to in user space. Every series is emitted at each collect; a delta point is the increase
//!   since the previous collect. Totals of keys past the limit are folded into the overflow
//!   series by their increase, so a key past the limit still takes one small entry (its last
//!   total) until it is retired.
//!
//! Collecting is two steps, like `collect_readonly` then `collect_and_reset`: `iter` gives what
//! the points of this collect hold (their start is [`SeriesTable::start_ns`]), then
//! `finish_collect(now)` ends the period: in delta, the next one starts at `now`.
//!
//! Retirement: [`SeriesTable::retire`] (and [`TotalsTable::retire`], or
//! [`TotalsTable::set_final`] to give the last total in the same step) marks a series whose
//! source is gone (a device, a namespace, a connection). The next collect emits it once more
//! with its final value; then it is dropped, and its slot no longer counts towards the limit.
//! A key recorded again after that begins a new series (from zero, under the table's start).
//!
//! The series live in an `FxHashMap` keyed by the processor's own key type, and `iter` walks it
//! in its order (the overflow series last): a processor that emitted in map order before keeps
//! emitting the same points in the same order.

use std::hash::Hash;
use std::num::NonZeroUsize;

use rustc_hash::FxHashMap;

use periscope_pipeline::model::{KeyValue, Temporality};
use periscope_pipeline::telemetry::{names, now_ns};

/// What the tables of one processor share.
#[derive(Clone, Debug)]
pub struct TableOptions {
    /// The processor's id, for the overflow warning.
    pub processor: String,
    /// Most series per table (the processor's `cardinality_limit`).
    pub limit: NonZeroUsize,
    /// Cumulative or delta points.
    pub temporality: Temporality,
    /// The start of the cumulative series (or of the first delta period), ns since the epoch.
    pub start_ns: u64,
}

impl TableOptions {
    /// Options for tables whose series start now.
    pub fn new(processor: &str, limit: NonZeroUsize, temporality: Temporality) -> Self {
        TableOptions {
            processor: processor.to_string(),
            limit,
            temporality,
            start_ns: now_ns(),
        }
    }
}

/// A series of a table: one of its keys, or the overflow series.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Series<'a, K> {
    /// The series of this key.
    Key(&'a K),
    /// The series of everything past the limit.
    Overflow,
}

impl<K> Clone for Series<'_, K> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<K> Copy for Series<'_, K> {}

impl<'a, K> Series<'a, K> {
    /// The series' attributes: `of_key` for a key, `otel.metric.overflow=true` alone for the
    /// overflow series.
    pub fn attributes(self, of_key: impl FnOnce(&'a K) -> Vec<KeyValue>) -> Vec<KeyValue> {
        match self {
            Series::Key(k) => of_key(k),
            Series::Overflow => overflow_attributes(),
        }
    }
}

/// The attributes of an overflow series.
pub fn overflow_attributes() -> Vec<KeyValue> {
    vec![KeyValue::new(names::ATTR_OVERFLOW, true)]
}

/// A series' value and whether its source is gone.
#[derive(Debug)]
struct Slot<V> {
    value: V,
    retired: bool,
}

/// The series of one metric, values recorded in user space (see the module docs).
#[derive(Debug)]
pub struct SeriesTable<K, V> {
    processor: String,
    metric: &'static str,
    limit: usize,
    temporality: Temporality,
    start_ns: u64,
    series: FxHashMap<K, Slot<V>>,
    overflow: Option<V>,
    /// How many series are retired (dropped at the next collect).
    retired: usize,
    warned: bool,
    /// A delta collect forgets every series; not for running totals ([`TotalsTable`]).
    forget_in_delta: bool,
}

impl<K: Eq + Hash, V> SeriesTable<K, V> {
    /// An empty table of the metric named `metric` (in the overflow warning).
    pub fn new(options: &TableOptions, metric: &'static str) -> Self {
        SeriesTable {
            processor: options.processor.clone(),
            metric,
            limit: options.limit.get(),
            temporality: options.temporality,
            start_ns: options.start_ns,
            series: FxHashMap::default(),
            overflow: None,
            retired: 0,
            warned: false,
            forget_in_delta: true,
        }
    }

    /// The value of `key`'s series, made by `make` if the series is new and there is room;
    /// past the limit, the overflow series' value (made by `make` if it has none yet).
    pub fn value(&mut self, key: K, make: impl FnOnce() -> V) -> &mut V {
        // `entry` only where a new key may be inserted: a vacant entry reserves room, and
        // growing the map at the limit would change its order.
        if self.has_room(&key) {
            return &mut self
                .series
                .entry(key)
                .or_insert_with(|| Slot {
                    value: make(),
                    retired: false,
                })
                .value;
        }
        self.warn();
        self.overflow.get_or_insert_with(make)
    }

    /// The value of `key`'s series if it has one (the fast path: no series made).
    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.series.get_mut(key).map(|s| &mut s.value)
    }

    /// Marks every series whose key matches `pred` finished (a device or namespace that went
    /// away): the next collect emits them once more, then drops them.
    pub fn retire_if(&mut self, mut pred: impl FnMut(&K) -> bool) {
        for (k, s) in self.series.iter_mut() {
            if !s.retired && pred(k) {
                s.retired = true;
                self.retired += 1;
            }
        }
    }

    /// The keys of the series held (the overflow series aside).
    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.series.keys()
    }

    /// Forgets `key`'s series at once: it is not emitted again (e.g. kernel totals now count
    /// what it counted).
    pub fn remove(&mut self, key: &K) {
        if self.series.remove(key).is_some_and(|s| s.retired) {
            self.retired -= 1;
        }
    }

    /// Marks `key`'s series finished: the next collect emits it once more, then drops it.
    pub fn retire(&mut self, key: &K) {
        if let Some(s) = self.series.get_mut(key) {
            if !s.retired {
                s.retired = true;
                self.retired += 1;
            }
        }
    }

    /// How many series the table holds, the overflow series aside.
    pub fn len(&self) -> usize {
        self.series.len()
    }

    /// Whether the table holds no series at all (nor an overflow series).
    pub fn is_empty(&self) -> bool {
        self.series.is_empty() && self.overflow.is_none()
    }

    /// The start of the points of the next collect: the start of the cumulative series, or of
    /// the current delta period.
    pub fn start_ns(&self) -> u64 {
        self.start_ns
    }

    /// The series the next collect emits, in the map's order, the overflow series last.
    pub fn iter(&self) -> impl Iterator<Item = (Series<'_, K>, &V)> {
        self.series
            .iter()
            .map(|(k, s)| (Series::Key(k), &s.value))
            .chain(self.overflow.iter().map(|v| (Series::Overflow, v)))
    }

    /// The series the next collect emits, ordered by `order` of their keys, the overflow
    /// series last.
    pub fn sorted_by_key<T: Ord>(
        &self,
        mut order: impl FnMut(&K) -> T,
    ) -> Vec<(Series<'_, K>, &V)> {
        let mut rows: Vec<_> = self.iter().collect();
        rows.sort_by_cached_key(|(s, _)| match s {
            Series::Key(k) => (false, Some(order(k))),
            Series::Overflow => (true, None),
        });
        rows
    }

    /// Every value, the overflow series' too, to change in place (e.g. a gauge that starts
    /// over at each collect).
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.series
            .values_mut()
            .map(|s| &mut s.value)
            .chain(self.overflow.iter_mut())
    }

    /// Ends a collect whose points were made from [`iter`](Self::iter): drops the retired
    /// series and, in delta, forgets every series and starts the next period at `now_ns`.
    pub fn finish_collect(&mut self, now_ns: u64) {
        if self.temporality == Temporality::Delta {
            if self.forget_in_delta {
                self.series.clear();
                self.overflow = None;
                self.retired = 0;
            }
            self.start_ns = now_ns;
        }
        if self.retired > 0 {
            self.series.retain(|_, s| !s.retired);
            self.retired = 0;
        }
    }

    /// Whether `key` has a series or may get one.
    fn has_room(&self, key: &K) -> bool {
        self.series.len() < self.limit || self.series.contains_key(key)
    }

    fn warn(&mut self) {
        if !self.warned {
            self.warned = true;
            tracing::warn!(
                processor = %self.processor,
                metric = self.metric,
                limit = self.limit,
                "cardinality limit reached; further series go to the overflow series (otel.metric.overflow=true)"
            );
        }
    }
}

/// Counts a [`TotalsTable`] keeps: one number, or several that go together (packets and
/// bytes).
pub trait Counts: Copy + Default + PartialEq {
    /// Adds `n`.
    fn add(&mut self, n: Self);
    /// How much larger `self` is than `earlier` (0 where it is not).
    fn since(self, earlier: Self) -> Self;
}

impl Counts for u64 {
    fn add(&mut self, n: Self) {
        *self = self.saturating_add(n);
    }
    fn since(self, earlier: Self) -> Self {
        self.saturating_sub(earlier)
    }
}

impl<const N: usize> Counts for [u64; N]
where
    [u64; N]: Default,
{
    fn add(&mut self, n: Self) {
        for (a, b) in self.iter_mut().zip(n) {
            a.add(b);
        }
    }
    fn since(mut self, earlier: Self) -> Self {
        for (a, b) in self.iter_mut().zip(earlier) {
            *a = a.since(b);
        }
        self
    }
}

/// A running total and what the last delta collect reported of it.
#[derive(Clone, Copy, Debug, Default)]
struct Running<C> {
    total: C,
    emitted: C,
}

impl<C: Counts> Running<C> {
    /// What a collect reports: the total, or in delta its increase since the last collect.
    fn reported(&self, delta: bool) -> C {
        if delta {
            self.total.since(self.emitted)
        } else {
            self.total
        }
    }
}

/// The series of one metric, running totals (see the module docs).
#[derive(Debug)]
pub struct TotalsTable<K, C> {
    table: SeriesTable<K, Running<C>>,
    /// Keys past the limit whose totals are set, with the total each had last: the overflow
    /// series counts what they add.
    overflowed: FxHashMap<K, C>,
}

impl<K: Eq + Hash + Clone, C: Counts> TotalsTable<K, C> {
    /// An empty table of the metric named `metric` (in the overflow warning).
    pub fn new(options: &TableOptions, metric: &'static str) -> Self {
        let mut table = SeriesTable::new(options, metric);
        table.forget_in_delta = false;
        TotalsTable {
            table,
            overflowed: FxHashMap::default(),
        }
    }

    /// Adds `n` to `key`'s total (counted in user space).
    pub fn add(&mut self, key: K, n: C) {
        self.table.value(key, Running::default).total.add(n);
    }

    /// Sets `key`'s total (a cumulative counter read from the kernel).
    pub fn set(&mut self, key: K, total: C) {
        if self.table.has_room(&key) {
            self.table.value(key, Running::default).total = total;
            return;
        }
        self.table.warn();
        let last = self.overflowed.insert(key, total).unwrap_or_default();
        self.table
            .overflow
            .get_or_insert_with(Running::default)
            .total
            .add(total.since(last));
    }

    /// Sets `key`'s last total and retires its series in one step: its source is gone, these
    /// are its final counts.
    pub fn set_final(&mut self, key: K, total: C) {
        self.set(key.clone(), total);
        self.retire(&key);
    }

    /// Marks `key`'s series finished: the next collect emits it once more, then drops it (a
    /// key past the limit leaves what it added in the overflow series).
    pub fn retire(&mut self, key: &K) {
        self.table.retire(key);
        self.overflowed.remove(key);
    }

    /// Marks every series whose key matches `pred` finished (see [`SeriesTable::retire_if`]).
    pub fn retire_if(&mut self, mut pred: impl FnMut(&K) -> bool) {
        self.table.retire_if(&mut pred);
        self.overflowed.retain(|k, _| !pred(k));
    }

    /// The keys of the series held (the overflow series aside).
    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.table.keys()
    }

    /// Whether `key` is counted: in its own series or in the overflow series.
    pub fn contains(&self, key: &K) -> bool {
        self.table.series.contains_key(key) || self.overflowed.contains_key(key)
    }

    /// How many series the table holds, the overflow series aside.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether the table holds no series at all (nor an overflow series).
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// The start of the points of the next collect.
    pub fn start_ns(&self) -> u64 {
        self.table.start_ns()
    }

    /// What the next collect emits, in the map's order: every series' total (in delta, its
    /// increase since the last collect), then the overflow series' (in delta, only if it grew).
    pub fn iter(&self) -> impl Iterator<Item = (Series<'_, K>, C)> {
        let delta = self.table.temporality == Temporality::Delta;
        self.table
            .series
            .iter()
            .map(move |(k, s)| (Series::Key(k), s.value.reported(delta)))
            .chain(self.table.overflow.iter().filter_map(move |o| {
                let v = o.reported(delta);
                (!delta || v != C::default()).then_some((Series::Overflow, v))
            }))
    }

    /// Ends a collect whose points were made from [`iter`](Self::iter): remembers what was
    /// reported, drops the retired series and, in delta, starts the next period at `now_ns`.
    pub fn finish_collect(&mut self, now_ns: u64) {
        if self.table.temporality == Temporality::Delta {
            for r in self.table.values_mut() {
                r.emitted = r.total;
            }
        }
        self.table.finish_collect(now_ns);
    }
}

#[cfg(test)]
mod tests;
