//! What periscope's tests share, in one dev crate (`publish = false`), so that no test crate
//! pulls another one's helpers in with `#[path]`:
//!
//! - [`skip`]: the rules for tests that need root, a BPF-capable kernel or tools: skip with a
//!   one-line reason, or fail when `CI` is set.
//! - [`serial`]: one test at a time, for tests that share kernel-wide state.
//! - [`dir`]: a temporary directory per test, kept for inspection when the test fails.
//! - [`process`]: commands with a timeout; background processes that die with the test.
//! - [`netns`]: network namespaces and veth pairs that remove themselves, even on panic;
//!   running code inside a namespace; UDP traffic between two of them.
//! - [`pods`]: pods made the way CNI plugins make them (six patterns), with a node bridge,
//!   traffic and ground truth, for churn tests.
//! - [`cgroup`]: cgroup v2 directories whose processes are killed and which are removed on drop.
//! - [`bpf`]: what `bpftool` and the `bpf(2)` syscall say about loaded programs and links.
//! - [`capture`]: capture with `dumpcap`, dissect and count with `tshark` (the ground truth).
//! - [`pcapgen`]: capture files (pcap and pcapng) written from frames the test builds.
//! - [`otlp`]: the one reader of OTLP/JSON files (data points and spans); an OTLP/gRPC sink;
//!   rotel, the third-party collector.
//! - [`http`]: a minimal HTTP GET for scraping.
//! - [`python`]: the common part of the Python servers tests run.
//! - [`periscope`]: the `periscope` binary under test.
//! - [`component`]: build contexts for components under test.
//! - [`receiver`]: build and run a receiver in the test's process, collecting what it sends.
//! - [`stats`]: medians and percentiles of what tests measured.
//! - [`telemetry`]: sample metric and trace batches for exporter tests.
//!
//! Everything here panics with context instead of returning errors, so that a failing test
//! says what went wrong and where.

pub mod bpf;
pub mod capture;
pub mod cgroup;
pub mod component;
pub mod dir;
pub mod http;
pub mod kube_api;
pub mod netns;
pub mod otlp;
pub mod pcapgen;
pub mod periscope;
pub mod pods;
pub mod process;
pub mod python;
pub mod receiver;
pub mod serial;
pub mod skip;
pub mod stats;
pub mod telemetry;

pub use component::context;
pub use dir::{yaml_path, TestDir};
pub use netns::{in_netns, veth_pair, Netns};
pub use process::{output_with_timeout, Background};
pub use serial::Serial;
pub use skip::{bpf_capable, in_ci, require_root, require_root_and_tools, require_tools, skip};
