//! `periscope top`: a full-screen live view of the observe stream, aggregated: the busiest
//! network namespaces, pods, processes or devices by bytes and packets per second over the
//! last `--window`, connections, RTT p50/p99, drops by reason, recent DNS lookups and bursts.
//! `s` cycles the sort key, `a` the grouping, `q` (or Esc, Ctrl-C) quits and restores the
//! terminal.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Paragraph, Row as TableRow, Table as TableWidget};
use serde_json::Value;

use super::filter::Filter;
use super::render::{percentile, Aggregate, Row, Table};
use super::{ObserveArgs, DEFAULT_SOCKET};

/// `periscope top`'s options.
#[derive(Debug, clap::Args)]
pub struct TopArgs {
    /// The agent's observe socket (the `observe` exporter's `socket`).
    #[arg(long, default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// What the table groups by first (`a` cycles).
    #[arg(long, value_enum, default_value = "netns")]
    pub aggregate_by: Aggregate,
    /// Rates over this much of the most recent records.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub window: Duration,
    #[command(flatten)]
    pub filter: Filter,
}

/// Sort keys, in the order `s` cycles through them.
const SORTS: [&str; 5] = ["bytes/s", "pkts/s", "conns", "drops", "name"];
const GROUPS: [Aggregate; 5] = [
    Aggregate::Netns,
    Aggregate::Pod,
    Aggregate::Namespace,
    Aggregate::Process,
    Aggregate::Device,
];

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64
}

/// The rows of one view, sorted.
pub fn rows(records: &VecDeque<Value>, by: Aggregate, sort: usize) -> (Vec<(String, Row)>, f64) {
    let mut t = Table::new(by);
    records.iter().for_each(|r| t.add(r));
    let mut rows = t.rows();
    match SORTS[sort % SORTS.len()] {
        "pkts/s" => rows.sort_by(|a, b| b.1.packets.cmp(&a.1.packets).then(a.0.cmp(&b.0))),
        "conns" => rows.sort_by(|a, b| b.1.opened.cmp(&a.1.opened).then(a.0.cmp(&b.0))),
        "drops" => rows.sort_by(|a, b| b.1.drops.cmp(&a.1.drops).then(a.0.cmp(&b.0))),
        "name" => rows.sort_by(|a, b| a.0.cmp(&b.0)),
        _ => {}
    }
    (rows, t.seconds())
}

pub fn run(args: TopArgs) -> anyhow::Result<()> {
    // Connect first, so that a missing agent is a plain error, not a blank screen.
    let observe = ObserveArgs {
        socket: args.socket.clone(),
        last: None,
        follow: true,
        since: None,
        output: super::render::Output::Json,
        aggregate_by: None,
        filter: args.filter.clone(),
    };
    let request = serde_json::json!({"follow": true});
    let probe = super::connect(&observe.socket, &request)?;
    drop(probe);
    let (tx, rx) = mpsc::channel::<Value>();
    std::thread::spawn(move || {
        let _ = super::stream(&observe, None, |r| {
            tx.send(r).map_err(|_| anyhow::anyhow!("closed"))
        });
    });
    let mut terminal = ratatui::init();
    let result = ui(&mut terminal, &args, &rx);
    ratatui::restore();
    result
}

fn ui(
    terminal: &mut ratatui::DefaultTerminal,
    args: &TopArgs,
    rx: &mpsc::Receiver<Value>,
) -> anyhow::Result<()> {
    let mut records: VecDeque<Value> = VecDeque::new();
    let mut lost = 0u64;
    let mut sort = 0usize;
    let mut group = GROUPS
        .iter()
        .position(|g| *g == args.aggregate_by)
        .unwrap_or(0);
    let mut last_draw = Instant::now() - Duration::from_secs(10);
    let window_ns = args.window.as_nanos() as u64;
    let mut dirty = true;
    loop {
        while let Ok(r) = rx.try_recv() {
            match r.get("type").and_then(Value::as_str) {
                Some("lost") => lost += r["lost"].as_u64().unwrap_or(0),
                Some("live") => {}
                _ => records.push_back(r),
            }
            dirty = true;
        }
        // Flow records cover the interval before their time: keep those that end in the window.
        let horizon = now_ns().saturating_sub(window_ns);
        while records
            .front()
            .is_some_and(|r| r["time_ns"].as_u64().unwrap_or(0) < horizon)
        {
            records.pop_front();
            dirty = true;
        }
        if dirty || last_draw.elapsed() >= Duration::from_secs(1) {
            let by = GROUPS[group];
            let (rows, secs) = rows(&records, by, sort);
            terminal
                .draw(|f| draw(f, &records, by, sort, &rows, secs, lost, args))
                .context("drawing")?;
            last_draw = Instant::now();
            dirty = false;
        }
        if event::poll(Duration::from_millis(200)).context("reading the terminal")? {
            if let Event::Key(k) = event::read().context("reading the terminal")? {
                if k.kind != KeyEventKind::Press {
                    continue;
                }
                match k.code {
                    KeyCode::Char('q') | KeyCode::Esc => return Ok(()),
                    KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => {
                        return Ok(())
                    }
                    KeyCode::Char('s') => sort = (sort + 1) % SORTS.len(),
                    KeyCode::Char('a') => group = (group + 1) % GROUPS.len(),
                    _ => {}
                }
                dirty = true;
            }
        }
    }
}

fn rate(v: f64) -> String {
    match v {
        // Whole units up to a million, so that rates can be compared to 1%.
        v if v >= 1e9 => format!("{:.2}G", v / 1e9),
        v if v >= 1e6 => format!("{:.2}M", v / 1e6),
        v => format!("{v:.1}"),
    }
}

#[allow(clippy::too_many_arguments)]
fn draw(
    f: &mut ratatui::Frame,
    records: &VecDeque<Value>,
    by: Aggregate,
    sort: usize,
    rows: &[(String, Row)],
    secs: f64,
    lost: u64,
    args: &TopArgs,
) {
    let [head, main, bottom] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(5),
        Constraint::Length(8),
    ])
    .areas(f.area());
    let title = format!(
        "periscope top — {} — by {:?} — sort: {} — window {}s — lost {lost}   [s]ort [a]ggregate [q]uit",
        args.socket.display(),
        by,
        SORTS[sort % SORTS.len()],
        args.window.as_secs()
    );
    f.render_widget(
        Paragraph::new(title).style(Style::default().add_modifier(Modifier::BOLD)),
        head,
    );
    let header = TableRow::new(vec![
        format!("{by:?}").to_uppercase(),
        "BYTES/S".into(),
        "PKTS/S".into(),
        "CONNS".into(),
        "FAILED".into(),
        "RTT_P50".into(),
        "RTT_P99".into(),
        "DROPS".into(),
        "DNS".into(),
        "DNS_ERR".into(),
        "BURSTS".into(),
    ])
    .style(Style::default().add_modifier(Modifier::REVERSED));
    let us = |v: Option<u64>| v.map_or("-".into(), |v| format!("{v}us"));
    let body: Vec<TableRow> = rows
        .iter()
        .map(|(k, r)| {
            TableRow::new(vec![
                k.clone(),
                rate(r.bytes as f64 / secs),
                rate(r.packets as f64 / secs),
                r.opened.to_string(),
                r.failed.to_string(),
                us(percentile(&r.rtt_us, 50)),
                us(percentile(&r.rtt_us, 99)),
                r.drops.to_string(),
                r.dns.to_string(),
                r.dns_errors.to_string(),
                r.bursts.to_string(),
            ])
        })
        .collect();
    let widths = [
        Constraint::Min(24),
        Constraint::Length(9),
        Constraint::Length(9),
        Constraint::Length(6),
        Constraint::Length(6),
        Constraint::Length(9),
        Constraint::Length(9),
        Constraint::Length(6),
        Constraint::Length(5),
        Constraint::Length(7),
        Constraint::Length(6),
    ];
    f.render_widget(
        TableWidget::new(body, widths)
            .header(header)
            .block(Block::bordered().title("top talkers")),
        main,
    );
    // Drops by reason, and the latest DNS lookups and bursts.
    let mut reasons: Vec<(String, u64)> = Vec::new();
    for r in records.iter().filter(|r| r["type"] == "drop") {
        let reason = r["reason"].as_str().unwrap_or("unknown").to_string();
        let n = r["count"].as_u64().unwrap_or(0);
        match reasons.iter_mut().find(|e| e.0 == reason) {
            Some(e) => e.1 += n,
            None => reasons.push((reason, n)),
        }
    }
    reasons.sort_by_key(|r| std::cmp::Reverse(r.1));
    let mut lines = vec![Line::from(format!(
        "drops: {}",
        if reasons.is_empty() {
            "none".to_string()
        } else {
            reasons
                .iter()
                .map(|(r, n)| format!("{r} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    ))];
    for r in records
        .iter()
        .rev()
        .filter(|r| r["type"] == "dns" || r["type"] == "burst")
        .take(5)
    {
        let mut text = Vec::new();
        super::render::write(&mut text, super::render::Output::Compact, r, false).ok();
        lines.push(Line::from(
            String::from_utf8_lossy(&text).trim_end().to_string(),
        ));
    }
    f.render_widget(
        Paragraph::new(lines).block(Block::bordered().title("drops, recent DNS and bursts")),
        bottom,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn each_sort_key_orders_the_rows() {
        let mut records = VecDeque::new();
        for (ns, packets, bytes, drops) in
            [("a", 10, 5000, 0), ("b", 30, 1000, 0), ("c", 20, 3000, 4)]
        {
            records.push_back(json!({"type": "flow", "netns": ns, "packets": packets,
                "bytes": bytes, "time_ns": 2_000_000_000u64, "interval_ns": 1_000_000_000u64}));
            records.push_back(json!({"type": "drop", "netns": ns, "count": drops}));
        }
        let order = |sort| -> Vec<String> {
            rows(&records, Aggregate::Netns, sort)
                .0
                .into_iter()
                .map(|r| r.0)
                .collect()
        };
        assert_eq!(order(0), ["a", "c", "b"]); // bytes/s
        assert_eq!(order(1), ["b", "c", "a"]); // pkts/s
        assert_eq!(order(3)[0], "c"); // drops
        assert_eq!(order(4), ["a", "b", "c"]); // name
        assert_eq!(rows(&records, Aggregate::Netns, 0).1, 1.0);
    }
}
