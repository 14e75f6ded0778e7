//! The descriptors the watcher polls: epoll, an eventfd to wake it.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Owns a descriptor a syscall returned, or its error.
pub(super) fn owned(fd: RawFd, what: &str) -> io::Result<OwnedFd> {
    if fd < 0 {
        return Err(ctx(io::Error::last_os_error(), what));
    }
    // SAFETY: a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Adds `fd` to `epoll` for `events`, reported with `token`.
pub(super) fn epoll_add(epoll: &OwnedFd, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
    let mut ev = libc::epoll_event { events, u64: token };
    // SAFETY: both fds are open; `ev` is valid for the call.
    if unsafe { libc::epoll_ctl(epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) } != 0 {
        return Err(ctx(io::Error::last_os_error(), "epoll_ctl(ADD)"));
    }
    Ok(())
}

/// Arms `fd` (added with `EPOLLONESHOT`) in `epoll` again.
pub(super) fn epoll_rearm(epoll: &OwnedFd, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
    let mut ev = libc::epoll_event { events, u64: token };
    // SAFETY: both fds are open; `ev` is valid for the call.
    if unsafe { libc::epoll_ctl(epoll.as_raw_fd(), libc::EPOLL_CTL_MOD, fd, &mut ev) } != 0 {
        return Err(ctx(io::Error::last_os_error(), "epoll_ctl(MOD)"));
    }
    Ok(())
}

/// Removes `fd` from `epoll`.
pub(super) fn epoll_del(epoll: &OwnedFd, fd: RawFd) {
    // SAFETY: a null event is allowed for EPOLL_CTL_DEL.
    unsafe {
        libc::epoll_ctl(
            epoll.as_raw_fd(),
            libc::EPOLL_CTL_DEL,
            fd,
            std::ptr::null_mut(),
        )
    };
}

/// Wakes whoever polls an eventfd.
pub(super) fn wake(fd: &OwnedFd) {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a valid u64 to an eventfd.
    unsafe { libc::write(fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
}

/// Resets an eventfd.
pub(super) fn drain_eventfd(fd: &OwnedFd) {
    let mut v: u64 = 0;
    // SAFETY: reads 8 bytes into a valid u64; non-blocking.
    unsafe { libc::read(fd.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
}

/// An I/O error that says what failed.
pub(super) fn ctx(e: io::Error, what: &str) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}
