//! The `periscope` command: run the agent, validate a config, list the components.

use periscope::{components, describe, doctor, observe};

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use periscope_pipeline::config::{self, Config};
use periscope_pipeline::devices::DeviceTable;
use periscope_pipeline::topology;

/// The config `periscope run` uses when no `-c` is given.
const DEFAULT_CONFIG: &str = "configs/default.yaml";

/// periscope: eBPF network observability for every network namespace, shaped like an
/// OpenTelemetry Collector pipeline (receivers → processors → exporters).
#[derive(Parser, Debug)]
#[command(name = "periscope", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the agent until SIGINT/SIGTERM, or until every receiver has ended (file replays).
    Run {
        /// Config file (YAML).
        #[arg(short, long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Check a config without starting anything: exit code 0 if valid, 1 with every error.
    Validate {
        /// Config file (YAML).
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Show what this machine allows: privileges, mounts, the hooks the kernel accepts (probed),
    /// and, with -c, whether that config's receivers can run (exit 1 if not).
    Doctor {
        /// Config file whose receivers to check.
        #[arg(short, long)]
        config: Option<PathBuf>,
    },
    /// Print the recent and live flows, connections, DNS lookups, drops and bursts of a
    /// running agent (its `observe` exporter), filtered; or top-talker tables.
    Observe(Box<observe::ObserveArgs>),
    /// A full-screen live view of a running agent: top talkers by bytes and packets per
    /// second, connections, RTT, drops, DNS and bursts (`s` sorts, `a` groups, `q` quits).
    Top(Box<observe::top::TopArgs>),
    /// List every component type with its documented options.
    Components {
        /// Only this type (e.g. `pcap`).
        #[arg(value_name = "TYPE")]
        only: Option<String>,
        /// Print the JSON schema of each config instead.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    // Before any thread: see `memory` for what per-thread arenas cost.
    periscope_receivers::shared::memory::one_arena();
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config } => run(&config),
        Command::Validate { config } => validate(&config),
        Command::Components { only, json } => components_cmd(only.as_deref(), json),
        Command::Doctor { config } => doctor_cmd(config.as_deref()),
        Command::Top(args) => match observe::top::run(*args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("periscope top: {e:#}");
                ExitCode::from(1)
            }
        },
        Command::Observe(args) => match observe::run(*args) {
            Ok(()) => ExitCode::SUCCESS,
            // A closed pipe (`| head`) is not an error.
            Err(e)
                if e.downcast_ref::<std::io::Error>().map(std::io::Error::kind)
                    == Some(std::io::ErrorKind::BrokenPipe) =>
            {
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("periscope observe: {e:#}");
                ExitCode::from(1)
            }
        },
    }
}

fn load(path: &Path) -> Result<Config, ExitCode> {
    let registry = components::registry();
    match config::load_file(path, &registry) {
        Ok(c) => Ok(c),
        Err(errors) => {
            eprint!("{errors}");
            if path == Path::new(DEFAULT_CONFIG) && !path.exists() {
                eprintln!("  hint: run from the repository root, or pass a config with -c FILE");
            }
            Err(ExitCode::from(1))
        }
    }
}

fn validate(path: &Path) -> ExitCode {
    match load(path) {
        Ok(config) => {
            for w in &config.warnings {
                eprintln!("warning: {}: {w}", path.display());
            }
            println!(
                "{}: valid ({} receivers, {} processors, {} exporters, {} pipelines)",
                path.display(),
                config.receivers.len(),
                config.processors.len(),
                config.exporters.len(),
                config.pipelines.len()
            );
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

fn init_logging(level: &str) -> Result<(), String> {
    let filter = match EnvFilter::try_from_default_env() {
        Ok(f) => f,
        Err(_) => EnvFilter::try_new(level)
            .map_err(|e| {
                format!("service.telemetry.logs.level: `{level}` is not a valid log filter: {e}")
            })?
            // kube's client logs every failed request at error level (each retry while the API
            // is down); the identity processor warns once per outage and counts the rest.
            .add_directive(
                "kube_client::client::builder=off"
                    .parse()
                    .map_err(|e| format!("log filter: {e}"))?,
            ),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init()
        .map_err(|e| format!("cannot start logging: {e}"))
}

/// SIGINT/SIGTERM: the first starts a graceful shutdown, a second exits at once.
fn watch_signals() -> anyhow::Result<crossbeam_channel::Receiver<()>> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let (tx, rx) = crossbeam_channel::bounded(1);
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut seen = 0;
            for sig in signals.forever() {
                seen += 1;
                if seen > 1 {
                    eprintln!("periscope: second signal, exiting without draining");
                    std::process::exit(128 + sig);
                }
                let _ = tx.try_send(());
            }
        })?;
    Ok(rx)
}

fn run(path: &Path) -> ExitCode {
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Err(e) = init_logging(&config.telemetry.logs.level) {
        eprintln!("error: {e}");
        return ExitCode::from(1);
    }
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    if let Err(e) = doctor::preflight(&config.receivers) {
        eprintln!("error: {e}");
        return ExitCode::from(1);
    }
    let devices = DeviceTable::default();
    let topology = match topology::build(&config, &devices) {
        Ok(t) => t,
        Err(e) => {
            match e.downcast_ref::<topology::BuildErrors>() {
                Some(errors) => errors.0.iter().for_each(|e| eprintln!("error: {e}")),
                None => eprintln!("error: {e:#}"),
            }
            return ExitCode::from(1);
        }
    };
    // Receivers loaded their objects (parsing the kernel's BTF on the way): give back what
    // that left free.
    periscope_receivers::shared::memory::release_free_memory();
    let finite = topology.is_finite();
    let telemetry = topology.self_telemetry();
    let shutdown = match watch_signals() {
        Ok(rx) => rx,
        Err(e) => {
            eprintln!("error: cannot watch for signals: {e:#}");
            return ExitCode::from(1);
        }
    };
    tracing::info!(config = %path.display(), finite, "starting periscope {}", env!("CARGO_PKG_VERSION"));
    let report = match topology.run(shutdown) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(1);
        }
    };
    for (kind, id, pipeline, v) in telemetry.values() {
        tracing::info!(
            kind,
            id = %id,
            pipeline = pipeline.as_deref().unwrap_or(""),
            received = v.received,
            sent = v.sent,
            dropped = v.dropped,
            errors = v.errors,
            "component totals"
        );
    }
    for (name, error) in &report.failures {
        eprintln!("error: {name}: {error}");
    }
    if !report.unfinished.is_empty() {
        eprintln!(
            "error: shutdown timeout ({}) passed before these finished draining: {}",
            config.shutdown_timeout,
            report.unfinished.join(", ")
        );
        // Threads still blocked would keep the process alive; leave now.
        std::process::exit(1);
    }
    if report.is_success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn components_cmd(only: Option<&str>, json: bool) -> ExitCode {
    let registry = components::registry();
    if let Some(name) = only {
        if !registry.iter().any(|t| t.type_name == name) {
            let names: Vec<&str> = registry.iter().map(|t| t.type_name).collect();
            eprintln!(
                "error: unknown component type `{name}`; {}",
                config::error::suggestion(name, &names, "types")
            );
            return ExitCode::from(1);
        }
    }
    if json {
        let all: serde_json::Map<String, serde_json::Value> = registry
            .iter()
            .filter(|t| only.is_none_or(|o| o == t.type_name))
            .map(|t| {
                (
                    format!("{}/{}", t.kind.section(), t.type_name),
                    t.schema().to_value(),
                )
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&all).unwrap_or_default());
    } else {
        print!("{}", describe::describe(&registry, only));
    }
    ExitCode::SUCCESS
}

fn doctor_cmd(path: Option<&Path>) -> ExitCode {
    let config = match path {
        None => None,
        Some(p) => match load(p) {
            Ok(config) => Some(config),
            Err(code) => return code,
        },
    };
    let (report, ok) = doctor::report(config.as_ref().map(|c| c.receivers.as_slice()));
    print!("{report}");
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
