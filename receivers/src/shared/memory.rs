//! Giving memory back to the system once loading is done.
//!
//! Loading eBPF objects parses the kernel's BTF (`/sys/kernel/btf/vmlinux`, ~18 MiB once
//! parsed here) on whichever thread loads, and frees it. glibc gives each such thread an arena
//! of its own and keeps most of what is freed there even after a trim: the agent's RSS was 40
//! MiB at rest with per-thread arenas, 20 MiB with one (measured with the default config). The
//! agent allocates per batch, never per event, so one arena costs it no contention to speak of.

/// One malloc arena for every thread (`mallopt(M_ARENA_MAX, 1)`); call first thing in
/// `main`, before threads start. A no-op where the C library has no such setting.
pub fn one_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes the allocator's tuning; called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Returns free heap memory of every malloc arena to the system (`malloc_trim(0)`); a no-op
/// where the C library has no such call. Costs a walk of the free lists (0.1–2.5 ms with 110
/// pods' series): call it after loads and once per counters interval, not per event.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks and releases the allocator's free memory.
    unsafe {
        libc::malloc_trim(0);
    }
}
