//! rotel (`pip install rotel==0.0.1a15`), a real OTLP collector written in Rust: it receives
//! OTLP over gRPC and HTTP and forwards it over OTLP/gRPC.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::sink::wait_for_port;
use crate::process::Background;

/// How to install rotel, for skip messages.
pub const INSTALL: &str = "pip install rotel==0.0.1a15";

/// rotel's binary from the PyPI package, if installed.
pub fn rotel_binary() -> Option<PathBuf> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import rotel,os;print(os.path.dirname(rotel.__file__))",
        ])
        .output()
        .ok()?;
    let dir = String::from_utf8(out.stdout).ok()?;
    let bin = PathBuf::from(dir.trim()).join("rotel-agent");
    bin.is_file().then_some(bin)
}

/// Starts rotel receiving OTLP on `grpc` and `http`, forwarding over OTLP/gRPC to `sink`;
/// returns once it listens. It is killed when the returned process is dropped.
pub fn start_rotel(bin: &Path, grpc: u16, http: u16, sink: u16) -> Background {
    let rotel = Background::spawn(
        Command::new(bin).args([
            "start",
            "--otlp-grpc-endpoint",
            &format!("127.0.0.1:{grpc}"),
            "--otlp-http-endpoint",
            &format!("127.0.0.1:{http}"),
            "--exporter",
            "otlp",
            "--otlp-exporter-endpoint",
            &format!("http://127.0.0.1:{sink}"),
            "--otlp-exporter-protocol",
            "grpc",
            "--batch-timeout",
            "100ms",
        ]),
        "rotel",
    );
    assert!(
        wait_for_port(grpc, Duration::from_secs(15)) && wait_for_port(http, Duration::from_secs(5)),
        "rotel did not listen on {grpc}/{http}\n--- stderr ---\n{}",
        rotel.stderr()
    );
    rotel
}
