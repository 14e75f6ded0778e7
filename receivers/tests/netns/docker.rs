//! Docker's namespace folder, when it appears after the watcher started.

use super::*;

/// A bind mount under `/var/run/docker/netns` (folders created by the test are removed).
struct DockerMount {
    file: PathBuf,
    created: Vec<PathBuf>,
}

impl Drop for DockerMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.file).status();
        let _ = std::fs::remove_file(&self.file);
        for dir in self.created.iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

#[test]
fn docker_folder_that_appears_later_names_a_known_namespace() {
    let _serial = serial_root!();
    let docker = Path::new("/var/run/docker");
    let netns_dir = docker.join("netns");
    if netns_dir.exists() {
        eprintln!("skipping: {} exists (a real Docker?)", netns_dir.display());
        return;
    }
    let (tx, rx) = unbounded();
    let watcher = watch(NamespaceScope::All, tx).expect("watch");
    let mut rx = Events::new(rx);
    let mut child = Command::new("unshare")
        .args(["-n", "sleep", "30"])
        .spawn()
        .expect("spawn unshare");
    let pid = child.id();
    let proc_path = PathBuf::from(format!("/proc/{pid}/ns/net"));
    let ns = ns_added_where(&mut rx, "NamespaceAdded of unshare -n", |n| {
        n.path == proc_path
    });
    assert_eq!(ns.name, None);

    // The folders appear after the watcher started, then a namespace is mounted there.
    let name = format!("periscope-t-{}-docker", std::process::id());
    let mut mount = DockerMount {
        file: netns_dir.join(&name),
        created: vec![],
    };
    if !docker.exists() {
        mount.created.push(docker.to_path_buf());
    }
    mount.created.push(netns_dir.clone());
    std::fs::create_dir_all(&netns_dir).expect("mkdir docker/netns");
    std::fs::write(&mount.file, b"").expect("touch");
    let status = Command::new("mount")
        .arg("--bind")
        .arg(&proc_path)
        .arg(&mount.file)
        .status()
        .expect("mount");
    assert!(status.success(), "mount --bind failed");
    let named = ns_added_where(&mut rx, "NamespaceAdded with the docker name", |n| {
        n.id == ns.id && n.name.as_deref() == Some(name.as_str())
    });
    assert_eq!(named.id, ns.id);

    // The process exits: the bind mount still holds the namespace, so it stays.
    let _ = child.kill();
    let _ = child.wait();
    std::thread::sleep(Duration::from_millis(600)); // past a periodic rescan
    for e in rx.rest() {
        assert!(
            !matches!(e, Discovery::NamespaceRemoved(id) if id == ns.id),
            "removed while still mounted"
        );
    }
    // Unmounted: gone.
    drop(mount);
    rx.expect(
        "NamespaceRemoved",
        |e| matches!(e, Discovery::NamespaceRemoved(id) if *id == ns.id),
    );
    drop(watcher);
}
