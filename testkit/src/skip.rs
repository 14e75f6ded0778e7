//! When a test cannot run here (no root, no BPF, a tool missing), it skips with a one-line
//! reason and passes — except when `CI` is set: there every test must run, so it fails.

use std::path::{Path, PathBuf};

/// Whether the `CI` environment variable is set: then nothing may be skipped.
pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty())
}

/// Skips a test with a one-line reason (returns `false`), or panics when `CI` is set: in CI
/// every test must run.
pub fn skip(test: &str, reason: &str) -> bool {
    if in_ci() {
        panic!("{test}: cannot run, and CI is set so it may not be skipped: {reason}");
    }
    eprintln!("SKIPPED {test}: {reason}");
    false
}

/// The name of the function it is used in (a test's name, for skip messages and resource
/// names), so that no test spells its own name by hand.
#[macro_export]
macro_rules! test_name {
    () => {{
        fn here() {}
        let path = ::std::any::type_name_of_val(&here);
        let path = path.strip_suffix("::here").unwrap_or(path);
        // Inside a closure the path ends in `{{closure}}`: the function is the one around it.
        path.rsplit("::")
            .find(|part| *part != "{{closure}}")
            .unwrap_or(path)
    }};
}

/// `true` when the test runs as root and every one of `tools` is installed; otherwise skips
/// with the first reason (`false`), or panics under CI.
pub fn require_root_and_tools(test: &str, tools: &[&str]) -> bool {
    require_root(test) && require_tools(test, tools)
}

/// The effective user id.
fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// `true` when the test runs as root (it needs network namespaces and packet capture);
/// otherwise skips with a reason (`false`), or panics under CI.
pub fn require_root(test: &str) -> bool {
    let euid = euid();
    euid == 0
        || skip(
            test,
            &format!("needs root for network namespaces and packet capture (euid {euid})"),
        )
}

/// `true` when this process may load BPF programs (root, and kernel BTF for CO-RE);
/// otherwise skips with a reason (`false`), or panics under CI.
pub fn bpf_capable(test: &str) -> bool {
    let reason = if euid() != 0 {
        "not root"
    } else if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        "no kernel BTF at /sys/kernel/btf/vmlinux"
    } else {
        return true;
    };
    skip(
        test,
        &format!("cannot load eBPF programs: {reason} (needs root and a BPF-capable kernel)"),
    )
}

/// `true` when every program in `tools` is on `PATH`; otherwise skips with a reason that says
/// which package provides them (`false`), or panics under CI.
pub fn require_tools(test: &str, tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| find_program(t).is_none())
        .collect();
    if missing.is_empty() {
        return true;
    }
    let mut packages: Vec<&str> = missing.iter().map(|t| package_of(t)).collect();
    packages.dedup();
    skip(
        test,
        &format!(
            "needs {} (DEBIAN_FRONTEND=noninteractive apt-get install -y {})",
            missing.join(", "),
            packages.join(" ")
        ),
    )
}

fn package_of(tool: &str) -> &str {
    match tool {
        "dumpcap" | "editcap" | "capinfos" | "mergecap" => "tshark",
        "ip" => "iproute2",
        "promtool" => "prometheus",
        other => other,
    }
}

/// The full path of `program` if it is on `PATH`.
pub fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn test_name_is_the_enclosing_function() {
        assert_eq!(test_name!(), "test_name_is_the_enclosing_function");
        let in_closure = || test_name!();
        assert_eq!(in_closure(), "test_name_is_the_enclosing_function");
    }
}
