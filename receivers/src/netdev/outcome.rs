//! Why an attachment failed, in the few kinds that self-telemetry counts
//! (`periscope.netdev.attach.failures{reason}`), and telling a device that vanished meanwhile
//! (not a failure: it was deleted or moved while we attached) from a real failure.

use std::fmt;

use crate::shared::netns::{run_in, NetnsHandle};

/// The kind of an attach failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FailureReason {
    /// The hook is taken (another XDP program, EBUSY/EEXIST).
    Busy,
    /// EPERM/EACCES: missing privileges, or a security module said no.
    Permission,
    /// The kernel or the driver does not support the hook (EOPNOTSUPP, ENOTSUPP).
    Unsupported,
    /// The namespace could not be entered or its programs not loaded.
    Namespace,
    /// Anything else (pinning, an unexpected errno).
    Other,
}

impl FailureReason {
    /// Every reason, in the order they are exported.
    pub const ALL: [FailureReason; 5] = [
        FailureReason::Busy,
        FailureReason::Permission,
        FailureReason::Unsupported,
        FailureReason::Namespace,
        FailureReason::Other,
    ];

    /// The `reason` attribute's value.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::Busy => "busy",
            FailureReason::Permission => "permission",
            FailureReason::Unsupported => "unsupported",
            FailureReason::Namespace => "namespace",
            FailureReason::Other => "other",
        }
    }

    /// The reason for an errno.
    pub(super) fn of_errno(errno: Option<i32>) -> FailureReason {
        /// The kernel's internal ENOTSUPP, which leaks out of some bpf paths.
        const ENOTSUPP: i32 = 524;
        match errno {
            Some(libc::EBUSY | libc::EEXIST) => FailureReason::Busy,
            Some(libc::EPERM | libc::EACCES) => FailureReason::Permission,
            Some(libc::EOPNOTSUPP | ENOTSUPP) => FailureReason::Unsupported,
            _ => FailureReason::Other,
        }
    }
}

/// Errnos of a device that is no longer there (deleted, or moved to another namespace).
pub(super) fn errno_says_gone(errno: Option<i32>) -> bool {
    matches!(errno, Some(libc::ENODEV | libc::ENXIO))
}

/// A failed attachment: its reason and what happened.
#[derive(Debug)]
pub struct AttachError {
    pub reason: FailureReason,
    pub message: String,
}

impl fmt::Display for AttachError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for AttachError {}

/// The reason of an error returned by the attacher (`Other` if it carries none).
pub fn failure_reason(e: &anyhow::Error) -> FailureReason {
    e.downcast_ref::<AttachError>()
        .map_or(FailureReason::Other, |a| a.reason)
}

/// The name of the device with this ifindex in namespace `ns` now (asked from inside it), or
/// `None` when there is none.
pub(super) fn device_name(ns: &NetnsHandle, ifindex: u32) -> Option<String> {
    run_in(ns, || {
        let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
        // SAFETY: `buf` has IF_NAMESIZE bytes, as if_indextoname requires.
        let p = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
        // SAFETY: on success `p` is `buf`, holding a NUL-terminated name.
        (!p.is_null()).then(|| {
            unsafe { std::ffi::CStr::from_ptr(p) }
                .to_string_lossy()
                .into_owned()
        })
    })
    // Cannot enter it: the namespace itself is going away.
    .ok()
    .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errnos_map_to_reasons() {
        assert_eq!(
            FailureReason::of_errno(Some(libc::EBUSY)),
            FailureReason::Busy
        );
        assert_eq!(
            FailureReason::of_errno(Some(libc::EPERM)),
            FailureReason::Permission
        );
        assert_eq!(
            FailureReason::of_errno(Some(524)),
            FailureReason::Unsupported
        );
        assert_eq!(FailureReason::of_errno(None), FailureReason::Other);
        assert!(errno_says_gone(Some(libc::ENODEV)));
        assert!(!errno_says_gone(Some(libc::EBUSY)));
        let e = anyhow::Error::new(AttachError {
            reason: FailureReason::Busy,
            message: "x".into(),
        });
        assert_eq!(failure_reason(&e), FailureReason::Busy);
        assert_eq!(failure_reason(&anyhow::anyhow!("y")), FailureReason::Other);
    }
}
