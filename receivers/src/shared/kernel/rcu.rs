//! Expedited RCU grace periods while the agent runs (opt-in, `tcx`'s `expedite_rcu`).
//!
//! Attaching the first TCX program on each side of a device waits for an RCU grace period
//! with the RTNL lock held (`tcx_entry_sync`), so each device costs two grace periods
//! (~10 ms each here) and devices appearing together wait for one another. With
//! `/sys/kernel/rcu_expedited` set, grace periods end within microseconds — at the price of
//! IPIs to every CPU for each one, system-wide. The setting is the host's, not periscope's:
//! it is set at start and put back at stop (an agent killed with SIGKILL leaves it set).

use std::io;
use std::path::Path;

/// The knob.
pub const RCU_EXPEDITED: &str = "/sys/kernel/rcu_expedited";

/// Puts `/sys/kernel/rcu_expedited` back to what it was when dropped.
#[derive(Debug)]
pub struct ExpeditedRcu {
    previous: String,
}

impl ExpeditedRcu {
    /// Sets the knob to 1; `None` if it already was (nothing to restore).
    pub fn enable() -> io::Result<Option<ExpeditedRcu>> {
        Self::enable_at(Path::new(RCU_EXPEDITED))
    }

    fn enable_at(path: &Path) -> io::Result<Option<ExpeditedRcu>> {
        let previous = std::fs::read_to_string(path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        let previous = previous.trim().to_string();
        if previous != "0" {
            return Ok(None);
        }
        std::fs::write(path, "1")
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        tracing::info!(
            "set {} to 1 while periscope runs (expedite_rcu: TCX attaches without waiting for \
             normal RCU grace periods)",
            path.display()
        );
        Ok(Some(ExpeditedRcu { previous }))
    }
}

impl Drop for ExpeditedRcu {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(RCU_EXPEDITED, &self.previous) {
            tracing::warn!(
                "could not put {RCU_EXPEDITED} back to {}: {e}",
                self.previous
            );
        }
    }
}
