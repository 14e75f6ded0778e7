//! `periscope observe`: the recent and live records of a running agent's `observe` exporter,
//! filtered, as text, a table, JSON lines, or aggregated into top-talker tables.

pub mod filter;
pub mod render;
pub mod top;

use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use serde_json::{json, Value};

use filter::Filter;
use render::{Aggregate, Output};

/// Where the default config's `observe` exporter listens.
pub const DEFAULT_SOCKET: &str = "/run/periscope/observe.sock";

/// `periscope observe`'s options.
#[derive(Debug, clap::Args)]
pub struct ObserveArgs {
    /// The agent's observe socket (the `observe` exporter's `socket`).
    #[arg(long, default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Only the last N matching records of the agent's history (default: all it keeps, or none
    /// with --follow).
    #[arg(long, value_name = "N")]
    pub last: Option<usize>,
    /// Keep printing new records as they come.
    #[arg(short, long)]
    pub follow: bool,
    /// Only records since this time: a duration ago (`30s`, `5m`) or an RFC 3339 time.
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "compact")]
    pub output: Output,
    /// Print a top-talker table by this key instead of records (with --follow, every 2 s).
    #[arg(long, value_enum, value_name = "KEY")]
    pub aggregate_by: Option<Aggregate>,
    #[command(flatten)]
    pub filter: Filter,
}

/// Nanoseconds since the epoch of `--since`.
pub fn since_ns(since: &str, now: SystemTime) -> anyhow::Result<u64> {
    let t = match humantime::parse_duration(since) {
        Ok(d) => now.checked_sub(d).unwrap_or(UNIX_EPOCH),
        Err(_) => humantime::parse_rfc3339_weak(since).map_err(|_| {
            anyhow::anyhow!(
                "--since: `{since}` is neither a duration (`30s`, `5m`) nor a time \
                 (`2026-01-02T15:04:05Z`)"
            )
        })?,
    };
    Ok(t.duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos() as u64)
}

/// Connects and sends the request; the error says how to start an agent.
pub fn connect(socket: &Path, request: &Value) -> anyhow::Result<BufReader<UnixStream>> {
    let mut stream = UnixStream::connect(socket).map_err(|e| {
        let hint = match e.kind() {
            std::io::ErrorKind::PermissionDenied => {
                "the socket's mode is 0660: run as root or as a member of its group"
            }
            _ => {
                "is an agent running with the observe exporter? Start one with \
                 `sudo periscope run` (configs/default.yaml serves this socket), or pass \
                 --socket PATH"
            }
        };
        anyhow::anyhow!(
            "cannot connect to the agent at {}: {e}\n  hint: {hint}",
            socket.display()
        )
    })?;
    writeln!(stream, "{request}").context("cannot send the request to the agent")?;
    Ok(BufReader::new(stream))
}

/// Reads records from the agent and calls `each` for every one that passes the filter.
pub fn stream(
    args: &ObserveArgs,
    replay: Option<usize>,
    mut each: impl FnMut(Value) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let since = match &args.since {
        Some(s) => Some(since_ns(s, SystemTime::now())?),
        None => None,
    };
    let request = json!({"replay": replay, "since_ns": since, "follow": args.follow});
    let mut reader = connect(&args.socket, &request)?;
    let mut line = String::new();
    loop {
        line.clear();
        if reader
            .read_line(&mut line)
            .context("reading from the agent")?
            == 0
        {
            return Ok(());
        }
        let record: Value = serde_json::from_str(line.trim())
            .with_context(|| format!("the agent sent a line that is not JSON: {line}"))?;
        if record.get("type").and_then(Value::as_str) == Some("error") {
            bail!("the agent: {}", record["error"]);
        }
        if args.filter.matches(&record) {
            each(record)?;
        }
    }
}

pub fn run(args: ObserveArgs) -> anyhow::Result<()> {
    let colour = std::io::stdout().is_terminal();
    let out = std::io::stdout();
    let mut out = out.lock();
    if let Some(key) = args.aggregate_by {
        let mut table = render::Table::new(key);
        let mut last_print = std::time::Instant::now();
        stream(&args, None, |r| {
            table.add(&r);
            if args.follow && last_print.elapsed() >= Duration::from_secs(2) {
                last_print = std::time::Instant::now();
                write!(out, "{}", table.render(20))?;
                out.flush()?;
            }
            Ok(())
        })?;
        write!(out, "{}", table.render(20))?;
        return Ok(());
    }
    // Filters apply here, so the agent sends its whole history and `--last` applies here too
    // (with --follow and no --last, no history).
    let replay = (args.follow && args.last.is_none()).then_some(0);
    // The table's header once connected (a failed connection prints only the error).
    let mut header = args.output == Output::Table;
    let mut kept = std::collections::VecDeque::new();
    let mut live = false;
    let limit = args.last.unwrap_or(usize::MAX);
    stream(&args, replay, |r| {
        if std::mem::take(&mut header) {
            writeln!(out, "{}", render::table_header(colour))?;
        }
        if r.get("type").and_then(Value::as_str) == Some("live") {
            live = true;
            for h in kept.drain(..) {
                render::write(&mut out, args.output, &h, colour)?;
            }
            return Ok(out.flush()?);
        }
        if live {
            render::write(&mut out, args.output, &r, colour)?;
            return Ok(out.flush()?);
        }
        if limit == 0 {
            return Ok(());
        }
        if kept.len() == limit {
            kept.pop_front();
        }
        kept.push_back(r);
        Ok(())
    })?;
    if header {
        writeln!(out, "{}", render::table_header(colour))?;
    }
    for h in kept {
        render::write(&mut out, args.output, &h, colour)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_parses_durations_and_times() {
        let now = UNIX_EPOCH + Duration::from_secs(1000);
        assert_eq!(since_ns("30s", now).ok(), Some(970_000_000_000));
        assert_eq!(
            since_ns("1970-01-01T00:00:10Z", now).ok(),
            Some(10_000_000_000)
        );
        assert!(since_ns("yesterday", now).is_err());
    }
}
