//! The docker-compose demo (`demo/`) and the repository's `Dockerfile`, checked
//! without a Docker engine: `docker-compose config` accepts the compose file, periscope accepts
//! the demo's config, every file the compose file and the Dockerfile name exists, and the image
//! builds the binary with the same command CI builds (so CI compiles what the image runs).

use std::path::{Path, PathBuf};
use std::process::Command;

/// What the image runs to build periscope; `scripts/run` uses the same command.
const IMAGE_BUILD: &str = "cargo build --release --locked -p periscope";

fn repo_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    root.canonicalize()
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
}

fn demo_dir() -> PathBuf {
    repo_root().join("demo")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty())
}

#[test]
fn compose_file_passes_docker_compose_config() {
    let compose = demo_dir().join("docker-compose.yml");
    let out = match Command::new("docker-compose")
        .arg("-f")
        .arg(&compose)
        .args(["config", "-q"])
        .output()
    {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            assert!(
                !in_ci(),
                "docker-compose is not installed, and CI is set so this test may not be \
                 skipped (apt-get install -y docker-compose)"
            );
            eprintln!(
                "skipped: compose_file_passes_docker_compose_config needs docker-compose \
                 (apt-get install -y docker-compose)"
            );
            return;
        }
        Err(e) => panic!("running docker-compose: {e}"),
    };
    assert!(
        out.status.success(),
        "docker-compose -f {} config -q failed ({}):\n{}{}",
        compose.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn demo_config_and_image_default_config_are_valid() {
    // The demo's config, and the one the image runs when no config is mounted.
    for config in [
        demo_dir().join("periscope.yaml"),
        repo_root().join("configs/default.yaml"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_periscope"))
            .args(["validate", "-c"])
            .arg(&config)
            .output()
            .expect("run periscope");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}: periscope validate failed:\n{stderr}",
            config.display()
        );
        // Warnings (an exporter no pipeline uses, ...) would greet every demo user.
        assert!(
            !stderr.contains("warning"),
            "{}: periscope validate warns:\n{stderr}",
            config.display()
        );
    }
}

/// The instructions of a Dockerfile, continuation lines joined, comments dropped.
fn instructions(dockerfile: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in dockerfile.lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && current.is_empty()) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part.trim());
                current.push(' ');
            }
            None => {
                current.push_str(line);
                out.push(std::mem::take(&mut current).trim().to_string());
            }
        }
    }
    if !current.trim().is_empty() {
        out.push(current.trim().to_string());
    }
    out
}

#[test]
fn dockerfile_builds_the_periscope_package_as_ci_does() {
    let root = repo_root();
    let dockerfile = read(&root.join("Dockerfile"));
    let steps = instructions(&dockerfile);

    // Every cargo build in the image is exactly the command CI's tests and benches cover.
    let builds: Vec<&str> = steps
        .iter()
        .filter(|s| s.starts_with("RUN "))
        .flat_map(|s| s.split("&&"))
        .flat_map(|c| c.split(';'))
        .map(str::trim)
        .filter(|c| c.contains("cargo build"))
        .collect();
    assert!(
        !builds.is_empty(),
        "the Dockerfile has no `{IMAGE_BUILD}` step:\n{dockerfile}"
    );
    for b in &builds {
        assert!(
            b.split_whitespace().eq(IMAGE_BUILD.split_whitespace()),
            "the Dockerfile builds with `{b}`; it must be `{IMAGE_BUILD}`"
        );
    }
    // The eBPF toolchain receivers/build.rs needs, and the runtime contract the compose file
    // relies on.
    let apt = steps
        .iter()
        .find(|s| s.contains("apt-get install") && s.contains("clang-19"))
        .unwrap_or_else(|| panic!("no apt-get install of clang-19 in the Dockerfile"));
    for package in ["clang-19", "llvm-19", "libbpf-dev", "bpftool"] {
        assert!(
            apt.split_whitespace().any(|w| w == package),
            "{package} missing from `{apt}`"
        );
    }
    for want in [
        r#"ENTRYPOINT ["periscope"]"#,
        r#"CMD ["run", "-c", "/etc/periscope/config.yaml"]"#,
    ] {
        assert!(
            steps.iter().any(|s| s == want),
            "`{want}` missing from the Dockerfile"
        );
    }
    // Files copied from the build context exist.
    for step in steps.iter().filter(|s| s.starts_with("COPY ")) {
        let words: Vec<&str> = step.split_whitespace().skip(1).collect();
        if words.iter().any(|w| w.starts_with("--from")) {
            continue;
        }
        for src in &words[..words.len() - 1] {
            assert!(
                root.join(src).exists(),
                "Dockerfile `{step}`: {src} does not exist"
            );
        }
    }
}

/// `key: value` of a line, quotes removed.
fn value_of<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let rest = line.trim().strip_prefix(key)?.strip_prefix(':')?;
    Some(rest.trim().trim_matches('"').trim_matches('\''))
}

#[test]
fn every_file_the_compose_file_names_exists() {
    let demo = demo_dir();
    let compose = read(&demo.join("docker-compose.yml"));

    let context = compose
        .lines()
        .find_map(|l| value_of(l, "context"))
        .expect("periscope's build context in docker-compose.yml");
    let context = demo.join(context);
    assert_eq!(
        context.canonicalize().ok(),
        Some(repo_root()),
        "the build context must be the repository root"
    );
    let dockerfile = compose
        .lines()
        .find_map(|l| value_of(l, "dockerfile"))
        .unwrap_or("Dockerfile");
    assert!(
        context.join(dockerfile).is_file(),
        "{dockerfile} missing in {}",
        context.display()
    );

    // Bind mounts of files in this folder: `- ./SOURCE:TARGET[:MODE]`.
    let mut mounts = Vec::new();
    for line in compose.lines() {
        let Some(volume) = line.trim().strip_prefix("- ./") else {
            continue;
        };
        let mut parts = volume.trim_matches('"').split(':');
        let source = parts.next().unwrap_or_default();
        let target = parts.next().unwrap_or_default();
        assert!(
            demo.join(source).is_file(),
            "docker-compose.yml mounts ./{source}, which does not exist in {}",
            demo.display()
        );
        mounts.push((source.to_string(), target.to_string()));
    }
    for (source, target) in [
        ("periscope.yaml", "/etc/periscope/config.yaml"),
        ("prometheus.yml", "/etc/prometheus/prometheus.yml"),
    ] {
        assert!(
            mounts.iter().any(|(s, t)| s == source && t == target),
            "docker-compose.yml must mount ./{source} at {target}; mounts: {mounts:?}"
        );
    }

    // Prometheus scrapes the port periscope's prometheus exporter listens on.
    let config = read(&demo.join("periscope.yaml"));
    let listen = config
        .lines()
        .find_map(|l| value_of(l, "listen"))
        .expect("a prometheus exporter `listen` in periscope.yaml");
    let port = listen.rsplit(':').next().unwrap_or_default();
    let scrape = read(&demo.join("prometheus.yml"));
    assert!(
        scrape.contains(&format!("127.0.0.1:{port}")),
        "prometheus.yml must scrape 127.0.0.1:{port} (periscope listens on {listen})"
    );
}
