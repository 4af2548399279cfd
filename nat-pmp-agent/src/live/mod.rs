//! The live agent: load, configure, attach to every `--iface`, keep it
//! attached, report every interval, and on SIGINT/SIGTERM or at the end of
//! `--duration` print a final report and the true state of every filter.
//!
//! Contract:
//! - The policy is written before the program is attached, so drop mode
//!   holds from the first packet.
//! - Whether a filter protects its interface is read from the kernel (the
//!   link's device, rtnetlink, the pins), never inferred from names or
//!   flags: on every link event of an `--iface` and every report interval.
//!   When protection is lost the agent says so at once (stderr, the table's
//!   header, `attached: false` in the JSON, `natpmp_attached` 0) and attaches
//!   again where it can: when a device of that name exists (a PPPoE
//!   reconnect made a new one), with the same program and maps (the
//!   counters continue), the same settings and, pinned, a new link pin. The
//!   one loss it does not undo is `nat-pmp-agent detach` (pins removed and
//!   link detached): that is the operator's word.
//! - The settings (mode, allowlist, source tracking, link type) are a
//!   declared state: a picked-up pinned instance, and a SIGHUP reload of
//!   the config file, get exactly this run's settings, and every difference
//!   is reported line by line. The XDP mode of a picked-up link is kept
//!   (changing it needs a detach) and that is reported too.
//! - A failed start leaves every picked-up instance exactly as it was
//!   (settings and allowlist restored) and removes what this run made.

pub mod console;
mod instance;
mod tui;
mod view;

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use nat_pmp_ebpf_common::{Mode, Prefix};
use tokio::signal::unix::{signal, SignalKind};

use crate::{
    bpf::{pin, sources},
    net::{
        iface::{check_iface, AttachMode, LinkType},
        netlink::{self, LinkEvent},
    },
    output::metrics,
    say,
};
use instance::{abandon, apply_reload, finish, start, supervise, Instance};
use view::{read, View};

/// How reports are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// The live view ([`tui`]) on a terminal, JSON lines otherwise.
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
    pub attach: AttachMode,
    pub interval: Duration,
    pub output: Output,
    pub duration: Option<Duration>,
    /// Pin under this root (`<root>/netns:<inode>/<iface>/`) so the filter
    /// outlives us.
    pub pin_root: Option<PathBuf>,
    /// Serve Prometheus metrics here.
    pub metrics: Option<SocketAddr>,
    /// Sources listed in each report.
    pub top_sources: usize,
    /// Text tables show every class (else: the classes that saw traffic and
    /// the three NAT-PMP request rows).
    pub all_classes: bool,
    /// Start even when an `--iface` does not exist yet, and attach when it
    /// appears.
    pub wait: bool,
    /// What the filters apply (the declared state).
    pub settings: Settings,
}

/// What every filter of the agent applies: the declared state that a start
/// and a SIGHUP reload enforce.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub mode: Mode,
    pub link: LinkType,
    /// Update the per-source map for every counted datagram (`--no-sources`
    /// turns it off: the cheapest drop path, and no source table).
    pub track_sources: bool,
    /// Source prefixes drop mode lets through: exactly these.
    pub allow: Vec<Prefix>,
}

/// Re-reads the options (the config file) on SIGHUP.
pub type Reload = Box<dyn FnMut() -> Result<Options>>;

/// Runs the agent until a signal or the end of `--duration`.
#[expect(
    clippy::too_many_lines,
    reason = "start-up, the select loop over ticks, link events and signals, and the exit, in order"
)]
pub async fn run(mut opts: Options, mut reload: Option<Reload>) -> Result<()> {
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
    // orderly exit. SIGHUP reloads; it never kills the agent.
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sighup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    // Subscribed before the interfaces are looked at: no event is missed.
    let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    netlink::watch(tx)?;

    for iface in &opts.ifaces {
        if let Err(e) = check_iface(iface) {
            if !opts.wait {
                return Err(e.context(
                    "add --wait (or `wait = true`) to start anyway and attach when it appears",
                ));
            }
        }
    }
    if let Some(root) = &opts.pin_root {
        if let Some(at) = pin::ensure_bpffs(root)? {
            say!(
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
                .map(|i| {
                    Ok(metrics::Source {
                        iface: i.iface.clone(),
                        maps: i.filter.maps().try_clone()?,
                        answered: i
                            .filter
                            .answered_maps()
                            .map(crate::bpf::answered::AnsweredMaps::try_clone)
                            .transpose()?,
                        attached: Arc::clone(&i.attached),
                    })
                })
                .collect::<Result<Vec<_>>>();
            match sources.and_then(|s| metrics::Server::start(*addr, s)) {
                Ok(s) => {
                    say!("note: serving Prometheus metrics on http://{addr}/metrics");
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
            Err(e) => say!("note: {}: no log of dropped datagrams: {e:#}", inst.iface),
        }
    }
    for inst in &mut instances {
        supervise(inst, &opts, None);
    }
    if let Err(e) = tend(&mut instances, opts.interval) {
        abandon(instances);
        return Err(e);
    }

    let (mut view, mut keys) = View::new(opts.output, opts.interval);
    let mut ticker = tokio::time::interval(opts.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await; // The first tick fires at once.
    let duration = opts.duration;
    let deadline = async move {
        match duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    let mut events_open = true;
    let result: Result<()> = loop {
        tokio::select! {
            _ = ticker.tick() => {
                flush(&mut logs);
                // Link events already queued go first, with their own
                // instants: a re-attach the periodic check made before
                // reading the event would report no gap.
                while events_open {
                    match events.try_recv() {
                        Ok(ev) => events_open = on_link_event(&mut instances, &opts, ev),
                        Err(tokio::sync::mpsc::error::TryRecvError::Empty) => break,
                        Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => {
                            events_open = false;
                        }
                    }
                }
                for inst in &mut instances {
                    supervise(inst, &opts, None);
                }
                if let Err(e) = tend(&mut instances, opts.interval)
                    .and_then(|()| read(&instances, view.sources_wanted(opts.top_sources)))
                    .and_then(|r| view.emit(&r, false, opts.all_classes))
                {
                    break Err(e);
                }
            }
            ev = events.recv(), if events_open => match ev {
                Some(ev) => events_open = on_link_event(&mut instances, &opts, ev),
                None => events_open = false,
            },
            _ = sighup.recv() => {
                match reload.as_mut() {
                    None => say!("nat-pmp-agent: SIGHUP: no --config file to reload; nothing changed"),
                    Some(f) => match f() {
                        Ok(new) => apply_reload(&mut instances, &mut opts, new, &mut ticker),
                        Err(e) => say!("nat-pmp-agent: SIGHUP: reloading the config file failed, nothing changed: {e:#}"),
                    },
                }
            }
            // The live view's keys: `q` takes SIGTERM's path.
            key = next_key(&mut keys) => match key {
                Some(key) => match view.on_event(&key) {
                    Ok(true) => break Ok(()),
                    Ok(false) => {}
                    Err(e) => break Err(e),
                },
                None => keys = None,
            },
            _ = sigterm.recv() => break Ok(()),
            _ = sigint.recv() => break Ok(()),
            () = &mut deadline => break Ok(()),
        }
    };
    flush(&mut logs);
    for inst in &mut instances {
        supervise(inst, &opts, None);
    }
    // The final report, also after an error (stdout may be what failed).
    let last = tend(&mut instances, opts.interval)
        .and_then(|()| read(&instances, opts.top_sources))
        .and_then(|r| view.emit(&r, true, opts.all_classes));
    drop(server);
    let mut finished = Ok(());
    for inst in instances {
        let r = finish(inst);
        if finished.is_ok() {
            finished = r;
        }
    }
    result?;
    last?;
    finished
}

/// The next event of the live view's key reader; never, without one.
async fn next_key(
    keys: &mut Option<tokio::sync::mpsc::UnboundedReceiver<crossterm::event::Event>>,
) -> Option<crossterm::event::Event> {
    match keys {
        Some(k) => k.recv().await,
        None => std::future::pending().await,
    }
}

/// The reader of one program's drop log.
type DropLog = aya_log::EbpfLogger<crate::bpf::droplog::DropLogger<&'static dyn log::Log>>;

/// One rtnetlink link event: the instances of that name are checked at
/// once, with the event's instant (for the gap they report). Returns
/// whether events keep coming.
fn on_link_event(
    instances: &mut [Instance],
    opts: &Options,
    (at, event): (Instant, Result<LinkEvent, String>),
) -> bool {
    match event {
        Ok(event) => {
            let name = match &event {
                LinkEvent::New(i) | LinkEvent::Del(i) => i.name.clone(),
            };
            for inst in instances.iter_mut().filter(|i| i.iface == name) {
                supervise(inst, opts, Some(at));
            }
            true
        }
        Err(e) => {
            say!("nat-pmp-agent: warning: {e}; interfaces are now checked every report interval only");
            false
        }
    }
}

/// The agent's part of every interval in the kernel: the source table's
/// epoch ends and its old generation is read for good
/// ([`sources::tick`]), and every CPU's drop-log budget is refilled for the
/// next interval (the program keeps no clock).
fn tend(instances: &mut [Instance], interval: Duration) -> Result<()> {
    let secs = interval.as_secs_f64().ceil().max(1.0);
    // At most a day's worth: the float is small and positive.
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "1..=86400"
    )]
    let tokens = nat_pmp_ebpf_common::DROP_LOG_PER_SEC * secs.min(86_400.0) as u64;
    for i in instances {
        let maps = i.filter.maps_mut();
        sources::tick(maps, tokens)
            .with_context(|| format!("{}: reading the source table", i.iface))?;
    }
    Ok(())
}

/// Passes what the programs logged since the last call on to `log`.
fn flush(logs: &mut [DropLog]) {
    for l in logs {
        l.flush();
    }
}
