//! The bpf(2) commands that reading the shared per-CPU tables needs and aya 0.14 does not
//! offer: batched lookups of a whole table (`BPF_MAP_LOOKUP_BATCH`, kernel 5.6; a few calls
//! instead of two per key, which was most of a counters read with a hundred namespaces),
//! falling back to one `BPF_MAP_GET_NEXT_KEY` + `BPF_MAP_LOOKUP_ELEM` per key where the
//! batch command is not supported.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use crate::shared::ebpf::DevCounters;

/// A per-CPU value whose CPUs' copies add up to one.
pub(super) trait PerCpuValue: Copy + Default {
    fn add(&mut self, other: &Self);
}

impl PerCpuValue for DevCounters {
    fn add(&mut self, other: &Self) {
        DevCounters::add(self, other)
    }
}

/// The kernel's ENOTSUPP (not in libc): a command a map type does not implement.
const ENOTSUPP: i32 = 524;

const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

/// Entries asked for per batch call (a hash bucket larger than that is retried with more).
const BATCH: usize = 4096;

/// `union bpf_attr` for the element commands.
#[repr(C)]
#[derive(Default)]
struct ElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value_or_next_key: u64,
    flags: u64,
}

/// `union bpf_attr` for the batch commands.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<()> {
    // SAFETY: `attr` is a properly laid out, initialized `union bpf_attr` prefix of
    // size_of::<T>() bytes; every pointer in it is to a live buffer of the size the command
    // writes (checked by the callers).
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            size_of::<T>() as libc::c_uint,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn possible_cpus() -> io::Result<usize> {
    aya::util::nr_cpus().map_err(|(_, e)| e)
}

/// Reads whole tables of keys `K` and per-CPU values `V` (each a multiple of 8 bytes, as the
/// kernel lays out per-CPU values), reusing its buffers.
pub(super) struct TableReader<K, V> {
    cpus: usize,
    keys: Vec<K>,
    values: Vec<V>,
    /// `Some(false)` once the kernel refused the batch command: per key from then on.
    batch_works: Option<bool>,
}

impl<K: Copy + Default, V: PerCpuValue> TableReader<K, V> {
    /// Calls `f` with every entry of the table and its value summed over the CPUs; returns
    /// whether batched lookups were used. `f` may delete the entry it is given.
    pub(super) fn read_all(
        &mut self,
        map: BorrowedFd<'_>,
        f: &mut dyn FnMut(&K, &V),
    ) -> io::Result<bool> {
        self.read_per_cpu(map, &mut |k, per_cpu| f(k, &sum(per_cpu)))
    }
}

impl<K: Copy + Default, V: Copy + Default> TableReader<K, V> {
    pub(super) fn new() -> io::Result<TableReader<K, V>> {
        Ok(TableReader {
            cpus: possible_cpus()?,
            keys: Vec::new(),
            values: Vec::new(),
            batch_works: None,
        })
    }

    /// Calls `f` with every entry of the table and its value on each possible CPU; returns
    /// whether batched lookups were used. `f` may delete the entry it is given.
    pub(super) fn read_per_cpu(
        &mut self,
        map: BorrowedFd<'_>,
        f: &mut dyn FnMut(&K, &[V]),
    ) -> io::Result<bool> {
        if self.batch_works != Some(false) {
            match self.read_batched(map, f) {
                Ok(()) => {
                    self.batch_works = Some(true);
                    return Ok(true);
                }
                Err(e)
                    if self.batch_works.is_none()
                        && matches!(
                            e.raw_os_error(),
                            Some(libc::EINVAL | libc::EOPNOTSUPP | libc::ENOSYS | ENOTSUPP)
                        ) =>
                {
                    tracing::info!("BPF_MAP_LOOKUP_BATCH unsupported ({e}): reading per key");
                    self.batch_works = Some(false);
                }
                Err(e) => return Err(e),
            }
        }
        self.read_per_key(map, f)?;
        Ok(false)
    }

    fn read_batched(&mut self, map: BorrowedFd<'_>, f: &mut dyn FnMut(&K, &[V])) -> io::Result<()> {
        let mut capacity = BATCH;
        let mut token: u32 = 0;
        let mut first = true;
        loop {
            self.keys.resize(capacity, K::default());
            self.values.resize(capacity * self.cpus, V::default());
            let mut next: u32 = 0;
            let mut attr = BatchAttr {
                in_batch: if first {
                    0
                } else {
                    &token as *const u32 as u64
                },
                out_batch: &mut next as *mut u32 as u64,
                keys: self.keys.as_mut_ptr() as u64,
                values: self.values.as_mut_ptr() as u64,
                count: capacity as u32,
                map_fd: map.as_raw_fd() as u32,
                ..BatchAttr::default()
            };
            let r = bpf(BPF_MAP_LOOKUP_BATCH, &mut attr);
            let done = match r {
                Ok(()) => false,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => true,
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) && attr.count == 0 => {
                    // One bucket holds more entries than fit: ask for more.
                    capacity *= 2;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let n = (attr.count as usize).min(capacity);
            for i in 0..n {
                f(
                    &self.keys[i],
                    &self.values[i * self.cpus..(i + 1) * self.cpus],
                );
            }
            if done {
                return Ok(());
            }
            token = next;
            first = false;
        }
    }

    fn read_per_key(&mut self, map: BorrowedFd<'_>, f: &mut dyn FnMut(&K, &[V])) -> io::Result<()> {
        // Keys first (a deletion by `f` must not end the walk early), then their values.
        let mut keys = std::mem::take(&mut self.keys);
        keys.clear();
        let mut key: Option<K> = None;
        loop {
            let mut next = K::default();
            let mut attr = ElemAttr {
                map_fd: map.as_raw_fd() as u32,
                key: key.as_ref().map_or(0, |k| k as *const K as u64),
                value_or_next_key: &mut next as *mut K as u64,
                ..ElemAttr::default()
            };
            match bpf(BPF_MAP_GET_NEXT_KEY, &mut attr) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => break,
                Err(e) => return Err(e),
            }
            keys.push(next);
            key = Some(next);
        }
        self.values.resize(self.cpus, V::default());
        for k in &keys {
            let mut attr = ElemAttr {
                map_fd: map.as_raw_fd() as u32,
                key: k as *const K as u64,
                value_or_next_key: self.values.as_mut_ptr() as u64,
                ..ElemAttr::default()
            };
            match bpf(BPF_MAP_LOOKUP_ELEM, &mut attr) {
                Ok(()) => f(k, &self.values[..self.cpus]),
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) => return Err(e),
            }
        }
        self.keys = keys;
        Ok(())
    }
}

fn sum<V: PerCpuValue>(per_cpu: &[V]) -> V {
    let mut total = V::default();
    per_cpu.iter().for_each(|v| total.add(v));
    total
}

/// Deletes an entry (gone already is fine).
pub(super) fn delete<K>(map: BorrowedFd<'_>, key: &K) -> io::Result<()> {
    let mut attr = ElemAttr {
        map_fd: map.as_raw_fd() as u32,
        key: key as *const K as u64,
        ..ElemAttr::default()
    };
    match bpf(BPF_MAP_DELETE_ELEM, &mut attr) {
        Err(e) if e.raw_os_error() != Some(libc::ENOENT) => Err(e),
        _ => Ok(()),
    }
}
