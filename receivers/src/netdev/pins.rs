//! Pins under `/sys/fs/bpf/periscope/<receiver>/<inode>-<cookie>/`: an instance's programs
//! (`prog-<hook>`) and each device's links (`link-<hook>-<ifindex>`), so that attachments
//! survive the agent and cannot be removed from inside the namespace; and taking them over on
//! restart. The maps every instance shares are pinned once, in `<receiver>/maps/`
//! (`shared_maps.rs`).

use std::collections::HashMap;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

use aya::programs::links::PinnedLink;
use aya::programs::{SchedClassifier, Xdp};
use aya::Ebpf;
use aya_obj::programs::XdpAttachType;

use periscope_pipeline::model::NetnsId;

use super::instance::{chain, Hook, PinnedPrograms, Programs};

/// Pins a fresh instance's programs of `hooks` in `dir` (created if missing).
pub(super) fn pin_instance(bpf: &mut Ebpf, dir: &Path, hooks: &[Hook]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)
        .map_err(|e| anyhow::anyhow!("creating pin directory {}: {e}", dir.display()))?;
    for hook in hooks {
        let name = hook.program();
        let path = dir.join(format!("prog-{}", hook.name()));
        let prog = bpf
            .program_mut(name)
            .ok_or_else(|| anyhow::anyhow!("no program {name}"))?;
        let r = match hook {
            Hook::Xdp => <&mut Xdp>::try_from(prog)?.pin(&path),
            _ => <&mut SchedClassifier>::try_from(prog)?.pin(&path),
        };
        r.map_err(|e| anyhow::anyhow!("pinning {}: {}", path.display(), chain(&e)))?;
    }
    Ok(())
}

/// What an earlier run left pinned in a namespace's directory.
pub(super) struct Adopted {
    pub(super) programs: Programs,
    /// Links not yet claimed by a device, by pin file name.
    pub(super) links: HashMap<String, PinnedLink>,
}

/// Takes over the pins an earlier run left in `dir`: the programs of `hooks` (and the TCX
/// ingress program devices fell back to, with `fallback`, if it was pinned) and every link
/// still on the device it was made for (defunct ones are removed). `shared_maps`: whether the
/// receiver's shared maps were pinned too (the programs write them; without, what they count
/// would be read by nobody).
pub(super) fn adopt(
    dir: &Path,
    hooks: &[Hook],
    fallback: bool,
    shared_maps: bool,
) -> anyhow::Result<Adopted> {
    if !shared_maps {
        anyhow::bail!("the receiver's shared maps are not pinned");
    }
    // Before the maps were shared, each namespace pinned its own (`map-<name>`).
    if dir.join("map-periscope_counters").exists() {
        anyhow::bail!("pinned by an older version, with maps of its own");
    }
    let mut programs = PinnedPrograms {
        xdp: None,
        tc_ingress: None,
        tc_egress: None,
    };
    for hook in hooks {
        let path = dir.join(format!("prog-{}", hook.name()));
        let err =
            |e: aya::programs::ProgramError| anyhow::anyhow!("{}: {}", path.display(), chain(&e));
        match hook {
            Hook::Xdp => {
                programs.xdp = Some(Xdp::from_pin(&path, XdpAttachType::Interface).map_err(err)?)
            }
            Hook::TcxIngress => {
                programs.tc_ingress = Some(SchedClassifier::from_pin(&path).map_err(err)?)
            }
            Hook::TcxEgress => {
                programs.tc_egress = Some(SchedClassifier::from_pin(&path).map_err(err)?)
            }
        }
    }
    if fallback {
        // Pinned only if an earlier run needed it.
        let path = dir.join(format!("prog-{}", Hook::TcxIngress.name()));
        if path.exists() {
            programs.tc_ingress = Some(
                SchedClassifier::from_pin(&path)
                    .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), chain(&e)))?,
            );
        }
    }
    let mut links = HashMap::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(ifindex) = name.rsplit('-').next().and_then(|i| i.parse::<u32>().ok()) {
            if !name.starts_with("link-") {
                continue;
            }
            // A link whose device went away while no agent ran is defunct (ifindex 0),
            // even if a new device got the same ifindex since.
            match pinned_link_ifindex(&entry.path()) {
                Ok(i) if i == ifindex => {}
                other => {
                    tracing::info!(
                        pin = %entry.path().display(),
                        "pinned link no longer on device {ifindex} ({other:?}); removing it"
                    );
                    let _ = std::fs::remove_file(entry.path());
                    continue;
                }
            }
            match PinnedLink::from_pin(entry.path()) {
                Ok(l) => {
                    links.insert(name, l);
                }
                Err(e) => {
                    tracing::warn!(pin = %entry.path().display(), "cannot open pinned link ({}); removing it", chain(&e));
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
    }
    Ok(Adopted {
        programs: Programs::Pinned(Box::new(programs)),
        links,
    })
}

/// The ifindex a pinned XDP or TCX link is attached to (0 once its device is gone).
fn pinned_link_ifindex(path: &Path) -> io::Result<u32> {
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::os::unix::ffi::OsStrExt;

    const BPF_OBJ_GET: libc::c_long = 7;
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    #[repr(C)]
    struct ObjGet {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
        path_fd: i32,
        _pad: [u32; 11],
    }
    #[repr(C)]
    struct InfoByFd {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
        _pad: [u32; 12],
    }
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::other("NUL in pin path"))?;
    let get = ObjGet {
        pathname: c.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
        path_fd: 0,
        _pad: [0; 11],
    };
    // SAFETY: a BPF_OBJ_GET attr with a valid C string; the kernel reads size_of bytes.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET,
            &get as *const ObjGet,
            std::mem::size_of::<ObjGet>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new fd the kernel returned, owned only here.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // struct bpf_link_info: type, id, prog_id, then a union aligned to 8 whose xdp and tcx
    // members start with `__u32 ifindex`.
    let mut info = [0u64; 16];
    let attr = InfoByFd {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: std::mem::size_of_val(&info) as u32,
        info: info.as_mut_ptr() as u64,
        _pad: [0; 12],
    };
    // SAFETY: the kernel writes at most info_len bytes into `info`.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            &attr as *const InfoByFd,
            std::mem::size_of::<InfoByFd>(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(info[2] as u32)
}

/// The directory of a namespace's pins: `<inode>-<cookie>`.
pub(super) fn pin_dir_name(id: NetnsId) -> String {
    format!("{}-{}", id.inode, id.cookie)
}

/// The namespace a pin directory belongs to.
pub(super) fn parse_pin_dir_name(name: &str) -> Option<NetnsId> {
    let (inode, cookie) = name.split_once('-')?;
    Some(NetnsId {
        inode: inode.parse().ok()?,
        cookie: cookie.parse().ok()?,
    })
}

/// The pin of a device's link: `link-<hook>-<ifindex>`.
pub(super) fn link_pin_name(hook: Hook, ifindex: u32) -> String {
    format!("link-{}-{ifindex}", hook.name())
}

/// Removes a pin directory and everything in it (pinned links and programs are released).
pub(super) fn remove_pins(dir: &Path) {
    if let Err(e) = std::fs::remove_dir_all(dir) {
        if e.kind() != io::ErrorKind::NotFound {
            tracing::warn!(dir = %dir.display(), "removing pins: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_dir_names_round_trip() {
        let id = NetnsId {
            inode: 4026532000,
            cookie: 77,
        };
        assert_eq!(parse_pin_dir_name(&pin_dir_name(id)), Some(id));
        assert_eq!(parse_pin_dir_name("junk"), None);
        assert_eq!(link_pin_name(Hook::TcxEgress, 3), "link-tcx-egress-3");
    }
}
