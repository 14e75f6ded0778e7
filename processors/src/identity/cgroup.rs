//! Containers and pods: cgroup id → cgroup path (by walking the cgroup v2 mount, where each
//! directory's inode number is its cgroup id), cgroup path → container id, runtime, pod uid
//! and QoS class (Docker, containerd/CRI, CRI-O and Podman layouts; systemd and cgroupfs
//! drivers; cgroup v1 and v2), and the runtime's state on disk → container name and image.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;

use super::cache::{Cache, Lookup};

pub use periscope_pipeline::workload::{parse_cgroup_path, Workload};

/// A workload with what the runtime's state adds (shared between cache entries).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerInfo {
    pub workload: Workload,
    pub name: Option<String>,
    pub image: Option<String>,
}

/// Parses `/proc/PID/cgroup`: the v2 path (the `0::` line), and the workload from the v2 line
/// or, failing that, the first v1 line that names one.
pub fn parse_proc_cgroup(text: &str) -> (Option<String>, Workload) {
    let mut v2 = None;
    let mut v1 = Workload::default();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(hierarchy), Some(_controllers), Some(path)) =
            (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if !path.starts_with('/') {
            continue;
        }
        if hierarchy == "0" {
            v2 = Some(path.to_string());
        } else if v1.is_empty() {
            v1 = parse_cgroup_path(path);
        }
    }
    let w = match &v2 {
        Some(p) => {
            let w = parse_cgroup_path(p);
            if w.is_empty() {
                v1
            } else {
                w
            }
        }
        None => v1,
    };
    (v2, w)
}

/// Where the cgroup v2 hierarchy is mounted (the first `cgroup2` mount of its root).
pub fn find_cgroup2(proc_root: &Path) -> Option<PathBuf> {
    let info = std::fs::read_to_string(proc_root.join("self/mountinfo")).ok()?;
    info.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let fstype = right.split_whitespace().next()?;
        let mut fields = left.split_whitespace().skip(3);
        let (root, mount_point) = (fields.next()?, fields.next()?);
        (fstype == "cgroup2" && root == "/").then(|| PathBuf::from(mount_point))
    })
}

/// Deepest directory level walked below the cgroup root.
const MAX_DEPTH: usize = 32;

/// cgroup id → path, from walks of the cgroup v2 mount.
#[derive(Debug)]
pub struct CgroupIndex {
    root: Option<PathBuf>,
    paths: FxHashMap<u64, Arc<str>>,
    capacity: usize,
    min_interval: Duration,
    last_walk: Option<Instant>,
    warned: bool,
    /// Walks done (for tests and logs).
    pub walks: u64,
}

impl CgroupIndex {
    /// `root` is the cgroup v2 mount; `None` when the host has none (every lookup fails).
    pub fn new(root: Option<PathBuf>, capacity: usize, min_interval: Duration) -> Self {
        CgroupIndex {
            root,
            paths: FxHashMap::default(),
            capacity: capacity.max(1),
            min_interval,
            last_walk: None,
            warned: false,
            walks: 0,
        }
    }

    /// The path of cgroup `id` relative to the mount (`/system.slice/docker-….scope`); walks
    /// the hierarchy again when the id is unknown and the last walk is `min_interval` old.
    /// `KnownMissing` when it is unknown and a walk is not due yet.
    pub fn path(&mut self, id: u64, now: Instant) -> Lookup<Arc<str>> {
        if let Some(p) = self.paths.get(&id) {
            return Lookup::Found(p.clone());
        }
        if self
            .last_walk
            .is_some_and(|t| now.saturating_duration_since(t) < self.min_interval)
        {
            return Lookup::KnownMissing;
        }
        self.walk(now);
        match self.paths.get(&id) {
            Some(p) => Lookup::Found(p.clone()),
            None => Lookup::Failed,
        }
    }

    fn walk(&mut self, now: Instant) {
        self.last_walk = Some(now);
        self.walks += 1;
        let Some(root) = self.root.clone() else {
            return;
        };
        let mut paths = FxHashMap::default();
        if let Ok(m) = std::fs::metadata(&root) {
            paths.insert(m.ino(), Arc::from("/"));
        }
        let mut stack = vec![(root, String::new(), 0usize)];
        'walk: while let Some((dir, rel, depth)) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                let Ok(m) = entry.metadata() else {
                    continue;
                };
                let name = entry.file_name();
                let rel = format!("{rel}/{}", name.to_string_lossy());
                if paths.len() >= self.capacity {
                    if !self.warned {
                        self.warned = true;
                        tracing::warn!(
                            capacity = self.capacity,
                            "identity: more cgroups than cache_capacity; some stay unnamed"
                        );
                    }
                    break 'walk;
                }
                paths.insert(m.ino(), Arc::from(rel.as_str()));
                if depth + 1 < MAX_DEPTH {
                    stack.push((entry.path(), rel, depth + 1));
                }
            }
        }
        self.paths = paths;
    }
}

/// What a runtime's state on disk says about a container.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Described {
    pub name: Option<String>,
    pub image: Option<String>,
}

/// Container names and images from the runtimes' state on disk, cached per container id.
#[derive(Debug)]
pub struct RuntimeState {
    docker_root: Option<PathBuf>,
    cache: Cache<u128, Arc<Described>>,
}

/// Largest state file read.
const MAX_STATE_FILE: u64 = 8 << 20;

#[derive(serde::Deserialize)]
struct DockerConfig {
    #[serde(rename = "Name")]
    name: Option<String>,
    #[serde(rename = "Config")]
    config: Option<DockerInnerConfig>,
}

#[derive(serde::Deserialize)]
struct DockerInnerConfig {
    #[serde(rename = "Image")]
    image: Option<String>,
}

/// `nginx:1.25` → `nginx`, `registry:5000/app@sha256:…` → `registry:5000/app`.
pub fn image_name(image: &str) -> &str {
    let image = image.split('@').next().unwrap_or(image);
    match image.rfind(':') {
        Some(i) if !image[i..].contains('/') => &image[..i],
        _ => image,
    }
}

fn id_key(id: &str) -> u128 {
    // The first 32 hex digits identify a container well enough for a cache key.
    id.get(..32)
        .and_then(|h| u128::from_str_radix(h, 16).ok())
        .unwrap_or(0)
}

impl RuntimeState {
    pub fn new(docker_root: Option<PathBuf>, capacity: usize, ttl: Duration) -> Self {
        RuntimeState {
            docker_root,
            cache: Cache::new(capacity, ttl),
        }
    }

    /// (name, image name) of a container, where its runtime's state says.
    pub fn describe(&mut self, id: &str, runtime: Option<&str>, now: Instant) -> Arc<Described> {
        let key = id_key(id);
        if let Some(v) = self.cache.get(&key, now) {
            return v.clone();
        }
        let v = Arc::new(match (runtime, &self.docker_root) {
            (Some("docker") | None, Some(root)) => read_docker(root, id).unwrap_or_default(),
            _ => Described::default(),
        });
        self.cache.insert(key, v.clone(), now);
        v
    }
}

fn read_docker(root: &Path, id: &str) -> Option<Described> {
    use std::io::Read;
    let path = root.join("containers").join(id).join("config.v2.json");
    let mut text = String::new();
    std::fs::File::open(path)
        .ok()?
        .take(MAX_STATE_FILE)
        .read_to_string(&mut text)
        .ok()?;
    let c: DockerConfig = serde_json::from_str(&text).ok()?;
    let name = c
        .name
        .map(|n| n.trim_start_matches('/').to_string())
        .filter(|n| !n.is_empty());
    let image = c
        .config
        .and_then(|c| c.image)
        .map(|i| image_name(&i).to_string())
        .filter(|i| !i.is_empty());
    Some(Described { name, image })
}

#[cfg(test)]
mod tests {
    use super::*;
    use periscope_pipeline::workload::{is_hex_id, is_pod_uid};

    const ID: &str = "3f2a9c1b7d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8";
    const UID: &str = "1b4e28ba-2fa1-11d2-883f-0016d3cca427";

    fn container(path: &str) -> Option<(String, Option<&'static str>)> {
        parse_cgroup_path(path).container
    }

    #[test]
    fn docker_systemd_and_cgroupfs_drivers() {
        let id = Some((ID.to_string(), Some("docker")));
        assert_eq!(container(&format!("/system.slice/docker-{ID}.scope")), id);
        assert_eq!(container(&format!("/docker/{ID}")), id);
        // systemd inside the container: the container's scope is an ancestor.
        assert_eq!(
            container(&format!("/system.slice/docker-{ID}.scope/init.scope")),
            id
        );
        assert_eq!(parse_cgroup_path(&format!("/docker/{ID}")).pod, None);
    }

    #[test]
    fn containerd_crio_and_podman_scopes() {
        assert_eq!(
            container(&format!("/system.slice/cri-containerd-{ID}.scope")),
            Some((ID.to_string(), Some("containerd")))
        );
        assert_eq!(
            container(&format!("/machine.slice/crio-{ID}.scope")),
            Some((ID.to_string(), Some("cri-o")))
        );
        assert_eq!(
            container(&format!("/machine.slice/libpod-{ID}.scope")),
            Some((ID.to_string(), Some("podman")))
        );
        assert_eq!(
            container(&format!("/libpod_parent/{ID}")),
            Some((ID.to_string(), Some("podman")))
        );
        // conmon is the runtime's monitor, not the container.
        assert_eq!(
            container(&format!("/machine.slice/crio-conmon-{ID}.scope")),
            None
        );
        assert_eq!(
            container(&format!("/machine.slice/libpod-conmon-{ID}.scope")),
            None
        );
        // Upper-case ids are normalised.
        assert_eq!(
            container(&format!("/docker/{}", ID.to_uppercase())),
            Some((ID.to_string(), Some("docker")))
        );
    }

    #[test]
    fn kubepods_systemd_driver_for_each_qos_class() {
        let u = UID.replace('-', "_");
        let burstable = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u}.slice/cri-containerd-{ID}.scope"
        );
        let w = parse_cgroup_path(&burstable);
        assert_eq!(w.container, Some((ID.to_string(), Some("containerd"))));
        assert_eq!(w.pod, Some((UID.to_string(), "burstable")));
        let besteffort = format!(
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{u}.slice/crio-{ID}.scope"
        );
        let w = parse_cgroup_path(&besteffort);
        assert_eq!(w.container, Some((ID.to_string(), Some("cri-o"))));
        assert_eq!(w.pod, Some((UID.to_string(), "besteffort")));
        let guaranteed = format!("/kubepods.slice/kubepods-pod{u}.slice/cri-containerd-{ID}.scope");
        assert_eq!(
            parse_cgroup_path(&guaranteed).pod,
            Some((UID.to_string(), "guaranteed"))
        );
        // The pod's own cgroup (the sandbox's parent) names the pod, no container.
        let pod_only = parse_cgroup_path(&format!("/kubepods.slice/kubepods-pod{u}.slice"));
        assert_eq!(pod_only.container, None);
        assert_eq!(pod_only.pod, Some((UID.to_string(), "guaranteed")));
        // Under a test-specific parent, too.
        let flat =
            format!("/periscope-test-1/kubepods-burstable-pod{u}.slice/cri-containerd-{ID}.scope");
        assert_eq!(
            parse_cgroup_path(&flat).pod,
            Some((UID.to_string(), "burstable"))
        );
    }

    #[test]
    fn kubepods_cgroupfs_driver_for_each_qos_class() {
        for (path, qos) in [
            (format!("/kubepods/burstable/pod{UID}/{ID}"), "burstable"),
            (format!("/kubepods/besteffort/pod{UID}/{ID}"), "besteffort"),
            (format!("/kubepods/pod{UID}/{ID}"), "guaranteed"),
        ] {
            let w = parse_cgroup_path(&path);
            assert_eq!(w.container, Some((ID.to_string(), None)), "{path}");
            assert_eq!(w.pod, Some((UID.to_string(), qos)), "{path}");
        }
        // CRI-O with the cgroupfs driver.
        let w = parse_cgroup_path(&format!("/kubepods/burstable/pod{UID}/crio-{ID}"));
        assert_eq!(w.container, Some((ID.to_string(), Some("cri-o"))));
        // `pod…` outside kubepods is not a pod.
        assert_eq!(parse_cgroup_path(&format!("/other/pod{UID}")).pod, None);
    }

    #[test]
    fn cgroup_v1_and_v2_lines_of_proc_pid_cgroup() {
        let v1 = format!(
            "12:pids:/docker/{ID}\n11:memory:/docker/{ID}\n1:name=systemd:/docker/{ID}\n0::/\n"
        );
        let (v2, w) = parse_proc_cgroup(&v1);
        assert_eq!(v2.as_deref(), Some("/"));
        assert_eq!(w.container, Some((ID.to_string(), Some("docker"))));
        let hybrid = format!("1:name=systemd:/user.slice\n0::/system.slice/docker-{ID}.scope\n");
        let (v2, w) = parse_proc_cgroup(&hybrid);
        assert_eq!(v2, Some(format!("/system.slice/docker-{ID}.scope")));
        assert_eq!(w.container, Some((ID.to_string(), Some("docker"))));
        let (v2, w) = parse_proc_cgroup("0::/user.slice/user-0.slice/session-1.scope\n");
        assert!(v2.is_some());
        assert!(w.is_empty());
    }

    #[test]
    fn garbage_gives_nothing_and_never_panics() {
        let long = "a".repeat(100_000);
        let cases = [
            "",
            "/",
            "//////",
            "docker-.scope",
            "/docker/xyz",
            "/docker-zz3f2a9c1b7d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7.scope",
            "/kubepods-burstable-pod.slice",
            "/kubepods-burstable-podnot_a_uid_at_all_but_36_chars_long.slice",
            "/kubepods/burstable/pod",
            "/kubepods-pod😀😀😀😀😀😀😀😀😀.slice",
            "/cri-containerd-😀.scope",
            long.as_str(),
        ];
        for c in cases {
            assert!(parse_cgroup_path(c).is_empty(), "{c:?}");
        }
        for text in [
            "",
            "::::",
            "garbage\n\n\0\0",
            "0::relative/path",
            "x:y",
            long.as_str(),
        ] {
            let (_, w) = parse_proc_cgroup(text);
            assert!(w.is_empty(), "{text:?}");
        }
    }

    #[test]
    fn random_paths_never_panic_and_only_yield_well_formed_ids() {
        // Paths glued from the pieces the parsers look for, in random order and number.
        const PIECES: [&str; 22] = [
            "/",
            "/",
            "docker-",
            "cri-containerd-",
            "crio-",
            "libpod-",
            "conmon-",
            ".scope",
            ".slice",
            "kubepods",
            "-burstable",
            "-besteffort",
            "-pod",
            "pod",
            "_",
            "-",
            ID,
            UID,
            "0123456789abcdef",
            "😀",
            ":",
            "\0",
        ];
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..20_000 {
            let n = (next() % 12) as usize;
            let path: String = (0..n)
                .map(|_| PIECES[(next() % PIECES.len() as u64) as usize])
                .collect();
            let w = parse_cgroup_path(&path);
            if let Some((id, _)) = &w.container {
                assert!(is_hex_id(id), "{path:?} → {id:?}");
            }
            if let Some((uid, _)) = &w.pod {
                assert!(is_pod_uid(uid), "{path:?} → {uid:?}");
            }
            let _ = parse_proc_cgroup(&format!("0::{path}\n1:x:{path}\n{path}"));
        }
    }

    #[test]
    fn image_names_lose_tags_and_digests() {
        assert_eq!(image_name("nginx:1.25"), "nginx");
        assert_eq!(image_name("nginx"), "nginx");
        assert_eq!(
            image_name("registry:5000/team/app"),
            "registry:5000/team/app"
        );
        assert_eq!(
            image_name("registry:5000/team/app:v2"),
            "registry:5000/team/app"
        );
        assert_eq!(image_name("app@sha256:abcd"), "app");
    }

    fn temp_dir(name: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("periscope-identity-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("temp dir");
        d
    }

    #[test]
    fn cgroup_ids_are_found_by_walking_and_rewalked_for_unknown_ids() {
        let root = temp_dir("cgroups");
        let leaf = root.join(format!("system.slice/docker-{ID}.scope"));
        std::fs::create_dir_all(&leaf).expect("mkdir");
        let ino = |p: &Path| std::fs::metadata(p).expect("stat").ino();
        let mut index = CgroupIndex::new(Some(root.clone()), 100, Duration::from_millis(50));
        let t0 = Instant::now();
        assert_eq!(
            index.path(ino(&leaf), t0).found().as_deref(),
            Some(format!("/system.slice/docker-{ID}.scope").as_str())
        );
        assert_eq!(index.walks, 1);
        // Known ids need no walk.
        index.path(ino(&root.join("system.slice")), t0);
        assert_eq!(index.walks, 1);
        // A new cgroup is found by the next walk, but not before `min_interval`.
        let new = root.join("kubepods.slice");
        std::fs::create_dir_all(&new).expect("mkdir");
        assert!(matches!(
            index.path(ino(&new), t0 + Duration::from_millis(10)),
            Lookup::KnownMissing
        ));
        assert_eq!(index.walks, 1);
        assert_eq!(
            index
                .path(ino(&new), t0 + Duration::from_millis(60))
                .found()
                .as_deref(),
            Some("/kubepods.slice")
        );
        assert!(matches!(
            index.path(u64::MAX, t0 + Duration::from_millis(200)),
            Lookup::Failed
        ));
        assert_eq!(index.walks, 3, "one walk per due lookup");
        // Bounded: a capacity of 2 keeps 2 paths.
        let mut small = CgroupIndex::new(Some(root.clone()), 2, Duration::ZERO);
        small.path(u64::MAX, t0);
        assert_eq!(small.paths.len(), 2);
        // No cgroup mount: every lookup fails, nothing panics.
        let mut none = CgroupIndex::new(None, 10, Duration::ZERO);
        assert!(none.path(1, t0).found().is_none());
        std::fs::remove_dir_all(&root).expect("cleanup");
    }

    #[test]
    fn docker_state_names_the_container_and_its_image() {
        let root = temp_dir("docker");
        let dir = root.join("containers").join(ID);
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(
            dir.join("config.v2.json"),
            r#"{"ID":"x","Name":"/web-1","Config":{"Image":"nginx:1.25","Env":[]},"State":{}}"#,
        )
        .expect("write");
        let mut state = RuntimeState::new(Some(root.clone()), 10, Duration::from_secs(60));
        let now = Instant::now();
        let d = state.describe(ID, Some("docker"), now);
        assert_eq!(d.name.as_deref(), Some("web-1"));
        assert_eq!(d.image.as_deref(), Some("nginx"));
        // Not docker's, or garbage: nothing.
        let crio = "1".repeat(64);
        assert_eq!(
            *state.describe(&crio, Some("cri-o"), now),
            Described::default()
        );
        let other = "0".repeat(64);
        let odir = root.join("containers").join(&other);
        std::fs::create_dir_all(&odir).expect("mkdir");
        std::fs::write(odir.join("config.v2.json"), "{not json").expect("write");
        assert_eq!(
            *state.describe(&other, Some("docker"), now),
            Described::default()
        );
        std::fs::remove_dir_all(&root).expect("cleanup");
    }
}
