//! The live agent: load, configure, attach to every `--iface`, report every
//! interval, and on SIGINT/SIGTERM or at the end of `--duration` print a
//! final report and detach (or, with `--pin`, leave the pinned filter
//! attached and say so).
//!
//! Contract: the policy is written before the program is attached, so drop
//! mode holds from the first packet; a failure during start-up removes
//! whatever this run attached or pinned (an instance picked up from pins
//! stays as it was). Each interface has its own program and maps, so its
//! counters are its own. The mode shown in each report is read back from the
//! config map, so a switch made with `nat-pmp-agent mode` shows at once.

use std::{
    io::{IsTerminal as _, Write as _},
    net::SocketAddr,
    path::PathBuf,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{bail, Context as _, Result};
use crossterm::{cursor::MoveTo, terminal::Clear, terminal::ClearType, QueueableCommand as _};
use nat_pmp_ebpf_common::{Mode, Prefix};
use tokio::signal::unix::{signal, SignalKind};

use crate::{
    counters::Snapshot,
    ebpf::{check_iface, AttachMode, Filter, LinkType},
    metrics,
    pin::{self, PinDir},
    report::{self, Header, Report},
    sources::{self, Sources},
};

/// How reports are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
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
    /// One or more interfaces; each gets its own program and maps.
    pub ifaces: Vec<String>,
    pub mode: Mode,
    pub attach: AttachMode,
    pub link: LinkType,
    pub interval: Duration,
    pub output: Output,
    pub duration: Option<Duration>,
    /// Pin under this root (`<root>/<iface>/`) so the filter outlives us.
    pub pin_root: Option<PathBuf>,
    /// Serve Prometheus metrics here.
    pub metrics: Option<SocketAddr>,
    /// Sources listed in each report.
    pub top_sources: usize,
    /// Source prefixes drop mode lets through (added to what a picked-up
    /// instance already allows).
    pub allow: Vec<Prefix>,
    /// Update the per-source map for every counted datagram (`--no-sources`
    /// turns it off: the cheapest drop path, and no source table).
    pub track_sources: bool,
}

/// One interface's filter, and whether this run created it.
struct Instance {
    filter: Filter,
    iface: String,
    /// Picked up from pins an earlier agent left.
    adopted: bool,
    xdp_mode: &'static str,
}

/// Runs the agent until a signal or the end of `--duration`.
pub async fn run(opts: Options) -> Result<()> {
    if opts.interval.is_zero() {
        bail!("--interval must be more than 0 seconds");
    }
    if opts.ifaces.is_empty() {
        bail!("--iface is required");
    }
    for (i, iface) in opts.ifaces.iter().enumerate() {
        if opts.ifaces[..i].contains(iface) {
            bail!("--iface {iface} is given twice");
        }
    }
    // Signal handlers first: a signal during start-up must still lead to an
    // orderly detach.
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;

    for iface in &opts.ifaces {
        check_iface(iface)?;
    }
    if let Some(root) = &opts.pin_root {
        if let Some(at) = pin::ensure_bpffs(root)? {
            eprintln!(
                "note: mounted a BPF filesystem on {} (it was not mounted)",
                at.display()
            );
        }
    }
    let mut instances: Vec<Instance> = Vec::new();
    for iface in &opts.ifaces {
        match start(iface, &opts) {
            Ok(inst) => instances.push(inst),
            Err(e) => {
                abandon(instances);
                return Err(e);
            }
        }
    }
    let server = match &opts.metrics {
        Some(addr) => {
            let sources = instances
                .iter()
                .map(|i| Ok((i.iface.clone(), i.filter.maps().try_clone()?)))
                .collect::<Result<Vec<_>>>();
            match sources.and_then(|s| metrics::Server::start(*addr, s)) {
                Ok(s) => {
                    eprintln!("note: serving Prometheus metrics on http://{addr}/metrics");
                    Some(s)
                }
                Err(e) => {
                    abandon(instances);
                    return Err(e);
                }
            }
        }
        None => None,
    };
    // The sample of dropped datagrams the program logs, to stderr through
    // the `log` crate (env_logger; RUST_LOG=nat_pmp_ebpf=off silences it).
    let mut logs = Vec::new();
    for inst in &mut instances {
        match inst.filter.drop_log(log::logger()) {
            Ok(l) => logs.push(l),
            Err(e) => eprintln!("note: {}: no log of dropped datagrams: {e:#}", inst.iface),
        }
    }
    let result = report_loop(&instances, &opts, &mut sigterm, &mut sigint, &mut logs).await;
    drop(server);
    let mut finished = Ok(());
    for inst in instances {
        let pinned = inst.filter.pin_dir().map(|d| d.dir.clone());
        let r = inst.filter.release();
        if let (Some(dir), Ok(())) = (&pinned, &r) {
            eprintln!(
                "nat-pmp-agent: the filter stays attached to {} and keeps {} (pinned under \
                 {}); see it with `nat-pmp-agent status`, remove it with `nat-pmp-agent \
                 detach --iface {}`",
                inst.iface,
                if opts.mode == Mode::Drop {
                    "dropping"
                } else {
                    "counting"
                },
                dir.display(),
                inst.iface
            );
        }
        if finished.is_ok() {
            finished = r;
        }
    }
    result?;
    finished
}

/// Loads (or picks up) and attaches the filter of one interface.
fn start(iface: &str, opts: &Options) -> Result<Instance> {
    let (filter, adopted) = if let Some(root) = &opts.pin_root {
        let dir = PinDir::new(root, iface);
        if let Some(mut f) = Filter::adopt(iface, opts.attach, &dir)? {
            // The flags (or config file) say which mode to run in; one map
            // write, no gap.
            configure(&mut f, iface, opts)?;
            eprintln!(
                "note: picked up the filter pinned under {}: its counters continue",
                dir.dir.display()
            );
            (f, true)
        } else {
            let mut f = Filter::load()?;
            configure(&mut f, iface, opts)?;
            f.attach_pinned(iface, opts.attach, &dir)?;
            (f, false)
        }
    } else {
        let mut f = Filter::load()?;
        configure(&mut f, iface, opts)?;
        f.attach(iface, opts.attach)?;
        (f, false)
    };
    let att = filter
        .attachment()
        .context("internal: the filter is not attached after start-up")?;
    if let Some(reason) = &att.fallback_reason {
        eprintln!("note: {reason}; attached in skb (generic) mode instead, which is slower");
    }
    let xdp_mode = att.mode.name();
    Ok(Instance {
        filter,
        iface: iface.to_owned(),
        adopted,
        xdp_mode,
    })
}

/// Writes the mode, link type, source tracking and `--allow` prefixes
/// before the program sees a packet (or, picked up, its next one).
fn configure(f: &mut Filter, iface: &str, opts: &Options) -> Result<()> {
    f.set_mode(opts.mode)?;
    f.set_link(opts.link.resolve(iface)?)?;
    f.set_source_tracking(opts.track_sources)?;
    for p in &opts.allow {
        f.maps_mut().allow(*p)?;
    }
    // Also for no --allow: a picked-up allowlist's size is counted afresh.
    f.maps_mut().count_allowed()
}

/// Undoes a failed start-up: what this run attached or pinned goes, what it
/// picked up from pins stays as it was.
fn abandon(instances: Vec<Instance>) {
    for mut inst in instances {
        let _ = if inst.adopted {
            inst.filter.release()
        } else {
            inst.filter.detach()
        };
    }
}

async fn report_loop(
    instances: &[Instance],
    opts: &Options,
    sigterm: &mut tokio::signal::unix::Signal,
    sigint: &mut tokio::signal::unix::Signal,
    logs: &mut [DropLog],
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
            _ = ticker.tick() => {
                flush(logs);
                view.emit(&read(instances, opts.top_sources)?, false)?;
            }
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
            () = &mut deadline => break,
        }
    }
    flush(logs);
    view.emit(&read(instances, opts.top_sources)?, true)
}

/// The reader of one program's drop log.
type DropLog = aya_log::EbpfLogger<crate::droplog::DropLogger<&'static dyn log::Log>>;

/// Passes what the programs logged since the last call on to `log`.
fn flush(logs: &mut [DropLog]) {
    for l in logs {
        l.flush();
    }
}

/// One reading of every interface: its header (with the live mode), its
/// counters and its top sources.
fn read(instances: &[Instance], top: usize) -> Result<Vec<(Header, Snapshot, Sources)>> {
    instances
        .iter()
        .map(|i| {
            Ok((
                Header {
                    iface: i.iface.clone(),
                    mode: i.filter.mode()?.name(),
                    xdp_mode: i.xdp_mode,
                },
                i.filter.snapshot()?,
                sources::read(i.filter.maps(), top)?,
            ))
        })
        .collect()
}

/// Renders reports; keeps what the next rates need.
struct View {
    table: bool,
    redraw: bool,
    started: Instant,
    previous: Option<(Instant, Vec<Snapshot>)>,
}

impl View {
    fn emit(&mut self, now_read: &[(Header, Snapshot, Sources)], is_final: bool) -> Result<()> {
        let now = Instant::now();
        let uptime = now.duration_since(self.started);
        let reports: Vec<Report> = now_read
            .iter()
            .enumerate()
            .map(|(i, (header, totals, sources))| Report {
                header,
                uptime,
                totals: *totals,
                last_interval: self.previous.as_ref().and_then(|(at, prev)| {
                    prev.get(i)
                        .map(|p| (totals.since(p), now.duration_since(*at)))
                }),
                is_final,
                sources: Some(sources.clone()),
            })
            .collect();
        self.previous = Some((now, now_read.iter().map(|r| r.1).collect()));
        let mut out = std::io::stdout().lock();
        if self.table {
            if self.redraw {
                out.queue(Clear(ClearType::All))
                    .and_then(|o| o.queue(MoveTo(0, 0)))
                    .context("clearing the terminal")?;
            }
            // Without redrawing, a blank line keeps successive tables apart.
            let gap = if self.redraw { "" } else { "\n" };
            write!(out, "{}{gap}", report::combined_table(&reports))
        } else {
            writeln!(
                out,
                "{}",
                report::combined_json(&reports, SystemTime::now())
            )
        }
        .and_then(|()| out.flush())
        .context("writing the report to stdout")
    }
}
