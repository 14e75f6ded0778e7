//! Expedited RCU grace periods while the agent runs (opt-in, `tcx`'s `expedite_rcu`).
//!
//! Attaching the first TCX program on each side of a device waits for an RCU grace period
//! with the RTNL lock held (`tcx_entry_sync`), so each device costs two grace periods
//! (~10 ms each here) and devices appearing together wait for one another. With
//! `/sys/kernel/rcu_expedited` set, grace periods end within microseconds — at the price of
//! IPIs to every CPU for each one, system-wide. The setting is the host's, not periscope's:
//! it is set at start and put back at stop (an agent killed with SIGKILL leaves it set).
//!
//! Releasing a TCX link waits for a grace period too, under the RTNL lock: 100 namespaces of
//! 6 links each take ~10 s to let go with normal grace periods. [`ExpeditedRcu::enable_briefly`]
//! sets the knob for just the time of such a release (the netdev receivers' releasing thread
//! holds it while it has links to let go, and puts the previous value back when done).

use std::io;
use std::path::{Path, PathBuf};

/// The knob.
pub const RCU_EXPEDITED: &str = "/sys/kernel/rcu_expedited";

/// Puts `/sys/kernel/rcu_expedited` back to what it was when dropped.
#[derive(Debug)]
pub struct ExpeditedRcu {
    previous: String,
    path: PathBuf,
}

impl ExpeditedRcu {
    /// Sets the knob to 1; `None` if it already was (nothing to restore).
    pub fn enable() -> io::Result<Option<ExpeditedRcu>> {
        Self::set_at(Path::new(RCU_EXPEDITED), true)
    }

    /// Like [`ExpeditedRcu::enable`], for a moment (releasing links): logged at debug only,
    /// put back when the guard is dropped. `None` if it was already set (by the operator, by
    /// `expedite_rcu`, or by another receiver releasing now): nothing to restore then.
    pub fn enable_briefly() -> io::Result<Option<ExpeditedRcu>> {
        Self::set_at(Path::new(RCU_EXPEDITED), false)
    }

    fn set_at(path: &Path, announce: bool) -> io::Result<Option<ExpeditedRcu>> {
        let previous = std::fs::read_to_string(path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        let previous = previous.trim().to_string();
        if previous != "0" {
            return Ok(None);
        }
        std::fs::write(path, "1")
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        if announce {
            tracing::info!(
                "set {} to 1 while periscope runs (expedite_rcu: TCX attaches without waiting \
                 for normal RCU grace periods)",
                path.display()
            );
        } else {
            tracing::debug!("set {} to 1 while releasing links", path.display());
        }
        Ok(Some(ExpeditedRcu {
            previous,
            path: path.to_path_buf(),
        }))
    }
}

impl Drop for ExpeditedRcu {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(&self.path, &self.previous) {
            tracing::warn!(
                "could not put {} back to {}: {e}",
                self.path.display(),
                self.previous
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn briefly_set_and_put_back() {
        let dir = std::env::temp_dir().join(format!("periscope-rcu-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let knob = dir.join("rcu_expedited");
        std::fs::write(&knob, "0\n").expect("write");
        let guard = ExpeditedRcu::set_at(&knob, false).expect("set");
        assert!(guard.is_some());
        assert_eq!(std::fs::read_to_string(&knob).expect("read"), "1");
        // Already set: nothing to restore, and the first guard still puts it back.
        assert!(ExpeditedRcu::set_at(&knob, false).expect("set").is_none());
        drop(guard);
        assert_eq!(std::fs::read_to_string(&knob).expect("read"), "0");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
