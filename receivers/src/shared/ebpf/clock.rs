//! The kernel's `CLOCK_BOOTTIME` timestamps (what `bpf_ktime_get_boot_ns` returns) in Unix
//! time.

/// Converts the kernel's `CLOCK_BOOTTIME` timestamps (`bpf_ktime_get_boot_ns`) into Unix
/// time. The programs use boot time because it is cheap, monotonic and counts suspend, so the
/// offset to wall-clock time only changes when the wall clock is set; re-measure it (e.g.
/// every few seconds) to follow such steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootClock {
    /// `CLOCK_REALTIME - CLOCK_BOOTTIME`, in nanoseconds.
    offset_ns: i128,
}

impl BootClock {
    /// Measures the offset now (two clock reads around one, error well under a microsecond).
    pub fn now() -> BootClock {
        let boot_a = clock_ns(libc::CLOCK_BOOTTIME);
        let real = clock_ns(libc::CLOCK_REALTIME);
        let boot_b = clock_ns(libc::CLOCK_BOOTTIME);
        BootClock {
            offset_ns: real - (boot_a + boot_b) / 2,
        }
    }

    /// A clock with a given `CLOCK_REALTIME - CLOCK_BOOTTIME` offset (tests, replays).
    pub fn from_offset_ns(offset_ns: i128) -> BootClock {
        BootClock { offset_ns }
    }

    /// `CLOCK_BOOTTIME` nanoseconds → nanoseconds since the Unix epoch (saturating).
    pub fn to_unix_ns(&self, boot_ns: u64) -> u64 {
        (i128::from(boot_ns) + self.offset_ns).clamp(0, i128::from(u64::MAX)) as u64
    }

    /// The current `CLOCK_BOOTTIME`, in nanoseconds.
    pub fn boot_now_ns() -> u64 {
        clock_ns(libc::CLOCK_BOOTTIME) as u64
    }
}

/// Converts `CLOCK_MONOTONIC` timestamps (`bpf_ktime_get_coarse_ns`, the flow table's first
/// and last packet: a tick-granular clock read costs a program a fraction of an exact one) to
/// Unix time.
#[derive(Clone, Copy, Debug)]
pub struct MonoClock {
    /// `CLOCK_REALTIME - CLOCK_MONOTONIC`, in nanoseconds.
    offset_ns: i128,
}

impl MonoClock {
    /// Measures the offset now.
    pub fn now() -> MonoClock {
        let a = clock_ns(libc::CLOCK_MONOTONIC);
        let real = clock_ns(libc::CLOCK_REALTIME);
        let b = clock_ns(libc::CLOCK_MONOTONIC);
        MonoClock {
            offset_ns: real - (a + b) / 2,
        }
    }

    /// `CLOCK_MONOTONIC` nanoseconds → nanoseconds since the Unix epoch (saturating).
    pub fn to_unix_ns(&self, mono_ns: u64) -> u64 {
        (i128::from(mono_ns) + self.offset_ns).clamp(0, i128::from(u64::MAX)) as u64
    }

    /// The current `CLOCK_MONOTONIC`, in nanoseconds.
    pub fn mono_now_ns() -> u64 {
        clock_ns(libc::CLOCK_MONOTONIC) as u64
    }
}

fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write to; both clocks exist on every Linux.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    debug_assert_eq!(rc, 0);
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_clock_tracks_the_wall_clock() {
        let clock = BootClock::now();
        let unix = clock.to_unix_ns(BootClock::boot_now_ns());
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        assert!(unix.abs_diff(wall) < 50_000_000, "{unix} vs {wall}");
        assert_eq!(BootClock::from_offset_ns(-10).to_unix_ns(3), 0);
    }
}
