//! `nat-pmp-agent audit`: is this router exposed on its WAN? A one-shot
//! check of the network namespace it runs in (the router's):
//!
//! 1. every UDP socket bound to 5350 or 5351, IPv4 and IPv6 (`sock_diag`), and
//!    the processes holding it ([`crate::net::sockets`]);
//! 2. whether the WAN can reach it: a wildcard or multicast address, or an
//!    address of a `--iface`, unless it is bound to another device;
//!    loopback and the addresses of other interfaces cannot be reached
//!    ([`reach`]);
//! 3. whether a drop-mode instance is pinned on each WAN and its link is
//!    attached to that very interface: what `status` reads
//!    ([`super::look`]), not a second reading of the pins;
//! 4. the answered counters of that instance ([`answered`]).
//!
//! Contract, the verdict ([`Verdict`]) and its exit code: **exposed** (1)
//! when a 5351 listener is reachable from a WAN that no attached drop-mode
//! instance protects, when a 5350 listener is reachable from a WAN at all
//! (the filter drops datagrams to 5351 only), or when answers were counted;
//! otherwise **incomplete** (2) when anything could not be checked (another
//! user's processes, the pins without root): a gap never reads as safe;
//! otherwise **safe** (0). Errors (a missing interface, netlink failing)
//! are exit 2 too, from the caller.

use std::{
    collections::BTreeSet, fmt::Write as _, io, net::IpAddr, path::PathBuf, time::SystemTime,
};

use anyhow::Result;
use nat_pmp_ebpf_common::{Mode, NATPMP_PORT};
use serde_json::{json, Value};

use super::{look, unpinned_filters, Found};
use crate::{
    bpf::{answered, pin, pin::PinDir},
    net::{
        iface::check_iface,
        netlink::{self, IfaceAddr},
        sockets::{self, Owner, Owners, UdpSocket},
        sys,
    },
};

/// The port NAT-PMP clients hear their gateway's announcements on (RFC
/// 6886 §3.2.1); the server port is [`NATPMP_PORT`].
pub const ANNOUNCE_PORT: u16 = 5350;

/// What `audit` checks.
#[derive(Clone, Debug)]
pub struct Options {
    /// The WAN interfaces.
    pub ifaces: Vec<String>,
    /// Where pinned instances live (`--pin-dir`).
    pub pin_root: PathBuf,
}

/// The one-line outcome, and the exit code it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Safe,
    Exposed,
    Incomplete,
}

impl Verdict {
    pub fn exit_code(self) -> u8 {
        match self {
            Verdict::Safe => 0,
            Verdict::Exposed => 1,
            Verdict::Incomplete => 2,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Verdict::Safe => "safe",
            Verdict::Exposed => "exposed",
            Verdict::Incomplete => "incomplete",
        }
    }
}

/// The answered counters of a WAN's instance: datagrams that left the WAN
/// from port 5351, i.e. answers this router gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AnsweredState {
    /// Nothing counts answers here; why. Never read as 0.
    NotAvailable(String),
    /// The counters could not be read; why (a gap).
    Unreadable(String),
    /// Answers counted since the instance was loaded.
    Counted { packets: u64, bytes: u64 },
}

/// The answered counters of `iface`: from the egress maps of the instance
/// pinned for it (read as `status` reads them), else from this product's
/// egress program running on it unpinned (an agent without `--pin`, found
/// by the kernel's tcx query). The one place they come from.
fn answered(iface: &str, pins: Option<&PinDir>) -> AnsweredState {
    let counted = |a: &crate::stats::answered::Answered| AnsweredState::Counted {
        packets: a.packets(),
        bytes: a.bytes(),
    };
    if let Some(pins) = pins.filter(|p| p.has_egress()) {
        return match answered::read_pinned(pins) {
            Ok(a) => counted(&a),
            Err(e) => AnsweredState::Unreadable(format!("{e:#}")),
        };
    }
    match answered::read_running(iface) {
        Ok(Some((_, a))) => counted(&a),
        Ok(None) => AnsweredState::NotAvailable(match pins {
            Some(p) => format!(
                "answered counters: not available (the instance pinned under {} has no egress \
                 program: pinned by an agent that ran without tcx or predates the egress \
                 program)",
                p.dir.display()
            ),
            None => format!(
                "answered counters: none (no egress program of this product on {iface}: no \
                 agent runs there)"
            ),
        }),
        Err(e) => AnsweredState::Unreadable(format!("{e:#}")),
    }
}

/// What protects one WAN.
#[derive(Clone, Debug)]
pub struct Guard {
    /// The instance's pin directory, when one is pinned.
    pub pinned: Option<PathBuf>,
    pub mode: Option<Mode>,
    pub prog_id: Option<u32>,
    pub link_id: Option<u32>,
    /// Its link attached to this very interface, by the kernel's word.
    pub attached: bool,
    /// Where its link is, in `status`'s words.
    pub link: String,
    /// A drop-mode instance attached here: datagrams to 5351 are dropped.
    pub protects: bool,
    /// Why it protects, or why not.
    pub why: String,
}

/// One WAN interface.
#[derive(Clone, Debug)]
pub struct Wan {
    pub iface: String,
    pub index: u32,
    pub addrs: Vec<IpAddr>,
    pub guard: Guard,
    pub answered: AnsweredState,
}

/// Whether, and from which WANs, a socket can be reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reach {
    /// The WANs whose traffic reaches it (empty: none).
    pub via: Vec<String>,
    pub why: String,
}

/// One socket on 5350/5351, with its owners and its verdict.
#[derive(Clone, Debug)]
pub struct Listener {
    pub socket: UdpSocket,
    /// The device it is bound to (`SO_BINDTODEVICE`), by name.
    pub bound_iface: Option<String>,
    pub owners: Vec<Owner>,
    /// Why no owner is named, when none is.
    pub owner_unknown: Option<String>,
    pub reach: Reach,
    /// The WANs it is reachable from that nothing protects it on.
    pub exposed_via: Vec<String>,
    /// Why it is, or is not, exposed.
    pub verdict: String,
}

/// The whole audit.
#[derive(Clone, Debug)]
pub struct Audit {
    pub time: SystemTime,
    pub netns_inode: u64,
    pub pin_root: PathBuf,
    pub wans: Vec<Wan>,
    pub listeners: Vec<Listener>,
    /// What could not be checked.
    pub gaps: Vec<String>,
    /// Why the verdict is exposed (empty otherwise).
    pub exposures: Vec<String>,
    pub verdict: Verdict,
    pub summary: String,
}

/// Runs the audit. An error (a missing interface, netlink failing) means
/// there is no verdict.
pub fn audit(opts: &Options) -> Result<Audit> {
    let mut gaps = Vec::new();
    let mut indexes = Vec::new();
    for iface in &opts.ifaces {
        indexes.push(check_iface(iface)?);
    }
    let addrs = netlink::addresses()?;
    let names = iface_names(&addrs)?;
    let pins = pinned(opts, &mut gaps);
    let unpinned = match unpinned_filters(&pins) {
        Ok(u) => u,
        Err(e) => {
            gaps.push(format!(
                "whether an unpinned filter of this product runs on a WAN: {e:#} (needs root)"
            ));
            Vec::new()
        }
    };
    let mut wans = Vec::new();
    for (iface, &index) in opts.ifaces.iter().zip(&indexes) {
        let found = pins.iter().find(|f| &f.dir.iface == iface);
        let guard = guard(iface, found, &unpinned);
        let answered = answered(iface, found.filter(|f| f.pinned.is_some()).map(|f| &f.dir));
        if let AnsweredState::Unreadable(why) = &answered {
            gaps.push(format!("the answered counters of {iface}: {why}"));
        }
        wans.push(Wan {
            iface: iface.clone(),
            index,
            addrs: addrs
                .iter()
                .filter(|a| a.index == index)
                .map(|a| a.addr)
                .collect(),
            guard,
            answered,
        });
    }

    let found = sockets::udp_bound(&[ANNOUNCE_PORT, NATPMP_PORT])?;
    let inodes: BTreeSet<u64> = found.iter().map(|s| s.inode).collect();
    let owners = if inodes.is_empty() {
        Owners::default()
    } else {
        sockets::owners(&inodes)
    };
    let mut listeners = Vec::new();
    for socket in found {
        listeners.push(listener(socket, &owners, &wans, &addrs, &names, &mut gaps));
    }

    let mut exposures: Vec<String> = listeners
        .iter()
        .filter(|l| !l.exposed_via.is_empty())
        .map(|l| {
            format!(
                "{} {}: {}",
                socket_text(&l.socket),
                owners_text(l),
                l.verdict
            )
        })
        .collect();
    for w in &wans {
        if let AnsweredState::Counted { packets, .. } = w.answered {
            if packets > 0 {
                exposures.push(format!(
                    "{packets} NAT-PMP/PCP answers left {} (counted by its instance)",
                    w.iface
                ));
            }
        }
    }
    let verdict = if !exposures.is_empty() {
        Verdict::Exposed
    } else if !gaps.is_empty() {
        Verdict::Incomplete
    } else {
        Verdict::Safe
    };
    let summary = summary(verdict, &wans, &listeners, &exposures, &gaps);
    Ok(Audit {
        time: SystemTime::now(),
        netns_inode: sys::netns_inode()?,
        pin_root: opts.pin_root.clone(),
        wans,
        listeners,
        gaps,
        exposures,
        verdict,
        summary,
    })
}

/// Interface names by index, for every interface that has an address and
/// for the devices sockets are bound to.
fn iface_names(addrs: &[IfaceAddr]) -> Result<std::collections::BTreeMap<u32, String>> {
    let mut names = std::collections::BTreeMap::new();
    for a in addrs {
        if let std::collections::btree_map::Entry::Vacant(e) = names.entry(a.index) {
            if let Some(i) = netlink::by_index(a.index)? {
                e.insert(i.name);
            }
        }
    }
    Ok(names)
}

/// What `status` finds for each WAN it could look at (the reason it could
/// not is a gap).
fn pinned(opts: &Options, gaps: &mut Vec<String>) -> Vec<Found> {
    // Without root the pin root is usually unreadable, and a path that
    // cannot be read looks like a path that does not exist: tell them apart.
    let root_readable = match pin::netns_root(&opts.pin_root).map(|r| r.try_exists()) {
        Ok(Ok(_)) => true,
        Ok(Err(e)) if e.kind() == io::ErrorKind::PermissionDenied => {
            gaps.push(format!(
                "the pinned instances under {}: permission denied (run as root)",
                opts.pin_root.display()
            ));
            false
        }
        Ok(Err(e)) => {
            gaps.push(format!(
                "the pinned instances under {}: {e}",
                opts.pin_root.display()
            ));
            false
        }
        Err(e) => {
            gaps.push(format!("the pinned instances: {e:#}"));
            false
        }
    };
    if !root_readable {
        return Vec::new();
    }
    let mut out = Vec::new();
    for iface in &opts.ifaces {
        match PinDir::find(&opts.pin_root, iface).and_then(look) {
            Ok(f) => out.push(f),
            Err(e) => gaps.push(format!("the instance pinned for {iface}: {e:#}")),
        }
    }
    out
}

/// Whether a drop-mode instance protects `iface`.
fn guard(iface: &str, found: Option<&Found>, unpinned: &[(String, sys::LinkState)]) -> Guard {
    let mut g = Guard {
        pinned: None,
        mode: None,
        prog_id: None,
        link_id: None,
        attached: false,
        link: "not pinned".to_owned(),
        protects: false,
        why: String::new(),
    };
    let running = unpinned.iter().find(|(i, _)| i == iface).map(|(_, l)| l);
    let Some(f) = found.filter(|f| f.pinned.is_some()) else {
        g.why = match (found, running) {
            (_, Some(l)) => format!(
                "{iface} runs this product's filter (program id {}, link id {}) that is not \
                 pinned: its mode cannot be read back; start the agent with --pin (and --drop) \
                 for audit to check it",
                l.prog_id, l.id
            ),
            (Some(f), None) => format!(
                "no instance pinned for {iface} under {}",
                f.dir.root.display()
            ),
            (None, None) => format!("no instance of {iface} could be read"),
        };
        return g;
    };
    g.pinned = Some(f.dir.dir.clone());
    g.prog_id = f.pinned.map(|(id, _)| id);
    g.link_id = f.link.as_ref().map(|(id, _)| *id);
    g.attached = f.attached();
    g.link = f.link_text();
    g.mode = f.state.as_ref().map(|(m, _)| *m);
    g.why = match (&f.unreadable, g.mode, g.attached) {
        (Some(why), _, _) => format!(
            "the instance pinned at {} has maps of another layout, its mode is unknown: {why}",
            f.dir.dir.display()
        ),
        (None, Some(Mode::Drop), true) => {
            g.protects = true;
            let allow = if f.allow.is_empty() {
                String::new()
            } else {
                format!(" (except from its allowlist: {})", f.allow.join(" "))
            };
            format!(
                "a drop-mode instance pinned at {}, {}: every datagram to port 5351 arriving on \
                 {iface} is dropped{allow}",
                f.dir.dir.display(),
                g.link
            )
        }
        (None, Some(Mode::Drop), false) => format!(
            "the drop-mode instance pinned at {} is {}",
            f.dir.dir.display(),
            g.link
        ),
        (None, Some(Mode::Monitor), _) => format!(
            "the instance pinned at {} is in monitor mode: it counts, it drops nothing \
             (`nat-pmp-agent mode drop --iface {iface}`)",
            f.dir.dir.display()
        ),
        (None, None, _) => format!(
            "the mode of the instance pinned at {} could not be read",
            f.dir.dir.display()
        ),
    };
    g
}

/// Which WANs can reach `s`, and why.
fn reach(s: &UdpSocket, bound: Option<&str>, wans: &[Wan], addrs: &[IfaceAddr]) -> Reach {
    let all: Vec<&Wan> = match bound {
        Some(dev) => {
            let w: Vec<&Wan> = wans.iter().filter(|w| w.iface == dev).collect();
            if w.is_empty() {
                return Reach {
                    via: Vec::new(),
                    why: format!("bound to device {dev} (SO_BINDTODEVICE), which is not a WAN"),
                };
            }
            w
        }
        None => wans.iter().collect(),
    };
    let names = |w: &[&Wan]| w.iter().map(|w| w.iface.clone()).collect::<Vec<_>>();
    let on_dev = bound.map_or(String::new(), |d| format!(" on device {d}"));
    let addr = s.addr;
    if sockets::is_wildcard(addr) {
        let shown = if addr.is_ipv6() { "[::]" } else { "0.0.0.0" };
        return Reach {
            via: names(&all),
            why: format!(
                "bound to the wildcard address {shown}{on_dev}: it receives on every interface"
            ),
        };
    }
    if addr.is_loopback() {
        return Reach {
            via: Vec::new(),
            why: format!(
                "bound to the loopback address {addr}: the kernel drops loopback-addressed \
                 packets arriving from outside"
            ),
        };
    }
    if addr.is_multicast() {
        return Reach {
            via: names(&all),
            why: format!(
                "bound to the multicast group {addr}{on_dev}: it receives the group's \
                 datagrams from every interface that joined it"
            ),
        };
    }
    let holders: Vec<u32> = addrs
        .iter()
        .filter(|a| a.addr == addr)
        .map(|a| a.index)
        .collect();
    let via: Vec<&Wan> = all
        .iter()
        .copied()
        .filter(|w| holders.contains(&w.index))
        .collect();
    if !via.is_empty() {
        let list = names(&via).join(", ");
        return Reach {
            via: names(&via),
            why: format!("bound to {addr}, an address of the WAN {list}"),
        };
    }
    if holders.is_empty() {
        return Reach {
            via: Vec::new(),
            why: format!(
                "bound to {addr}, which no interface here has (a non-local bind, or an \
                 address since removed): unreachable while no WAN has it"
            ),
        };
    }
    if let (Some(dev), Some(w)) = (bound, wans.iter().find(|w| holders.contains(&w.index))) {
        return Reach {
            via: Vec::new(),
            why: format!(
                "bound to {addr}, an address of the WAN {}, and to device {dev} \
                 (SO_BINDTODEVICE): {}'s traffic does not reach it",
                w.iface, w.iface
            ),
        };
    }
    Reach {
        via: Vec::new(),
        why: format!("bound to {addr}, an address of a LAN-side interface, not of a WAN (--iface)"),
    }
}

fn listener(
    socket: UdpSocket,
    owners: &Owners,
    wans: &[Wan],
    addrs: &[IfaceAddr],
    names: &std::collections::BTreeMap<u32, String>,
    gaps: &mut Vec<String>,
) -> Listener {
    let bound_iface = (socket.bound_ifindex != 0).then(|| {
        names
            .get(&socket.bound_ifindex)
            .cloned()
            .or_else(|| {
                netlink::by_index(socket.bound_ifindex)
                    .ok()
                    .flatten()
                    .map(|i| i.name)
            })
            .unwrap_or_else(|| format!("ifindex {}", socket.bound_ifindex))
    });
    let held = owners
        .by_inode
        .get(&socket.inode)
        .cloned()
        .unwrap_or_default();
    let owner_unknown = if !held.is_empty() {
        None
    } else if let Some(why) = &owners.no_proc {
        gaps.push(format!(
            "the process holding {}: {why}",
            socket_text(&socket)
        ));
        Some(why.clone())
    } else if !owners.unreadable.is_empty() {
        let why = format!(
            "not among the processes that could be read; {} processes of other users could \
             not be (run as root)",
            owners.unreadable.len()
        );
        gaps.push(format!(
            "the process holding {}: {why}",
            socket_text(&socket)
        ));
        Some(why)
    } else {
        Some(
            "no process of this PID namespace holds it (one in another PID namespace, or \
             the kernel)"
                .to_owned(),
        )
    };
    let reach = reach(&socket, bound_iface.as_deref(), wans, addrs);
    let mut exposed_via = Vec::new();
    let mut why = Vec::new();
    for iface in &reach.via {
        let Some(w) = wans.iter().find(|w| &w.iface == iface) else {
            continue;
        };
        if socket.port == ANNOUNCE_PORT {
            exposed_via.push(iface.clone());
            why.push(format!(
                "reachable from {iface}: the filter drops datagrams to port 5351 only, so no \
                 instance shields port {ANNOUNCE_PORT}"
            ));
        } else if w.guard.protects {
            why.push(format!("protected on {iface}: {}", w.guard.why));
        } else {
            exposed_via.push(iface.clone());
            why.push(format!(
                "no drop-mode instance protects {iface}: {}",
                w.guard.why
            ));
        }
    }
    let verdict = if reach.via.is_empty() {
        "not reachable from a WAN".to_owned()
    } else {
        why.join("; ")
    };
    Listener {
        socket,
        bound_iface,
        owners: held,
        owner_unknown,
        reach,
        exposed_via,
        verdict,
    }
}

fn socket_text(s: &UdpSocket) -> String {
    match s.addr {
        IpAddr::V6(a) => format!("[{a}]:{}", s.port),
        IpAddr::V4(a) => format!("{a}:{}", s.port),
    }
}

fn owners_text(l: &Listener) -> String {
    if l.owners.is_empty() {
        return "(owner unknown)".to_owned();
    }
    let list: Vec<String> = l
        .owners
        .iter()
        .map(|o| format!("{} (pid {})", o.name, o.pid))
        .collect();
    format!("held by {}", list.join(", "))
}

fn summary(
    verdict: Verdict,
    wans: &[Wan],
    listeners: &[Listener],
    exposures: &[String],
    gaps: &[String],
) -> String {
    let wan_list: Vec<&str> = wans.iter().map(|w| w.iface.as_str()).collect();
    let wan_list = wan_list.join(", ");
    let code = verdict.exit_code();
    match verdict {
        Verdict::Exposed => format!(
            "EXPOSED on {wan_list}: {} (exit {code})",
            exposures.join("; ")
        ),
        Verdict::Incomplete => format!(
            "INCOMPLETE: nothing exposed was found, but {} could not be checked, so this is \
             not a safe verdict (exit {code})",
            gaps.len()
        ),
        Verdict::Safe => {
            let reachable = listeners.iter().filter(|l| !l.reach.via.is_empty()).count();
            let why = if reachable == 0 {
                format!("no socket on UDP 5350/5351 is reachable from {wan_list}")
            } else {
                let guards: Vec<String> = wans
                    .iter()
                    .filter(|w| w.guard.protects)
                    .map(|w| {
                        format!(
                            "{} by {} (link id {})",
                            w.iface,
                            w.guard
                                .pinned
                                .as_ref()
                                .map_or_else(String::new, |p| p.display().to_string()),
                            w.guard.link_id.unwrap_or_default()
                        )
                    })
                    .collect();
                format!(
                    "{reachable} WAN-reachable socket(s) on 5351, every WAN they are reachable \
                     from protected by a drop-mode instance: {}",
                    guards.join(", ")
                )
            };
            let answered = if wans
                .iter()
                .all(|w| matches!(w.answered, AnsweredState::Counted { .. }))
            {
                ", and no answer counted"
            } else {
                " (answered counters not available: not part of this verdict)"
            };
            format!("SAFE: {why}{answered} (exit {code})")
        }
    }
}

fn answered_json(a: &AnsweredState) -> Value {
    match a {
        AnsweredState::NotAvailable(why) => {
            json!({"state": "not_available", "packets": null, "bytes": null, "detail": why})
        }
        AnsweredState::Unreadable(why) => {
            json!({"state": "unreadable", "packets": null, "bytes": null, "detail": why})
        }
        AnsweredState::Counted { packets, bytes } => {
            json!({"state": "counted", "packets": packets, "bytes": bytes, "detail": null})
        }
    }
}

fn answered_text(a: &AnsweredState) -> String {
    match a {
        AnsweredState::NotAvailable(why) | AnsweredState::Unreadable(why) => why.clone(),
        AnsweredState::Counted { packets, bytes } => {
            format!("answered {packets} NAT-PMP/PCP datagrams ({bytes} bytes)")
        }
    }
}

impl Audit {
    /// The audit as one JSON object (docs/audit.schema.json).
    pub fn to_json(&self) -> Value {
        let wans: Vec<Value> = self
            .wans
            .iter()
            .map(|w| {
                let g = &w.guard;
                json!({
                    "iface": w.iface,
                    "ifindex": w.index,
                    "addresses": w.addrs.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    "protection": {
                        "pinned": g.pinned.as_ref().map(|p| p.display().to_string()),
                        "mode": g.mode.map(Mode::name),
                        "prog_id": g.prog_id,
                        "link_id": g.link_id,
                        "attached": g.attached,
                        "link": g.link,
                        "protects": g.protects,
                        "why": g.why,
                    },
                    "answered": answered_json(&w.answered),
                })
            })
            .collect();
        let sockets: Vec<Value> = self
            .listeners
            .iter()
            .map(|l| {
                json!({
                    "address": l.socket.addr.to_string(),
                    "port": l.socket.port,
                    "family": if l.socket.ipv6 { "ipv6" } else { "ipv4" },
                    "bound_iface": l.bound_iface,
                    "inode": l.socket.inode,
                    "uid": l.socket.uid,
                    "owners": l.owners.iter().map(|o| json!({"pid": o.pid, "name": o.name})).collect::<Vec<_>>(),
                    "owner_unknown": l.owner_unknown,
                    "wan_reachable": !l.reach.via.is_empty(),
                    "reachable_via": l.reach.via,
                    "reason": l.reach.why,
                    "exposed": !l.exposed_via.is_empty(),
                    "exposed_via": l.exposed_via,
                    "verdict": l.verdict,
                })
            })
            .collect();
        json!({
            "time": humantime::format_rfc3339_millis(self.time).to_string(),
            "netns_inode": self.netns_inode,
            "pin_root": self.pin_root.display().to_string(),
            "wans": wans,
            "sockets": sockets,
            "gaps": self.gaps,
            "exposures": self.exposures,
            "verdict": self.verdict.name(),
            "exit_code": self.verdict.exit_code(),
            "summary": self.summary,
        })
    }

    /// The audit as text: the WANs, each socket, what could not be
    /// checked, and the verdict on the last line.
    pub fn to_text(&self) -> String {
        let mut t = format!(
            "audit of network namespace net:[{}] (sockets and addresses of this namespace \
             only), pins under {}\n",
            self.netns_inode,
            self.pin_root.display()
        );
        for w in &self.wans {
            let addrs: Vec<String> = w.addrs.iter().map(ToString::to_string).collect();
            let addrs = if addrs.is_empty() {
                "no address".to_owned()
            } else {
                addrs.join(" ")
            };
            let _ = writeln!(t, "WAN {} (ifindex {}): {addrs}", w.iface, w.index);
            let state = if w.guard.protects {
                "protected"
            } else {
                "NOT protected"
            };
            let _ = writeln!(t, "  {state}: {}", w.guard.why);
            let _ = writeln!(t, "  {}", answered_text(&w.answered));
        }
        if self.listeners.is_empty() {
            t.push_str("UDP sockets on 5350/5351: none\n");
        } else {
            t.push_str("UDP sockets on 5350/5351:\n");
        }
        for l in &self.listeners {
            let family = if l.socket.ipv6 { "IPv6" } else { "IPv4" };
            let dev = l
                .bound_iface
                .as_ref()
                .map_or_else(String::new, |d| format!(", bound to device {d}"));
            let owner = match &l.owner_unknown {
                Some(why) => format!("owner unknown: {why}"),
                None => owners_text(l),
            };
            let _ = writeln!(
                t,
                "  {} ({family}, inode {}, uid {}{dev}) {owner}",
                socket_text(&l.socket),
                l.socket.inode,
                l.socket.uid
            );
            let reach = if l.reach.via.is_empty() {
                "not WAN-reachable".to_owned()
            } else {
                format!("WAN-reachable from {}", l.reach.via.join(", "))
            };
            let _ = writeln!(t, "    {reach}: {}", l.reach.why);
            if !l.reach.via.is_empty() {
                let mark = if l.exposed_via.is_empty() {
                    "safe"
                } else {
                    "EXPOSED"
                };
                let _ = writeln!(t, "    {mark}: {}", l.verdict);
            }
        }
        for g in &self.gaps {
            let _ = writeln!(t, "could not check: {g}");
        }
        let _ = writeln!(t, "{}", self.summary);
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wan(iface: &str, index: u32, protects: bool) -> Wan {
        Wan {
            iface: iface.to_owned(),
            index,
            addrs: Vec::new(),
            guard: Guard {
                pinned: None,
                mode: protects.then_some(Mode::Drop),
                prog_id: None,
                link_id: None,
                attached: protects,
                link: String::new(),
                protects,
                why: "test".to_owned(),
            },
            answered: answered_not_available(),
        }
    }

    fn answered_not_available() -> AnsweredState {
        AnsweredState::NotAvailable("test".to_owned())
    }

    fn socket(addr: &str, port: u16, bound_ifindex: u32) -> UdpSocket {
        let addr: IpAddr = addr.parse().expect("an address");
        UdpSocket {
            addr,
            port,
            ipv6: addr.is_ipv6(),
            bound_ifindex,
            inode: 1,
            uid: 0,
        }
    }

    /// wan0 (2) 198.18.0.1, wan1 (3) 198.19.0.1 and `2001:db8::1`, lan0 (4)
    /// 198.18.1.1.
    fn lab() -> (Vec<Wan>, Vec<IfaceAddr>) {
        let a = |index, s: &str| IfaceAddr {
            index,
            addr: s.parse().expect("an address"),
        };
        (
            vec![wan("wan0", 2, false), wan("wan1", 3, true)],
            vec![
                a(2, "198.18.0.1"),
                a(3, "198.19.0.1"),
                a(3, "2001:db8::1"),
                a(4, "198.18.1.1"),
            ],
        )
    }

    #[test]
    fn reachability_follows_the_bound_address_and_device() {
        let (wans, addrs) = lab();
        #[rustfmt::skip]
        let rows: &[(&str, Option<&str>, &[&str], &str)] = &[
            // address        device        reachable from     reason says
            ("0.0.0.0",       None,         &["wan0", "wan1"], "wildcard"),
            ("::",            None,         &["wan0", "wan1"], "wildcard address [::]"),
            ("0.0.0.0",       Some("lan0"), &[],               "not a WAN"),
            ("0.0.0.0",       Some("wan1"), &["wan1"],         "on device wan1"),
            ("224.0.0.1",     None,         &["wan0", "wan1"], "multicast"),
            ("127.0.0.1",     None,         &[],               "loopback"),
            ("::1",           None,         &[],               "loopback"),
            ("198.18.0.1",    None,         &["wan0"],         "an address of the WAN wan0"),
            ("2001:db8::1",   None,         &["wan1"],         "an address of the WAN wan1"),
            ("198.18.0.1",    Some("wan1"), &[],               "and to device wan1"),
            ("198.18.1.1",    None,         &[],               "LAN-side"),
            ("203.0.113.9",   None,         &[],               "no interface here has"),
        ];
        for &(addr, dev, via, why) in rows {
            let r = reach(&socket(addr, NATPMP_PORT, 0), dev, &wans, &addrs);
            assert_eq!(r.via, via, "{addr} on {dev:?}: {r:?}");
            assert!(r.why.contains(why), "{addr} on {dev:?}: {r:?}");
        }
    }

    #[test]
    fn a_drop_mode_wan_shields_5351_but_never_5350() {
        let (wans, addrs) = lab();
        let names = std::collections::BTreeMap::new();
        let mut gaps = Vec::new();
        let owners = Owners::default();
        let l = |addr, port, gaps: &mut Vec<String>| {
            listener(socket(addr, port, 0), &owners, &wans, &addrs, &names, gaps)
        };
        // wan1 is protected, wan0 is not.
        assert!(l("198.19.0.1", NATPMP_PORT, &mut gaps)
            .exposed_via
            .is_empty());
        assert_eq!(
            l("198.18.0.1", NATPMP_PORT, &mut gaps).exposed_via,
            ["wan0"]
        );
        assert_eq!(l("0.0.0.0", NATPMP_PORT, &mut gaps).exposed_via, ["wan0"]);
        let announce = l("198.19.0.1", ANNOUNCE_PORT, &mut gaps);
        assert_eq!(announce.exposed_via, ["wan1"], "{announce:?}");
        assert!(announce.verdict.contains("5351 only"), "{announce:?}");
        assert!(l("127.0.0.1", ANNOUNCE_PORT, &mut gaps)
            .exposed_via
            .is_empty());
        // Every /proc was readable and none held them: said, not a gap.
        assert!(gaps.is_empty(), "{gaps:?}");
    }

    #[test]
    fn an_owner_hidden_by_permissions_is_a_gap() {
        let (wans, addrs) = lab();
        let owners = Owners {
            unreadable: vec![Owner {
                pid: 1,
                name: "init".to_owned(),
            }],
            ..Owners::default()
        };
        let mut gaps = Vec::new();
        let l = listener(
            socket("127.0.0.1", NATPMP_PORT, 0),
            &owners,
            &wans,
            &addrs,
            &std::collections::BTreeMap::new(),
            &mut gaps,
        );
        assert!(l.owner_unknown.is_some(), "{l:?}");
        assert_eq!(gaps.len(), 1, "{gaps:?}");
        assert!(gaps[0].contains("127.0.0.1:5351"), "{gaps:?}");
    }
}
