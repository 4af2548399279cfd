//! The subcommands that talk to pinned instances: `status`, `mode` and
//! `detach`. They work with or without a running agent: the pins under
//! bpffs are the instance. [`audit`] asks whether the router is exposed on
//! its WAN, and reads the pins as `status` does.

pub mod audit;

use std::{
    fmt::Write as _,
    io::Write as _,
    path::Path,
    time::{Duration, SystemTime},
};

use crate::{
    bpf::{
        answered, detach_pinned, locate,
        maps::pinned_layout,
        pin::{self, PinDir},
        sources, Maps, Protection,
    },
    net::{
        iface::check_iface,
        netlink::{self, XdpAttachment},
        sys,
    },
    output::report::{Header, Report},
    stats::{allow, answered::Answered, sources::Sources},
};
use anyhow::{bail, Context as _, Result};
use aya::programs::ProgramInfo;

/// Sources `status` lists per instance.
const STATUS_TOP_SOURCES: usize = 10;
use nat_pmp_ebpf_common::{Layout, Mode, Prefix};
use serde_json::{json, Value};

/// Writes `text` to stdout; a closed pipe (`| head`) is an error, not a
/// panic as with `println!`.
fn emit(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .context("writing to stdout")
}

/// What `status` found for one interface.
struct Found {
    dir: PinDir,
    /// The pinned program's kernel id and load time, when pinned.
    pinned: Option<(u32, Option<SystemTime>)>,
    /// Which XDP program the interface runs (`Err`: no such interface here).
    on_iface: Result<Option<XdpAttachment>, String>,
    /// The pinned instance's mode and counters.
    state: Option<(Mode, crate::stats::counters::Snapshot)>,
    /// Its top sources.
    sources: Option<Sources>,
    /// Where the kernel says its link is (when pinned).
    link: Option<(u32, Protection)>,
    /// Its allowlist.
    allow: Vec<String>,
    /// Why its maps could not be read (pinned by an agent with another map
    /// layout): the rest of its state is then unknown.
    unreadable: Option<String>,
    /// Its egress program (answers from 5351), by the kernel's word.
    egress: Egress,
    /// The answers it counted (with egress pins).
    answered: Option<Answered>,
    /// The layout and agent version it was pinned with (`None`: pinned
    /// before layouts were versioned, or nothing pinned).
    layout: Option<Layout>,
}

/// Where an instance's egress program is.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Egress {
    /// Its tcx link holds this interface.
    Attached { link_id: u32 },
    /// Pinned, but its link holds no device here (`ifindex` 0: none).
    Detached { link_id: u32, ifindex: u32 },
    /// No egress pins: a kernel without tcx, or an older agent's instance.
    NotPinned,
}

impl Egress {
    fn read(dir: &PinDir) -> Result<Egress> {
        let p = dir.path(pin::EGRESS_LINK);
        if !p.exists() {
            return Ok(Egress::NotPinned);
        }
        let fd = sys::obj_get(&p)?;
        let state = sys::link_state(std::os::fd::AsFd::as_fd(&fd))?;
        let here = check_iface(&dir.iface).ok();
        Ok(if state.ifindex != 0 && Some(state.ifindex) == here {
            Egress::Attached { link_id: state.id }
        } else {
            Egress::Detached {
                link_id: state.id,
                ifindex: state.ifindex,
            }
        })
    }

    fn text(&self) -> String {
        match self {
            Egress::Attached { link_id } => format!("attached (tcx link id {link_id})"),
            Egress::Detached { link_id, ifindex } => format!(
                "NOT attached (tcx link id {link_id} holds ifindex {ifindex}); an agent \
                 attaches it again when it runs"
            ),
            Egress::NotPinned => "not attached (no egress pins: a kernel without tcx, or an \
                 instance pinned before egress counting)"
                .to_owned(),
        }
    }

    fn json(&self) -> Value {
        match self {
            Egress::Attached { link_id } => json!({"attached": true, "link_id": link_id}),
            Egress::Detached { link_id, ifindex } => {
                json!({"attached": false, "link_id": link_id, "ifindex": ifindex})
            }
            Egress::NotPinned => json!({"attached": false, "link_id": null}),
        }
    }
}

impl Found {
    /// The layout it was pinned with, in words.
    fn layout_text(&self) -> String {
        match &self.layout {
            Some(l) => format!("layout {} by agent {}", l.version, l.agent_version()),
            None => "layout unversioned: pinned by an agent from before layout versions".into(),
        }
    }

    /// Attached, by the kernel's word, to the device of that name here.
    fn attached(&self) -> bool {
        matches!(&self.link, Some((_, Protection::Attached { iface, .. })) if *iface == self.dir.iface)
    }

    /// Where the link is, in words.
    fn link_text(&self) -> String {
        let Some((link_id, p)) = &self.link else {
            return "not pinned".to_owned();
        };
        match p {
            Protection::Attached { iface, ifindex, .. } if *iface == self.dir.iface => {
                format!("attached to {iface} (ifindex {ifindex}, link id {link_id})")
            }
            Protection::Attached { iface, ifindex, .. } => format!(
                "NOT attached to {}: its link (id {link_id}) holds {iface} (ifindex {ifindex}), \
                 a renamed device",
                self.dir.iface
            ),
            Protection::Detached | Protection::NoLink => format!(
                "NOT attached: its link (id {link_id}) holds no device ({} was deleted or \
                 replaced, or the link detached); an agent attaches it again when it runs",
                self.dir.iface
            ),
            Protection::Elsewhere { ifindex } => format!(
                "NOT attached here: its link (id {link_id}) holds ifindex {ifindex} of another \
                 network namespace"
            ),
        }
    }

    fn xdp_mode(&self) -> &'static str {
        match &self.on_iface {
            Ok(Some(XdpAttachment { mode: Some(m), .. })) if self.attached() => m.name(),
            _ if self.attached() => "other",
            _ => "none",
        }
    }
}

fn look(dir: PinDir) -> Result<Found> {
    let on_iface = if check_iface(&dir.iface).is_ok() {
        Ok(netlink::xdp_attachment(&dir.iface)?)
    } else {
        Err(format!(
            "interface {} does not exist in this network namespace",
            dir.iface
        ))
    };
    if !dir.has_link() {
        return Ok(Found {
            dir,
            pinned: None,
            on_iface,
            state: None,
            sources: None,
            link: None,
            allow: Vec::new(),
            unreadable: None,
            egress: Egress::NotPinned,
            answered: None,
            layout: None,
        });
    }
    let egress = Egress::read(&dir)?;
    let layout = pinned_layout(&dir)?;
    let prog = dir.path(pin::PROG);
    let info = ProgramInfo::from_pin(&prog)
        .with_context(|| format!("reading the pinned program {}", prog.display()))?;
    let fd = sys::obj_get(&dir.path(pin::LINK))?;
    let link_state = sys::link_state(std::os::fd::AsFd::as_fd(&fd))?;
    let pinned = Some((info.id(), info.loaded_at()));
    let link = Some((link_state.id, locate(&link_state)?));
    // Maps of another layout (an agent of another version pinned them):
    // the link and the program still say whether the WAN is protected.
    let maps = match Maps::from_pin(&dir) {
        Ok(m) => m,
        Err(e) => {
            return Ok(Found {
                dir,
                pinned,
                on_iface,
                state: None,
                sources: None,
                link,
                allow: Vec::new(),
                unreadable: Some(format!("{e:#}")),
                egress,
                answered: None,
                layout,
            })
        }
    };
    let read_answers = if dir.has_egress() {
        Some(answered::read_pinned(&dir)?)
    } else {
        None
    };
    Ok(Found {
        dir,
        pinned,
        on_iface,
        state: Some((maps.mode()?, maps.snapshot()?)),
        sources: Some(sources::read(&maps, STATUS_TOP_SOURCES)?),
        link,
        allow: maps.allowed()?.iter().map(allow::show).collect(),
        unreadable: None,
        egress,
        answered: read_answers,
        layout,
    })
}

/// `nat-pmp-agent status`.
pub fn status(root: &Path, ifaces: &[String], as_json: bool, all_classes: bool) -> Result<()> {
    let dirs = if ifaces.is_empty() {
        pin::instances(root)?
    } else {
        ifaces
            .iter()
            .map(|i| PinDir::find(root, i))
            .collect::<Result<_>>()?
    };
    let found = dirs.into_iter().map(look).collect::<Result<Vec<_>>>()?;
    let unpinned = unpinned_filters(&found)?;
    let now = SystemTime::now();
    if as_json {
        let instances: Vec<Value> = found.iter().map(|f| instance_json(f, now)).collect();
        let unpinned: Vec<Value> = unpinned
            .iter()
            .map(|(iface, l)| json!({"iface": iface, "prog_id": l.prog_id, "link_id": l.id}))
            .collect();
        let v = json!({
            "time": humantime::format_rfc3339_millis(now).to_string(),
            "pin_root": root.display().to_string(),
            "instances": instances,
            "unpinned": unpinned,
        });
        return emit(&format!("{v}\n"));
    }
    let mut text = String::new();
    if found.is_empty() {
        text = format!("no pinned instances under {}\n", root.display());
    }
    for f in &found {
        text.push_str(&instance_text(f, now, all_classes));
    }
    for (iface, l) in &unpinned {
        let _ = writeln!(
            text,
            "{iface}: runs this product's filter (program id {}, link id {}) that is not \
             pinned under {}: a running agent holds it, or its pins are on another bpffs (or \
             were unmounted while a process held them). `bpftool link detach id {}` removes \
             it",
            l.prog_id,
            l.id,
            root.display(),
            l.id
        );
    }
    emit(&text)
}

/// This product's filters attached to interfaces of this namespace that
/// none of `found` accounts for: the kernel's list of links, not the pins.
fn unpinned_filters(found: &[Found]) -> Result<Vec<(String, sys::LinkState)>> {
    let mut out = Vec::new();
    for l in sys::xdp_links_running(nat_pmp_ebpf_common::PROGRAM_NAME)? {
        if found
            .iter()
            .any(|f| f.link.as_ref().is_some_and(|(id, _)| *id == l.id))
        {
            continue;
        }
        if let Protection::Attached { iface, .. } = locate(&l)? {
            out.push((iface, l));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

fn uptime(loaded: Option<SystemTime>, now: SystemTime) -> Duration {
    loaded
        .and_then(|t| now.duration_since(t).ok())
        .unwrap_or_default()
}

fn iface_json(f: &Found) -> Value {
    match &f.on_iface {
        Ok(Some(x)) => json!({
            "prog_id": x.prog_id,
            "xdp_mode": x.mode.map_or("other", |m| m.name()),
        }),
        Ok(None) => Value::Null,
        Err(e) => json!({ "error": e }),
    }
}

fn instance_json(f: &Found, now: SystemTime) -> Value {
    let mut v = match (&f.pinned, &f.state) {
        (Some((_, loaded)), Some((mode, snap))) => {
            let header = Header {
                iface: f.dir.iface.clone(),
                mode: mode.name(),
                xdp_mode: f.xdp_mode(),
                guard: None,
            };
            Report {
                header: &header,
                uptime: uptime(*loaded, now),
                totals: *snap,
                last_interval: None,
                is_final: false,
                sources: f.sources.clone(),
                answered: f.answered.clone(),
            }
            .to_json(now)
        }
        _ => json!({ "iface": f.dir.iface }),
    };
    if let Some(m) = v.as_object_mut() {
        m.shift_remove("time");
        m.insert(
            "pinned".into(),
            f.pinned
                .map_or(Value::Null, |_| json!(f.dir.dir.display().to_string())),
        );
        m.insert("attached".into(), json!(f.attached()));
        m.insert("link".into(), json!(f.link_text()));
        m.insert("allow".into(), json!(f.allow));
        m.insert("legacy_layout".into(), json!(f.dir.legacy));
        m.insert("layout_version".into(), json!(f.layout.map(|l| l.version)));
        m.insert(
            "agent_version".into(),
            json!(f.layout.as_ref().map(Layout::agent_version)),
        );
        m.insert("unreadable".into(), json!(f.unreadable));
        m.insert(
            "prog_id".into(),
            f.pinned.map_or(Value::Null, |(id, _)| json!(id)),
        );
        m.insert(
            "loaded_at".into(),
            f.pinned.and_then(|(_, t)| t).map_or(Value::Null, |t| {
                json!(humantime::format_rfc3339_seconds(t).to_string())
            }),
        );
        m.insert("iface_xdp".into(), iface_json(f));
        m.insert("egress".into(), f.egress.json());
    }
    v
}

fn instance_text(f: &Found, now: SystemTime, all_classes: bool) -> String {
    let on_iface = match &f.on_iface {
        Ok(Some(x)) => format!(
            "XDP program id {} ({})",
            x.prog_id,
            x.mode.map_or("other mode", |m| m.name())
        ),
        Ok(None) => "no XDP program".to_owned(),
        Err(e) => e.clone(),
    };
    if let (Some(why), Some((id, _))) = (&f.unreadable, &f.pinned) {
        return format!(
            "{}: pinned under {} ({}), {} (program id {id}); its maps are not this agent's: \
             {why}\n",
            f.dir.iface,
            f.dir.dir.display(),
            f.layout_text(),
            f.link_text()
        );
    }
    let (Some((id, loaded)), Some((mode, snap))) = (&f.pinned, &f.state) else {
        return format!(
            "{}: nothing pinned under {}; the interface runs {on_iface}\n",
            f.dir.iface,
            f.dir.dir.display()
        );
    };
    let attached = if f.attached() {
        format!("{}, {on_iface}", f.link_text())
    } else {
        format!(
            "{} (program id {id}); the interface runs {on_iface}",
            f.link_text()
        )
    };
    let header = Header {
        iface: f.dir.iface.clone(),
        mode: mode.name(),
        xdp_mode: f.xdp_mode(),
        guard: None,
    };
    let report = Report {
        header: &header,
        uptime: uptime(*loaded, now),
        totals: *snap,
        last_interval: None,
        is_final: false,
        sources: f.sources.clone(),
        answered: f.answered.clone(),
    };
    let allow = if f.allow.is_empty() {
        "allowlist empty".to_owned()
    } else {
        format!("allowing {}", f.allow.join(" "))
    };
    let legacy = if f.dir.legacy {
        " (pinned by an older agent: starting the agent on it upgrades it in place)"
    } else {
        ""
    };
    let layout = f.layout_text();
    format!(
        "{}: pinned under {}{legacy} ({layout}), {attached}, mode {}, {allow}\n  egress: {}\n{}\n",
        f.dir.iface,
        f.dir.dir.display(),
        mode.name(),
        f.egress.text(),
        report.to_table(all_classes)
    )
}

/// `nat-pmp-agent mode drop|monitor --iface X`.
pub fn set_mode(root: &Path, iface: &str, mode: Mode) -> Result<()> {
    let dir = PinDir::find(root, iface)?;
    if !dir.has_link() {
        bail!(
            "no pinned instance for {iface} under {}: `mode` switches an agent started with \
             --pin (and the same --pin-dir); see `nat-pmp-agent status`",
            root.display()
        );
    }
    let mut maps = Maps::from_pin(&dir)?;
    let old = maps.mode()?;
    maps.set_mode(mode)?;
    emit(&format!("{iface}: {} -> {}\n", old.name(), mode.name()))
}

/// `nat-pmp-agent allow add|del|list --iface X [PREFIX]`: `change` is the
/// prefix and whether to add it; `None` lists.
pub fn allow(root: &Path, iface: &str, change: Option<(Prefix, bool)>) -> Result<()> {
    let dir = PinDir::find(root, iface)?;
    if !dir.has_link() {
        bail!(
            "no pinned instance for {iface} under {}: `allow` changes an agent started with \
             --pin (and the same --pin-dir); without --pin, give --allow at start",
            root.display()
        );
    }
    let mut maps = Maps::from_pin(&dir)?;
    match change {
        Some((p, true)) => {
            maps.allow(p)?;
            emit(&format!("{iface}: allowing {}\n", allow::show(&p)))
        }
        Some((p, false)) => {
            if !maps.disallow(p)? {
                bail!(
                    "{} is not in the allowlist of {iface}; see `nat-pmp-agent allow list \
                     --iface {iface}`",
                    allow::show(&p)
                );
            }
            emit(&format!(
                "{iface}: no longer allowing {}\n",
                allow::show(&p)
            ))
        }
        None => {
            let mut text = String::new();
            for p in maps.allowed()? {
                text.push_str(&allow::show(&p));
                text.push('\n');
            }
            if text.is_empty() {
                text = format!("{iface}: the allowlist is empty\n");
            }
            emit(&text)
        }
    }
}

/// `nat-pmp-agent detach --iface X`.
pub fn detach(root: &Path, iface: &str) -> Result<()> {
    let dir = PinDir::find(root, iface)?;
    if !detach_pinned(&dir)? {
        bail!(
            "nothing is pinned for {iface} under {}; an agent started without --pin detaches \
             when it stops (SIGTERM/SIGINT)",
            root.display()
        );
    }
    emit(&format!(
        "{iface}: detached; removed {} (programs, links, maps: XDP and egress)\n",
        dir.dir.display()
    ))?;
    if check_iface(iface).is_ok() {
        if let Some(x) = netlink::xdp_attachment(iface)? {
            emit(&format!(
                "note: {iface} still runs XDP program id {} (not a pinned instance of ours)\n",
                x.prog_id
            ))?;
        }
    }
    Ok(())
}
