//! The live agent: load, configure, attach, report every interval, and on
//! SIGINT/SIGTERM or at the end of `--duration` print a final report and
//! detach.
//!
//! Contract: the policy is written before the program is attached, so drop
//! mode holds from the first packet; any failure after attach detaches
//! before returning (the `Filter` also detaches when dropped).

use std::{
    io::{IsTerminal as _, Write as _},
    time::{Duration, Instant, SystemTime},
};

use anyhow::{bail, Context as _, Result};
use crossterm::{cursor::MoveTo, terminal::Clear, terminal::ClearType, QueueableCommand as _};
use nat_pmp_ebpf_common::Mode;
use tokio::signal::unix::{signal, SignalKind};

use crate::{
    counters::Snapshot,
    ebpf::{AttachMode, Filter},
    report::{Header, Report},
};

/// How reports are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// A live table on a terminal, JSON lines otherwise.
    Auto,
    /// A table each interval (redrawn in place on a terminal).
    Table,
    /// One JSON object per line per interval.
    Json,
}

/// What `nat-pmp-agent --iface ...` was asked to do.
#[derive(Clone, Debug)]
pub struct Options {
    pub iface: String,
    pub mode: Mode,
    pub attach: AttachMode,
    pub interval: Duration,
    pub output: Output,
    pub duration: Option<Duration>,
}

/// Runs the agent until a signal or the end of `--duration`.
pub async fn run(opts: Options) -> Result<()> {
    if opts.interval.is_zero() {
        bail!("--interval must be more than 0 seconds");
    }
    // Signal handlers first: a signal during start-up must still lead to an
    // orderly detach.
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;

    crate::ebpf::check_iface(&opts.iface)?;
    let mut filter = Filter::load()?;
    filter.set_mode(opts.mode)?;
    let att = filter.attach(&opts.iface, opts.attach)?;
    if let Some(reason) = &att.fallback_reason {
        eprintln!("note: {reason}; attached in skb (generic) mode instead, which is slower");
    }
    let header = Header {
        iface: opts.iface.clone(),
        mode: opts.mode.name(),
        xdp_mode: att.mode.name(),
    };
    let result = report_loop(&filter, &header, &opts, &mut sigterm, &mut sigint).await;
    let detached = filter.detach();
    result?;
    detached
}

async fn report_loop(
    filter: &Filter,
    header: &Header,
    opts: &Options,
    sigterm: &mut tokio::signal::unix::Signal,
    sigint: &mut tokio::signal::unix::Signal,
) -> Result<()> {
    let stdout_tty = std::io::stdout().is_terminal();
    let table = match opts.output {
        Output::Auto => stdout_tty,
        Output::Table => true,
        Output::Json => false,
    };
    let mut view = View {
        table,
        redraw: table && stdout_tty,
        header,
        started: Instant::now(),
        previous: None,
    };
    let mut ticker = tokio::time::interval(opts.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await; // The first tick fires at once.
    let deadline = async {
        match opts.duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = ticker.tick() => view.emit(&filter.snapshot()?, false)?,
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
            () = &mut deadline => break,
        }
    }
    view.emit(&filter.snapshot()?, true)
}

/// Renders reports; keeps what the next rate needs.
struct View<'a> {
    table: bool,
    redraw: bool,
    header: &'a Header,
    started: Instant,
    previous: Option<(Instant, Snapshot)>,
}

impl View<'_> {
    fn emit(&mut self, totals: &Snapshot, is_final: bool) -> Result<()> {
        let now = Instant::now();
        let last_interval = self
            .previous
            .map(|(at, prev)| (totals.since(&prev), now.duration_since(at)));
        self.previous = Some((now, *totals));
        let report = Report {
            header: self.header,
            uptime: now.duration_since(self.started),
            totals: *totals,
            last_interval,
            is_final,
        };
        let mut out = std::io::stdout().lock();
        if self.table {
            if self.redraw {
                out.queue(Clear(ClearType::All))
                    .and_then(|o| o.queue(MoveTo(0, 0)))
                    .context("clearing the terminal")?;
            }
            // Without redrawing, a blank line keeps successive tables apart.
            let gap = if self.redraw { "" } else { "\n" };
            write!(out, "{}{gap}", report.to_table())
        } else {
            writeln!(out, "{}", report.to_json(SystemTime::now()))
        }
        .and_then(|()| out.flush())
        .context("writing the report to stdout")
    }
}
