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

use std::{
    io::{IsTerminal as _, Write as _},
    net::SocketAddr,
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant, SystemTime},
};

use anyhow::{bail, Context as _, Result};
use crossterm::{cursor::MoveTo, terminal::Clear, terminal::ClearType, QueueableCommand as _};
use nat_pmp_ebpf_common::{Config, Mode, Prefix};
use tokio::signal::unix::{signal, SignalKind};

use crate::{
    bpf::{
        pin::{self, PinDir},
        sources, Filter, Protection,
    },
    net::{
        iface::{check_iface, AttachMode, LinkType},
        netlink::{self, LinkEvent},
    },
    output::{
        metrics,
        report::{self, Guard, Header, Report},
    },
    say,
    stats::{allow, counters::Snapshot, sources::Sources},
};

/// How reports are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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

/// What the agent knows about one interface's protection.
#[derive(Debug, Default)]
struct Watch {
    /// The last state read from the kernel.
    guard: Guard,
    /// Since when the interface has been unprotected (while it is).
    lost_at: Option<Instant>,
    /// Unprotected time before `lost_at`.
    unprotected: Duration,
    /// `nat-pmp-agent detach` removed it: the agent does not undo that.
    operator_detached: bool,
    /// The pins were found gone (said once until they are back).
    pins_lost: bool,
    /// The last re-attach's gap, from the new-link event to attached.
    last_gap: Option<Duration>,
    /// When a periodic check re-attached before the agent read the
    /// new-link event: the gap is known once the event is read.
    unreported: Option<Instant>,
    /// The filter was attached at some point of this run.
    ever_attached: bool,
}

/// One interface's filter, and whether this run created it.
struct Instance {
    filter: Filter,
    iface: String,
    /// Picked up from pins an earlier agent left, with its settings as they
    /// were (restored if the start fails).
    adopted: Option<(Config, Vec<Prefix>)>,
    watch: Watch,
    /// Shared with the metrics endpoint.
    attached: Arc<AtomicBool>,
}

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

    let mut view = View::new(opts.output);
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
                    .and_then(|()| read(&instances, opts.top_sources))
                    .and_then(|r| view.emit(&r, false))
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
        .and_then(|r| view.emit(&r, true));
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

/// Loads (or picks up) the filter of one interface and attaches it (when
/// the interface exists).
fn start(iface: &str, opts: &Options) -> Result<Instance> {
    let mut adopted = None;
    let filter = if let Some(root) = &opts.pin_root {
        let dir = PinDir::find(root, iface)?;
        if let Some(mut f) = Filter::adopt(iface, opts.attach, &dir)? {
            let before = (f.config()?, f.maps().allowed()?);
            let lines = match apply(&mut f, iface, &opts.settings) {
                Ok(lines) => lines,
                Err(e) => {
                    restore(&mut f, &before);
                    return Err(e);
                }
            };
            say!(
                "note: picked up the filter pinned under {}: its counters continue",
                dir.dir.display()
            );
            for line in lines {
                say!("note: {iface}: {line} (this run's settings)");
            }
            if let Some(att) = f.attachment() {
                let kept = att.mode;
                let asked = match opts.attach {
                    AttachMode::Native => Some(crate::net::iface::AttachedMode::Native),
                    AttachMode::Skb => Some(crate::net::iface::AttachedMode::Skb),
                    AttachMode::Auto => None,
                };
                if asked.is_some_and(|a| a != kept) {
                    say!(
                        "note: {iface}: stays in {} XDP mode as pinned; --xdp-mode {} takes \
                         effect after `nat-pmp-agent detach --iface {iface}` (re-attaching in \
                         another mode would open a gap)",
                        kept.name(),
                        asked.map_or("auto", crate::net::iface::AttachedMode::name)
                    );
                }
            }
            adopted = Some(before);
            f
        } else {
            let mut f = Filter::load()?;
            apply(&mut f, iface, &opts.settings)?;
            if check_iface(iface).is_ok() {
                f.attach_pinned(iface, opts.attach, &dir)?;
            } else {
                f.pin_when_attached(&dir)?;
            }
            f
        }
    } else {
        let mut f = Filter::load()?;
        apply(&mut f, iface, &opts.settings)?;
        if check_iface(iface).is_ok() {
            f.attach(iface, opts.attach)?;
        }
        f
    };
    if let Some(reason) = filter.attachment().and_then(|a| a.fallback_reason.as_ref()) {
        say!("note: {reason}; attached in skb (generic) mode instead, which is slower");
    }
    // What start-up attached counts as attached: a loss before the first
    // check is then reported as one.
    let attached = filter.attachment().is_some();
    Ok(Instance {
        filter,
        iface: iface.to_owned(),
        adopted,
        watch: Watch {
            guard: Guard {
                attached,
                ..Guard::default()
            },
            ever_attached: attached,
            ..Watch::default()
        },
        attached: Arc::new(AtomicBool::new(false)),
    })
}

/// Makes `f` apply `s`; returns each difference from what it applied
/// before, as a line ("mode was drop, now monitor").
fn apply(f: &mut Filter, iface: &str, s: &Settings) -> Result<Vec<String>> {
    let before = f.config()?;
    let mut lines = Vec::new();
    f.set_mode(s.mode)?;
    if before.mode != s.mode as u32 {
        let was = if before.drops() { "drop" } else { "monitor" };
        lines.push(format!("mode was {was}, now {}", s.mode.name()));
    }
    // The link type of an interface that does not exist yet is resolved
    // when it is attached.
    if check_iface(iface).is_ok() {
        let link = s.link.resolve(iface)?;
        f.set_link(link)?;
        if before.link != link as u32 {
            lines.push(format!("link type now {}", link.name()));
        }
    }
    f.set_source_tracking(s.track_sources)?;
    if before.tracks_sources() != s.track_sources {
        let onoff = |b: bool| if b { "on" } else { "off" };
        lines.push(format!(
            "per-source tracking was {}, now {}",
            onoff(before.tracks_sources()),
            onoff(s.track_sources)
        ));
    }
    let (added, removed) = f.maps_mut().set_allowlist(&s.allow)?;
    for p in added {
        lines.push(format!("allowlist: added {}", allow::show(&p)));
    }
    for p in removed {
        lines.push(format!(
            "allowlist: removed {} (not in this run's --allow or `allow` key)",
            allow::show(&p)
        ));
    }
    Ok(lines)
}

/// Puts a picked-up instance's settings back as they were.
fn restore(f: &mut Filter, (config, allowed): &(Config, Vec<Prefix>)) {
    let _ = f.maps_mut().set_allowlist(allowed);
    let _ = f.maps_mut().set_config(*config);
}

/// Undoes a failed start-up: what this run attached or pinned goes, what it
/// picked up from pins is left exactly as it was.
fn abandon(instances: Vec<Instance>) {
    for mut inst in instances {
        let _ = match inst.adopted.take() {
            Some(before) => {
                restore(&mut inst.filter, &before);
                inst.filter.release()
            }
            None => inst.filter.detach(),
        };
    }
}

/// Reads from the kernel whether `inst` protects its interface, says so
/// when that changed, and attaches again where it can. `event` is when a
/// link event for the interface arrived.
#[expect(
    clippy::too_many_lines,
    reason = "one state machine, each arm says what it does"
)]
fn supervise(inst: &mut Instance, opts: &Options, event: Option<Instant>) {
    let iface = inst.iface.clone();
    let now = Instant::now();
    let protection = inst.filter.protection().unwrap_or_else(|e| {
        say!("nat-pmp-agent: {iface}: cannot read the filter's link from the kernel: {e:#}");
        Protection::Detached
    });
    let w = &mut inst.watch;
    if let (Some(at), Some(done)) = (event, w.unreported) {
        // The event of a re-attach already made (the periodic check ran
        // between the kernel's event and this process reading it).
        if at <= done {
            let gap = done - at;
            w.last_gap = Some(gap);
            say!(
                "nat-pmp-agent: {iface}: that re-attach came {:.2} ms after its new-link event",
                gap.as_secs_f64() * 1e3
            );
        }
        w.unreported = None;
    }
    let was_attached = w.guard.attached;
    let pinned = inst.filter.pin_dir().cloned();
    let (mut state, mut alert): (&'static str, Option<String>) = ("attached", None);
    match &protection {
        Protection::Attached { iface: name, .. } => {
            if name != &iface {
                alert = Some(format!(
                    "note: {iface} was renamed {name}; the filter stays on that device"
                ));
            }
        }
        Protection::Detached | Protection::NoLink | Protection::Elsewhere { .. } => {
            let pins_removed = pinned.as_ref().is_some_and(|d| !d.dir.exists())
                && matches!(protection, Protection::Detached);
            if pins_removed && !w.operator_detached {
                w.operator_detached = true;
                say!(
                    "nat-pmp-agent: {iface}: the filter was removed with `nat-pmp-agent detach` \
                     (link detached, pins gone): {iface} is NOT protected. This agent leaves it \
                     so; restart it to protect {iface} again"
                );
            }
            if w.operator_detached {
                state = "detached";
                alert = Some(format!(
                    "NOT PROTECTED: {iface}: removed with `nat-pmp-agent detach`; restart the \
                     agent to protect it again"
                ));
            } else if check_iface(&iface).is_ok() {
                // A device of that name is here: the old one came back as a
                // new device (PPPoE reconnect), or someone detached the link.
                if w.ever_attached {
                    say!(
                        "nat-pmp-agent: {iface}: the filter is no longer attached ({}); \
                         attaching it again",
                        describe(&protection)
                    );
                }
                if let Protection::Elsewhere { .. } = protection {
                    // Ours, on a device that left this namespace: let it go.
                    let _ = inst.filter.detach_link();
                }
                let resolved = opts.settings.link.resolve(&iface);
                let started = Instant::now();
                let attached = resolved
                    .and_then(|l| inst.filter.set_link(l))
                    .and_then(|()| inst.filter.reattach(&iface, opts.attach));
                let in_kernel = started.elapsed();
                match attached {
                    Ok(warning) => {
                        let att = inst.filter.attachment();
                        let gap = event.map(|t| t.elapsed());
                        w.last_gap = gap.or(w.last_gap);
                        w.unreported = (gap.is_none() && w.ever_attached).then(Instant::now);
                        if w.ever_attached {
                            w.guard.reattachments += 1;
                        }
                        say!(
                            "nat-pmp-agent: {iface}: attached (ifindex {}, {} mode){}; {}",
                            att.map_or(0, |a| a.ifindex),
                            att.map_or("?", |a| a.mode.name()),
                            gap.map_or(String::new(), |g| format!(
                                " {:.2} ms after its new-link event ({:.2} ms of it attaching)",
                                g.as_secs_f64() * 1e3,
                                in_kernel.as_secs_f64() * 1e3
                            )),
                            mode_phrase(&inst.filter),
                        );
                        if let Some(warn) = warning {
                            say!("nat-pmp-agent: {iface}: warning: {warn}");
                        }
                    }
                    Err(e) => {
                        state = "reattaching";
                        alert = Some(format!(
                            "NOT PROTECTED: {iface}: attaching the filter again failed: {e:#}"
                        ));
                        if was_attached || w.guard.state != "reattaching" {
                            say!("nat-pmp-agent: {iface}: NOT protected: attaching the filter again failed (retrying every report): {e:#}");
                        }
                    }
                }
            } else {
                state = if w.ever_attached || !opts.wait {
                    "gone"
                } else {
                    "waiting"
                };
                alert = Some(if state == "waiting" {
                    format!("WAITING: {iface} does not exist yet; the filter attaches the moment it appears")
                } else {
                    format!(
                        "NOT PROTECTED: {iface} is gone (deleted, or a PPP/VPN reconnect); the \
                         filter attaches again the moment it is back"
                    )
                });
                if was_attached {
                    say!(
                        "nat-pmp-agent: {iface}: the interface is gone; the filter is not \
                         attached to anything. It attaches again the moment {iface} is back"
                    );
                } else if w.guard.state.is_empty() && state == "waiting" {
                    say!("nat-pmp-agent: {iface}: waiting for the interface to appear (--wait)");
                }
            }
        }
    }
    // What holds after acting: read back, not assumed (read once more only
    // when this call acted on a loss).
    let attached =
        protection.is_attached() || inst.filter.protection().is_ok_and(|p| p.is_attached());
    if attached && state != "attached" {
        state = "attached";
    }
    if attached {
        w.ever_attached = true;
        if let Some(t) = w.lost_at.take() {
            w.unprotected += now.saturating_duration_since(t);
        }
        if matches!(state, "attached") && alert.as_deref().is_some_and(|a| a.starts_with("NOT")) {
            alert = None;
        }
    } else if w.lost_at.is_none() {
        w.lost_at = Some(now);
    }
    // Pins: in place, or made again where the bpffs allows.
    let pinned_ok = match &pinned {
        None => None,
        Some(_) if w.operator_detached => Some(false),
        Some(dir) => {
            if inst.filter.pins_intact() {
                w.pins_lost = false;
                Some(true)
            } else if !attached {
                // Waiting or gone: pinned again with the next attach.
                Some(
                    inst.filter
                        .pin_dir()
                        .is_some_and(|d| d.path(pin::PROG).exists()),
                )
            } else {
                let again = pin::ensure_bpffs(&dir.root).and_then(|_| inst.filter.repin());
                match again {
                    Ok(()) if inst.filter.pins_intact() => {
                        say!(
                            "nat-pmp-agent: {iface}: its pins under {} were gone (bpffs \
                             unmounted, or removed); pinned again",
                            dir.dir.display()
                        );
                        w.pins_lost = false;
                        Some(true)
                    }
                    result => {
                        if !w.pins_lost {
                            say!(
                                "nat-pmp-agent: {iface}: its pins under {} are gone, or on a \
                                 bpffs the host no longer has (unmounted?), and could not be \
                                 made again{}: the filter now lasts only as long as this agent \
                                 runs",
                                dir.dir.display(),
                                result.err().map_or(String::new(), |e| format!(" ({e:#})"))
                            );
                        }
                        w.pins_lost = true;
                        if alert.is_none() {
                            alert = Some(format!(
                                "NOT PINNED: {iface}: the pins under {} are gone; the filter \
                                 lasts only as long as this agent runs",
                                dir.dir.display()
                            ));
                        }
                        Some(false)
                    }
                }
            }
        }
    };
    let unprotected = w.unprotected
        + w.lost_at
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
    w.guard = Guard {
        attached,
        state,
        ifindex: inst
            .filter
            .attachment()
            .map(|a| a.ifindex)
            .filter(|_| attached),
        pinned: pinned_ok,
        unprotected_secs: unprotected.as_secs_f64(),
        reattachments: w.guard.reattachments,
        last_reattach_ms: w.last_gap.map(|g| g.as_secs_f64() * 1e3),
        allow: inst
            .filter
            .maps()
            .allowed()
            .map(|v| v.iter().map(allow::show).collect())
            .unwrap_or_default(),
        alert,
    };
    inst.attached.store(attached, Ordering::Relaxed);
}

/// What the kernel says, for a message.
fn describe(p: &Protection) -> String {
    match p {
        Protection::Attached { iface, ifindex, .. } => format!("attached to {iface} ({ifindex})"),
        Protection::Detached => {
            "its link holds no device: detached by someone (`bpftool link detach`?) or the \
             device was replaced"
                .to_owned()
        }
        Protection::Elsewhere { ifindex } => {
            format!("its link holds ifindex {ifindex}, not a device of this namespace")
        }
        Protection::NoLink => "not attached yet".to_owned(),
    }
}

/// "dropping" or "counting", read from the filter's config map.
fn mode_phrase(f: &Filter) -> &'static str {
    match f.mode() {
        Ok(Mode::Drop) => "dropping datagrams to port 5351",
        Ok(Mode::Monitor) => "counting only (monitor mode)",
        Err(_) => "mode unreadable",
    }
}

/// SIGHUP: the config file's settings become the declared state; every
/// difference is applied and reported, what needs a restart is said.
fn apply_reload(
    instances: &mut [Instance],
    opts: &mut Options,
    new: Options,
    ticker: &mut tokio::time::Interval,
) {
    say!("nat-pmp-agent: SIGHUP: reloading the config file");
    if new.ifaces != opts.ifaces {
        say!(
            "nat-pmp-agent: SIGHUP: the interfaces changed ({} -> {}); that takes a restart, \
             the running ones stay as they are",
            opts.ifaces.join(","),
            new.ifaces.join(",")
        );
    }
    if new.pin_root != opts.pin_root || new.metrics != opts.metrics || new.attach != opts.attach {
        say!(
            "nat-pmp-agent: SIGHUP: pinning, --metrics and --xdp-mode changes take a restart; \
             kept as they are"
        );
    }
    let mut changed = false;
    for inst in instances.iter_mut() {
        match apply(&mut inst.filter, &inst.iface, &new.settings) {
            Ok(lines) => {
                for line in &lines {
                    say!("nat-pmp-agent: SIGHUP: {}: {line}", inst.iface);
                }
                changed |= !lines.is_empty();
            }
            Err(e) => say!(
                "nat-pmp-agent: SIGHUP: {}: applying the new settings failed: {e:#}",
                inst.iface
            ),
        }
    }
    if new.interval != opts.interval {
        *ticker = tokio::time::interval(new.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        say!(
            "nat-pmp-agent: SIGHUP: interval now {} s",
            new.interval.as_secs_f64()
        );
        changed = true;
    }
    if !changed && new.top_sources == opts.top_sources {
        say!("nat-pmp-agent: SIGHUP: no setting changed");
    }
    opts.settings = new.settings;
    opts.interval = new.interval;
    opts.top_sources = new.top_sources;
    opts.wait = new.wait;
}

/// Ends one instance and says, from the kernel, what stays behind.
fn finish(inst: Instance) -> Result<()> {
    let iface = inst.iface.clone();
    let protection = inst.filter.protection().unwrap_or(Protection::Detached);
    let pinned = inst.filter.pin_dir().cloned();
    // Pins on a bpffs the host no longer has die with this process.
    let pins_ok = inst.filter.pins_intact();
    let phrase = mode_phrase(&inst.filter);
    let operator = inst.watch.operator_detached;
    let r = inst.filter.release();
    match (&pinned, &protection) {
        _ if operator => say!(
            "nat-pmp-agent: {iface}: NOT protected: its filter was removed with `nat-pmp-agent \
             detach`"
        ),
        (
            Some(dir),
            Protection::Attached {
                iface: dev,
                ifindex,
                ..
            },
        ) if pins_ok && r.is_ok() => {
            say!(
                "nat-pmp-agent: the filter stays attached to {dev} (ifindex {ifindex}) and keeps \
                 {phrase} (pinned under {}); see it with `nat-pmp-agent status`, remove it with \
                 `nat-pmp-agent detach --iface {iface}`",
                dir.dir.display()
            );
        }
        (Some(dir), Protection::Attached { .. }) => say!(
            "nat-pmp-agent: {iface}: NOT protected from now on: the pins under {} are gone, so \
             the filter went with this agent",
            dir.dir.display()
        ),
        (Some(dir), _) if pins_ok || dir.path(pin::PROG).exists() => say!(
            "nat-pmp-agent: {iface}: NOT protected: {iface} is not there; the instance pinned \
             under {} is attached to nothing until an agent attaches it again (start one with \
             --wait to have it attach the moment {iface} is back)",
            dir.dir.display()
        ),
        (Some(_), _) => {
            say!("nat-pmp-agent: {iface}: NOT protected: nothing is attached or pinned");
        }
        (None, Protection::Attached { .. }) => say!(
            "nat-pmp-agent: detached from {iface}: it is no longer filtered (with --pin the \
             filter stays while no agent runs)"
        ),
        (None, _) => say!("nat-pmp-agent: {iface}: nothing was attached"),
    }
    r
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

/// One reading of every interface: its header (with the live mode and
/// protection), its counters and its top sources.
fn read(instances: &[Instance], top: usize) -> Result<Vec<(Header, Snapshot, Sources)>> {
    instances
        .iter()
        .map(|i| {
            Ok((
                Header {
                    iface: i.iface.clone(),
                    mode: i.filter.mode()?.name(),
                    xdp_mode: match (i.watch.guard.attached, i.filter.attachment()) {
                        (true, Some(a)) => a.mode.name(),
                        _ => "none",
                    },
                    guard: Some(i.watch.guard.clone()),
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
    fn new(output: Output) -> Self {
        let stdout_tty = std::io::stdout().is_terminal();
        let table = match output {
            Output::Auto => stdout_tty,
            Output::Table => true,
            Output::Json => false,
        };
        View {
            table,
            redraw: table && stdout_tty,
            started: Instant::now(),
            previous: None,
        }
    }

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
