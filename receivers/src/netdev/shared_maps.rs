//! The maps every program instance of a receiver shares: one ring buffer, one counters table,
//! one burst state table and their loss counters, whatever the number of namespaces. Every key
//! and record carries the namespace's id, so one map serves them all; an instance per
//! namespace is still needed (XDP/TC programs cannot learn their device's namespace without
//! kfuncs), but it costs its programs only.
//!
//! aya 0.14 can only hand an existing map to a new load through a pin: the loader of every
//! instance is told where the shared maps are pinned (`EbpfLoader::map_pin_path`), creates them
//! at the first load and reuses them after. With `pin: true` they are pinned under
//! `<pin root>/maps/` and outlive the agent with the links; without, under a folder of this
//! process (`/sys/fs/bpf/periscope/run-<pid namespace>-<pid>-<n>/`), removed at stop and swept
//! at a later start if the process died (only folders of the same pid namespace: another
//! agent's, in a container, are not ours to judge).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use aya::maps::{Map, MapData};
use aya::EbpfLoader;

use crate::shared::ebpf::names;
use crate::shared::kernel;

/// The packet object's maps that are shared (everything but its `.data`/`.rodata` globals).
pub(super) const SHARED: [&str; 10] = [
    names::EVENTS,
    names::COUNTERS,
    names::STATS,
    names::BURST_STATE,
    names::BURST_ZERO,
    names::BURST_STATS,
    names::FLOWS[0],
    names::FLOWS[1],
    names::FLOW_GENERATION,
    names::LOCAL_ADDRS,
];

/// The folder under a receiver's pin root that holds its shared maps (not a namespace's).
pub(super) const PINNED_MAPS_DIR: &str = "maps";

/// Where the shared maps of unpinned receivers go (one folder per attacher; bpffs refuses
/// names with dots).
const RUN_ROOT: &str = "/sys/fs/bpf/periscope";
const RUN_PREFIX: &str = "run-";

/// Attachers made by this process so far (each has its own maps).
static MADE: AtomicU64 = AtomicU64::new(0);

/// Where a receiver's shared maps are pinned.
pub(super) struct SharedMaps {
    dir: PathBuf,
    /// Removed when dropped (not pinning: nothing outlives the agent).
    private: bool,
}

impl SharedMaps {
    /// `pin_root`: the receiver pins (`<pin_root>/maps/`); `None`: a private folder of this
    /// process. Mounts bpffs at `/sys/fs/bpf` if it is not there.
    pub(super) fn new(pin_root: Option<&Path>) -> anyhow::Result<SharedMaps> {
        kernel::ensure_bpffs()
            .map_err(|e| anyhow::anyhow!("the shared maps need bpffs at /sys/fs/bpf: {e}"))?;
        let (dir, private) = match pin_root {
            Some(root) => (root.join(PINNED_MAPS_DIR), false),
            None => {
                sweep_dead_runs();
                let n = MADE.fetch_add(1, Ordering::Relaxed);
                let dir =
                    Path::new(RUN_ROOT).join(format!("{}{}-{n}", run_prefix(), std::process::id()));
                // Left over by an earlier process with this pid (its maps are not ours).
                let _ = std::fs::remove_dir_all(&dir);
                (dir, true)
            }
        };
        std::fs::create_dir_all(&dir)
            .map_err(|e| anyhow::anyhow!("creating {}: {e}", dir.display()))?;
        Ok(SharedMaps { dir, private })
    }

    /// The folder of their pins.
    pub(super) fn dir(&self) -> &Path {
        &self.dir
    }

    /// One of the shared maps (after a first load made them).
    pub(super) fn open(&self, name: &str) -> anyhow::Result<Map> {
        let path = self.dir.join(name);
        let data = MapData::from_pin(&path)
            .map_err(|e| anyhow::Error::new(e).context(format!("opening {}", path.display())))?;
        Ok(Map::from_map_data(data)?)
    }

    /// Whether a first load made them (or an earlier run left them pinned).
    pub(super) fn exist(&self) -> bool {
        self.dir.join(names::COUNTERS).exists()
    }
}

impl Drop for SharedMaps {
    fn drop(&mut self) {
        if self.private {
            // Programs still attached keep the maps alive; only the names go.
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// `run-<inode of this process's pid namespace>-`: pids are only comparable within one.
fn run_prefix() -> String {
    use std::os::unix::fs::MetadataExt;
    let pidns = std::fs::metadata("/proc/self/ns/pid").map_or(0, |m| m.ino());
    format!("{RUN_PREFIX}{pidns}-")
}

/// Tells `loader` to take the shared maps from their pins in `dir` (creating and pinning them
/// at the first load).
pub(super) fn configure_shared(loader: &mut EbpfLoader<'static>, dir: &Path) {
    for name in SHARED {
        loader.map_pin_path(name, dir.join(name));
    }
}

/// Removes the private folders of processes of this pid namespace that are gone (killed
/// before their stop).
fn sweep_dead_runs() {
    let Ok(entries) = std::fs::read_dir(RUN_ROOT) else {
        return;
    };
    let prefix = run_prefix();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(&prefix)
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}
