//! One interface's filter under the live agent: starting it (loading or
//! picking up pins), applying the declared settings, supervising its
//! protection from the kernel's word, reloading and finishing.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::Result;
use nat_pmp_ebpf_common::{Config, Mode, Prefix};

use super::{Options, Settings};
use crate::{
    bpf::{
        pin::{self, PinDir},
        upgrade::{takeover, Takeover},
        Filter, Protection,
    },
    net::iface::{check_iface, AttachMode},
    output::report::Guard,
    say,
    stats::allow,
};

/// What the agent knows about one interface's protection.
#[derive(Debug, Default)]
pub(super) struct Watch {
    /// The last state read from the kernel.
    pub(super) guard: Guard,
    /// Since when the interface has been unprotected (while it is).
    pub(super) lost_at: Option<Instant>,
    /// Unprotected time before `lost_at`.
    pub(super) unprotected: Duration,
    /// `nat-pmp-agent detach` removed it: the agent does not undo that.
    pub(super) operator_detached: bool,
    /// The pins were found gone (said once until they are back).
    pub(super) pins_lost: bool,
    /// The last re-attach's gap, from the new-link event to attached.
    pub(super) last_gap: Option<Duration>,
    /// When a periodic check re-attached before the agent read the
    /// new-link event: the gap is known once the event is read.
    pub(super) unreported: Option<Instant>,
    /// The filter was attached at some point of this run.
    pub(super) ever_attached: bool,
}

/// One interface's filter, and whether this run created it.
pub(super) struct Instance {
    pub(super) filter: Filter,
    pub(super) iface: String,
    /// Picked up from pins an earlier agent left, with its settings as they
    /// were (restored if the start fails).
    pub(super) adopted: Option<(Config, Vec<Prefix>)>,
    pub(super) watch: Watch,
    /// Shared with the metrics endpoint.
    pub(super) attached: Arc<AtomicBool>,
}

/// Loads (or picks up) the filter of one interface and attaches it (when
/// the interface exists).
pub(super) fn start(iface: &str, opts: &Options) -> Result<Instance> {
    let mut adopted = None;
    let filter = if let Some(root) = &opts.pin_root {
        let dir = PinDir::find(root, iface)?;
        let found = match takeover(&dir)? {
            Takeover::Adopt => Filter::adopt(iface, opts.attach, &dir)?.map(|f| (f, None)),
            Takeover::Upgrade(from) => {
                let (f, upgraded) = Filter::upgrade(iface, opts.attach, &dir, from)?;
                Some((f, Some(upgraded)))
            }
        };
        if let Some((mut f, upgraded)) = found {
            if let Some(u) = &upgraded {
                say!("note: {iface}: {}", u.note());
            }
            let before = (f.config()?, f.maps().allowed()?);
            let lines = match apply(&mut f, iface, &opts.settings) {
                Ok(lines) => lines,
                Err(e) => {
                    restore(&mut f, &before);
                    return Err(e);
                }
            };
            if upgraded.is_none() {
                say!(
                    "note: picked up the filter pinned under {}: its counters continue",
                    dir.dir.display()
                );
            }
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
    if let Some(why) = filter.attachment().and_then(|a| a.egress_warning.as_ref()) {
        say!("warning: {iface}: {why}");
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
pub(super) fn apply(f: &mut Filter, iface: &str, s: &Settings) -> Result<Vec<String>> {
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
pub(super) fn restore(f: &mut Filter, (config, allowed): &(Config, Vec<Prefix>)) {
    let _ = f.maps_mut().set_allowlist(allowed);
    let _ = f.maps_mut().set_config(*config);
}

/// Undoes a failed start-up: what this run attached or pinned goes, what it
/// picked up from pins is left exactly as it was.
pub(super) fn abandon(instances: Vec<Instance>) {
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
pub(super) fn supervise(inst: &mut Instance, opts: &Options, event: Option<Instant>) {
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
                        if let Some(why) = att.and_then(|a| a.egress_warning.as_ref()) {
                            say!("nat-pmp-agent: {iface}: warning: {why}");
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
pub(super) fn describe(p: &Protection) -> String {
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
pub(super) fn mode_phrase(f: &Filter) -> &'static str {
    match f.mode() {
        Ok(Mode::Drop) => "dropping datagrams to port 5351",
        Ok(Mode::Monitor) => "counting only (monitor mode)",
        Err(_) => "mode unreadable",
    }
}

/// SIGHUP: the config file's settings become the declared state; every
/// difference is applied and reported, what needs a restart is said.
pub(super) fn apply_reload(
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
    if !changed && new.top_sources == opts.top_sources && new.all_classes == opts.all_classes {
        say!("nat-pmp-agent: SIGHUP: no setting changed");
    }
    opts.settings = new.settings;
    opts.interval = new.interval;
    opts.top_sources = new.top_sources;
    opts.all_classes = new.all_classes;
    opts.wait = new.wait;
}

/// Ends one instance and says, from the kernel, what stays behind.
pub(super) fn finish(inst: Instance) -> Result<()> {
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
