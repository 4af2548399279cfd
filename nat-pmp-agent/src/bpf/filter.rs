//! Loading, configuring, attaching and reading the embedded XDP program.
//!
//! Contract: [`Filter::load`] either returns a verified program with its maps
//! or an error that says why and what to do; [`Filter::attach`] never
//! replaces an XDP program someone else attached, and a failed attach leaves
//! nothing attached. Dropping a `Filter` detaches what it attached, unless it
//! is pinned ([`Filter::attach_pinned`], [`Filter::adopt`]): then the link
//! pin under bpffs keeps the program attached after the agent exits, and only
//! [`detach_pinned`] (or removing the pins) takes it away.

use std::{
    io,
    os::fd::{AsFd as _, OwnedFd},
    path::Path,
    time::SystemTime,
};

use anyhow::{anyhow, bail, Context as _, Result};
use aya::{
    maps::{Array, HashMap, IterableMap as _, MapData},
    programs::{SchedClassifier, Xdp},
    Ebpf,
};
use aya_obj::programs::XdpAttachType;
use nat_pmp_ebpf_common::{
    Config, FragEntry, FragKey, Layout, Link, Mode, Trace, EGRESS_PROGRAM_NAME, MAP_CARRIED,
    MAP_FRAGS, MAP_LAYOUT, MAP_TRACE, PROGRAM_NAME,
};

use super::{
    answered::AnsweredMaps,
    maps::{Carried, Maps},
    object::{self, PRIVILEGE_HINT},
    pin::{self, PinDir},
};
use crate::{
    net::{
        iface::{check_iface, AttachMode, AttachedMode},
        netlink,
        sys::{self, has_errno},
    },
    stats::{answered::Answered, counters::Snapshot},
};

/// The egress program's tcx link on the interface (answers counted).
#[derive(Debug)]
pub struct EgressLink {
    /// This agent's reference to the link.
    pub(super) link: OwnedFd,
    /// The link's kernel id.
    pub link_id: u32,
}

impl EgressLink {
    pub(super) fn new(link: OwnedFd, link_id: u32) -> Self {
        EgressLink { link, link_id }
    }
}

/// What [`Filter::attach`] did.
#[derive(Debug)]
pub struct Attachment {
    pub iface: String,
    /// The device attached to (a new device of the same name gets another).
    pub ifindex: u32,
    pub mode: AttachedMode,
    /// Set when auto mode fell back to skb mode: the kernel's reason.
    pub fallback_reason: Option<String>,
    /// This agent's reference to the BPF link: the link lives while this fd
    /// or its pin does.
    pub(super) link: OwnedFd,
    /// The link's kernel id.
    pub link_id: u32,
    /// The egress program's link on the same interface; `None` when it
    /// could not be attached (`egress_warning` says why).
    pub egress: Option<EgressLink>,
    /// Why answers are not counted on this interface (no tcx, Linux 6.6).
    pub egress_warning: Option<String>,
}

enum Program {
    /// Loaded by this process from the embedded object.
    Loaded(Box<Ebpf>),
    /// Opened from a pin left by an earlier agent.
    Pinned(Box<Xdp>),
}

/// The loaded program and its maps.
pub struct Filter {
    program: Program,
    pub(super) maps: Maps,
    /// First fragments the program remembers; only for a program this
    /// agent loaded (tests clear it), not for one picked up from pins.
    pub(super) frags: Option<HashMap<MapData, FragKey, FragEntry>>,
    pub(super) trace: Option<Array<MapData, Trace>>,
    /// The layout map of a program this agent loaded (pinned with the
    /// maps); a picked-up instance keeps the one it has, if any.
    layout: Option<Array<MapData, Layout>>,
    pub(super) attachment: Option<Attachment>,
    /// Where the instance is pinned, when it is.
    pub(super) pin: Option<PinDir>,
    /// The egress program's maps (answers), when the object has them.
    answered: Option<AnsweredMaps>,
    /// The egress program opened from a pin (a loaded one is in the object).
    egress_pinned: Option<Box<SchedClassifier>>,
}

impl Filter {
    /// Loads the embedded XDP program into the kernel (it is verified here)
    /// and opens its maps. Nothing is attached yet.
    pub fn load() -> Result<Self> {
        Self::load_with(false)
    }

    /// Loads the program with tracing on: every run writes its decision to
    /// the trace map, read back by [`Filter::run_traced`]. For tests: it
    /// costs a map write per frame.
    pub fn load_traced() -> Result<Self> {
        Self::load_with(true)
    }

    fn load_with(traced: bool) -> Result<Self> {
        let mut ebpf = object::load(traced)?;
        let mut maps = Maps::take(&mut ebpf)?;
        let frags = HashMap::try_from(
            ebpf.take_map(MAP_FRAGS)
                .with_context(|| format!("the XDP object has no map {MAP_FRAGS}"))?,
        )
        .with_context(|| format!("opening map {MAP_FRAGS}"))?;
        let trace = if traced {
            Some(
                Array::try_from(
                    ebpf.take_map(MAP_TRACE)
                        .with_context(|| format!("the XDP object has no map {MAP_TRACE}"))?,
                )
                .with_context(|| format!("opening map {MAP_TRACE}"))?,
            )
        } else {
            None
        };
        maps.draw_hash_key()?;
        let mut answered = AnsweredMaps::take(&mut ebpf)?;
        answered.carried = maps.carried().map(Carried::try_clone).transpose()?;
        let answered = Some(answered);
        let layout = super::maps::stamp_layout(&mut ebpf)?;
        Ok(Filter {
            program: Program::Loaded(Box::new(ebpf)),
            maps,
            frags: Some(frags),
            trace,
            layout: Some(layout),
            attachment: None,
            pin: None,
            answered,
            egress_pinned: None,
        })
    }

    /// The XDP program, e.g. for `BPF_PROG_TEST_RUN`.
    pub fn program(&self) -> Result<&Xdp> {
        match &self.program {
            Program::Loaded(ebpf) => object::xdp(ebpf.program(PROGRAM_NAME)),
            Program::Pinned(xdp) => Ok(xdp),
        }
    }

    /// The maps of this instance.
    pub fn maps(&self) -> &Maps {
        &self.maps
    }

    /// The tc egress program (answers), e.g. for `BPF_PROG_TEST_RUN`;
    /// `None` for an instance pinned without it.
    pub fn egress_program(&self) -> Option<&SchedClassifier> {
        match &self.program {
            Program::Loaded(ebpf) => object::egress(ebpf.program(EGRESS_PROGRAM_NAME)).ok(),
            Program::Pinned(_) => self.egress_pinned.as_deref(),
        }
    }

    /// The egress program's maps, when this instance has them.
    pub fn answered_maps(&self) -> Option<&AnsweredMaps> {
        self.answered.as_ref()
    }

    /// The answers this interface sent from port 5351 (exposure); `None`
    /// when this instance has no egress program.
    pub fn answered(&self) -> Option<Result<Answered>> {
        self.answered.as_ref().map(AnsweredMaps::read)
    }

    /// Starts reading the program's log of dropped datagrams (its aya-log
    /// ring buffer) into `logger`; records arrive on
    /// [`aya_log::EbpfLogger::flush`]. Keep the returned value: dropping it
    /// stops the reading (the program keeps running and its log map stays,
    /// held by the program).
    pub fn drop_log<T: log::Log>(
        &mut self,
        logger: T,
    ) -> Result<aya_log::EbpfLogger<super::droplog::DropLogger<T>>> {
        let logger = super::droplog::DropLogger { inner: logger };
        match &mut self.program {
            Program::Loaded(ebpf) => aya_log::EbpfLogger::init_with_logger(ebpf, logger)
                .context("opening the XDP program's log (aya-log ring buffer)"),
            Program::Pinned(xdp) => {
                let id = xdp
                    .info()
                    .context("reading the pinned program's info")?
                    .id();
                aya_log::EbpfLogger::init_from_id_with_logger(id, logger).with_context(|| {
                    format!(
                        "opening the log of pinned program id {id} (pinned by an agent older \
                         than the drop log? `nat-pmp-agent detach` and start again to get it)"
                    )
                })
            }
        }
    }

    /// The maps of this instance, to change the allowlist.
    pub fn maps_mut(&mut self) -> &mut Maps {
        &mut self.maps
    }

    /// Where this instance is pinned, if it is.
    pub fn pin_dir(&self) -> Option<&PinDir> {
        self.pin.as_ref()
    }

    /// Pins this (unattached) filter under `dir` when it is attached: for an
    /// agent waiting for its interface (`--wait`). Nothing is pinned before
    /// the first attach.
    pub fn pin_when_attached(&mut self, dir: &PinDir) -> Result<()> {
        if self.attachment.is_some() || self.pin.is_some() {
            bail!("internal: pin_when_attached on an attached or pinned filter");
        }
        if dir.dir.exists() {
            bail!(
                "{} already exists: an instance for {} is pinned there (or left over); see \
                 `nat-pmp-agent status`",
                dir.dir.display(),
                dir.iface
            );
        }
        self.pin = Some(dir.clone());
        Ok(())
    }

    /// When the kernel loaded the program (the counters count from then).
    pub fn loaded_at(&self) -> Option<SystemTime> {
        self.program().ok()?.info().ok()?.loaded_at()
    }

    fn program_mut(&mut self) -> Result<&mut Xdp> {
        match &mut self.program {
            Program::Loaded(ebpf) => object::xdp(ebpf.program_mut(PROGRAM_NAME)),
            Program::Pinned(xdp) => Ok(xdp),
        }
    }

    /// The configuration the program applies.
    pub fn config(&self) -> Result<Config> {
        self.maps.config()
    }

    /// Sets the policy; the running program sees it on its next packet.
    pub fn set_mode(&mut self, mode: Mode) -> Result<()> {
        self.maps.set_mode(mode)
    }

    /// Switches per-source tracking on or off (see
    /// [`Maps::set_source_tracking`]).
    pub fn set_source_tracking(&mut self, on: bool) -> Result<()> {
        self.maps.set_source_tracking(on)
    }

    /// Sets where the network header starts (the interface's link type).
    pub fn set_link(&mut self, link: Link) -> Result<()> {
        self.maps.set_link(link)
    }

    /// The policy the program currently applies.
    pub fn mode(&self) -> Result<Mode> {
        self.maps.mode()
    }

    /// Totals since load, summed over CPUs.
    pub fn snapshot(&self) -> Result<Snapshot> {
        self.maps.snapshot()
    }

    /// Attaches the program to `iface`.
    ///
    /// `Auto` tries native mode and falls back to skb mode when the driver
    /// has no native XDP or refuses it for this interface (an MTU above what
    /// its native XDP handles); it never replaces an attached program.
    pub fn attach(&mut self, iface: &str, mode: AttachMode) -> Result<&Attachment> {
        if self.attachment.is_some() {
            bail!("the program is already attached; detach it first");
        }
        let ifindex = check_iface(iface)?;
        let (link, attached, fallback_reason) = match mode {
            AttachMode::Native => (
                self.try_attach(iface, AttachedMode::Native)?,
                AttachedMode::Native,
                None,
            ),
            AttachMode::Skb => (
                self.try_attach(iface, AttachedMode::Skb)?,
                AttachedMode::Skb,
                None,
            ),
            AttachMode::Auto => match self.try_attach(iface, AttachedMode::Native) {
                Ok(link) => (link, AttachedMode::Native, None),
                Err(AttachError::NotSupported(reason)) => (
                    self.try_attach(iface, AttachedMode::Skb)?,
                    AttachedMode::Skb,
                    Some(reason),
                ),
                Err(e) => return Err(e.into()),
            },
        };
        let link_id = sys::link_state(std::os::fd::AsFd::as_fd(&link))?.id;
        let (egress, egress_warning) = match self.attach_egress(iface, ifindex) {
            Ok(e) => (e, None),
            Err(e) => (None, Some(format!("{e:#}"))),
        };
        Ok(self.attachment.insert(Attachment {
            iface: iface.to_owned(),
            ifindex,
            mode: attached,
            fallback_reason,
            link,
            link_id,
            egress,
            egress_warning,
        }))
    }

    /// Attaches the egress program to `iface` (`ifindex`) as a tcx link;
    /// `Ok(None)` for an instance without one (pinned by an older agent).
    /// An error says why answers will not be counted; the caller warns and
    /// runs on: the XDP filter does not depend on it.
    pub(super) fn attach_egress(&self, iface: &str, ifindex: u32) -> Result<Option<EgressLink>> {
        let Some(program) = self.egress_program() else {
            if self.answered.is_none() {
                return Ok(None);
            }
            bail!("internal: the egress program is missing");
        };
        let prog_fd = program.fd().context("the egress program is not loaded")?;
        // A pinned egress link of this instance that still holds a device
        // (only the XDP link went): detached first, or every answer would
        // be counted twice.
        if let Some(dir) = &self.pin {
            if let Ok(old) = sys::obj_get(&dir.path(pin::EGRESS_LINK)) {
                let _ = sys::link_detach(old.as_fd());
            }
        }
        let link = sys::tcx_egress_link_create(prog_fd.as_fd(), ifindex).map_err(|e| {
            let what = format!(
                "attaching the egress program (answers from port 5351) to {iface} as a tcx link"
            );
            if has_errno(&e, libc::EINVAL) || has_errno(&e, libc::EOPNOTSUPP) {
                anyhow!(e).context(format!(
                    "{what}: this kernel has no tcx (Linux 6.6 or later); the XDP filter runs, \
                     but answers this router sends are not counted"
                ))
            } else if has_errno(&e, libc::EPERM) || has_errno(&e, libc::EACCES) {
                anyhow!(e).context(format!("{what}: {PRIVILEGE_HINT}"))
            } else {
                anyhow!(e).context(what)
            }
        })?;
        let link_id = sys::link_state(link.as_fd())?.id;
        Ok(Some(EgressLink::new(link, link_id)))
    }

    /// Attaches like [`Filter::attach`], then pins the program, its maps and
    /// its link under `dir`, so that the filter outlives this process.
    ///
    /// On any failure nothing stays attached or pinned. Needs BPF links for
    /// XDP (Linux 5.9).
    pub fn attach_pinned(
        &mut self,
        iface: &str,
        mode: AttachMode,
        dir: &PinDir,
    ) -> Result<&Attachment> {
        if dir.dir.exists() {
            bail!(
                "{} already exists: an instance for {iface} is pinned there (or left over); \
                 see `nat-pmp-agent status`, or remove it with `nat-pmp-agent detach --iface \
                 {iface}`",
                dir.dir.display()
            );
        }
        self.attach(iface, mode)?;
        self.pin = Some(dir.clone());
        if let Err(e) = self.repin() {
            // Nothing may be left behind by an error path.
            let _ = self.detach();
            return Err(e);
        }
        self.attachment
            .as_ref()
            .context("internal: the attachment vanished while pinning")
    }

    /// Makes the program, its maps and (when attached) its link pinned
    /// under the instance's directory again: whatever is missing is pinned,
    /// a link pin that names another (defunct) link is replaced. For a
    /// first pin, after a re-attach, and after the pins were lost (bpffs
    /// unmounted, the directory removed) while the link lived on.
    pub fn repin(&mut self) -> Result<()> {
        let dir = self
            .pin
            .clone()
            .context("internal: re-pinning an unpinned filter")?;
        std::fs::create_dir_all(&dir.dir)
            .with_context(|| format!("creating the pin directory {}", dir.dir.display()))?;
        let pin_err = |what: &str, path: &Path| {
            format!("pinning {what} at {} (is it on bpffs?)", path.display())
        };
        let p = dir.path(pin::PROG);
        if !p.exists() {
            self.program_mut()?
                .pin(&p)
                .with_context(|| pin_err("the XDP program", &p))?;
        }
        let layout = self.layout.as_ref().map(|l| (MAP_LAYOUT, l.map()));
        let carried = self.maps.carried().map(|c| (MAP_CARRIED, c.map()));
        for (name, map) in self.maps.each().into_iter().chain(layout).chain(carried) {
            let p = dir.path(name);
            if !p.exists() {
                map.pin(&p).with_context(|| pin_err(name, &p))?;
            }
        }
        if let Some(answered) = &self.answered {
            let p = dir.path(pin::EGRESS_PROG);
            if !p.exists() {
                if let Some(prog) = self.egress_program() {
                    let fd = prog.fd().context("the egress program is not loaded")?;
                    sys::obj_pin(fd.as_fd(), &p)
                        .with_context(|| pin_err("the egress program", &p))?;
                }
            }
            for (name, map) in answered.each() {
                let p = dir.path(name);
                if !p.exists() {
                    map.pin(&p).with_context(|| pin_err(name, &p))?;
                }
            }
        }
        if let Some(egress) = self.attachment.as_ref().and_then(|a| a.egress.as_ref()) {
            replace_link_pin(&dir.path(pin::EGRESS_LINK), egress.link_id, &egress.link)
                .with_context(|| pin_err("the egress link", &dir.path(pin::EGRESS_LINK)))?;
        }
        if let Some(att) = &self.attachment {
            let p = dir.path(pin::LINK);
            replace_link_pin(&p, att.link_id, &att.link)
                .with_context(|| pin_err("the XDP link", &p))?;
        }
        Ok(())
    }

    /// Whether the pins will keep this filter after the agent exits: the
    /// link pin is there and names this filter's link (the program pin,
    /// while unattached), on a bpffs the host's mount namespace has too
    /// ([`pin::outlives_us`]). `false` when the bpffs was unmounted (also
    /// only in the host, under a copy this process still sees) or the pins
    /// removed.
    pub fn pins_intact(&self) -> bool {
        let Some(dir) = &self.pin else {
            return false;
        };
        let there = match &self.attachment {
            None => dir.path(pin::PROG).exists(),
            Some(att) => sys::obj_get(&dir.path(pin::LINK))
                .and_then(|fd| sys::link_state(std::os::fd::AsFd::as_fd(&fd)))
                .is_ok_and(|s| s.id == att.link_id),
        };
        there && pin::outlives_us(&dir.dir).is_ok()
    }

    /// Where this filter's link is, as the kernel says (see [`Protection`]).
    pub fn protection(&self) -> Result<Protection> {
        let Some(att) = &self.attachment else {
            return Ok(Protection::NoLink);
        };
        locate(&sys::link_state(std::os::fd::AsFd::as_fd(&att.link))?)
    }

    /// The kernel id of the program.
    pub fn program_id(&self) -> Result<u32> {
        Ok(self
            .program()?
            .info()
            .context("reading the program's info")?
            .id())
    }

    /// Attaches again after the link lost its device (the interface was
    /// deleted and made again, or someone detached the link): a new link
    /// for the same program and maps, so the counters continue, pinned in
    /// place of the old one when the instance is pinned. Returns a warning
    /// when the filter is attached but could not be pinned again.
    pub fn reattach(&mut self, iface: &str, mode: AttachMode) -> Result<Option<String>> {
        // The old link holds nothing; closing our fd lets the kernel free it
        // once its pin is replaced. The old egress link may still hold the
        // device (only the XDP link was detached): detach it, or the new
        // one would count every answer twice.
        if let Some(egress) = self.attachment.take().and_then(|a| a.egress) {
            let _ = sys::link_detach(egress.link.as_fd());
        }
        self.attach(iface, mode)?;
        if self.pin.is_some() {
            if let Err(e) = self.repin() {
                return Ok(Some(format!(
                    "re-attached, but could not pin the new link, so the filter now lasts \
                     only as long as this agent: {e:#}"
                )));
            }
        }
        Ok(None)
    }

    /// Picks up the instance an earlier agent pinned under `dir` for
    /// `iface`: the same program, link and maps, so counting continues where
    /// it was. Returns `None` when nothing is pinned there.
    ///
    /// What the link holds is asked of the kernel: attached to `iface` here,
    /// it is taken as it is; attached to nothing (the interface was deleted,
    /// or the link detached), the same program is attached anew with `mode`
    /// and its link pin replaced, or, when `iface` does not exist (yet), the
    /// filter is returned unattached; attached to another device or in
    /// another network namespace, this fails and changes nothing.
    pub fn adopt(iface: &str, mode: AttachMode, dir: &PinDir) -> Result<Option<Filter>> {
        if !dir.has_link() {
            if dir.dir.exists() {
                bail!(
                    "{} holds no link pin: a leftover of an instance that is no longer \
                     attached; remove it with `nat-pmp-agent detach --iface {iface}`",
                    dir.dir.display()
                );
            }
            return Ok(None);
        }
        if dir.legacy {
            bail!(
                "an instance for {iface} is pinned under {} by an older agent (before pins \
                 were kept per network namespace); this agent does not take it over. Detach \
                 it once with `nat-pmp-agent detach --iface {iface}` (same --pin-dir) and \
                 start again",
                dir.dir.display()
            );
        }
        let (program, link, state) = open_pinned(dir)?;
        let maps = Maps::from_pin(dir)?;
        let (answered, egress_pinned) = open_pinned_egress(dir)?;
        let mut filter = Filter {
            program: Program::Pinned(Box::new(program)),
            maps,
            frags: None,
            trace: None,
            layout: None,
            attachment: None,
            pin: Some(dir.clone()),
            answered,
            egress_pinned,
        };
        match locate(&state)? {
            Protection::Attached {
                iface: name,
                ifindex,
                mode: m,
            } if name == iface => {
                filter.take_attached(iface, ifindex, m.unwrap_or(AttachedMode::Native), link)?;
            }
            p @ (Protection::Attached { .. } | Protection::Elsewhere { .. }) => {
                return Err(not_here(dir, iface, &p, state.id));
            }
            Protection::Detached | Protection::NoLink => {
                drop(link);
                if check_iface(iface).is_ok() {
                    filter.attach(iface, mode)?;
                    if let Err(e) = filter.repin() {
                        let _ = filter.detach_link();
                        return Err(e);
                    }
                }
            }
        }
        Ok(Some(filter))
    }

    /// Takes the pinned XDP `link` that is live on `iface` (`ifindex`) as
    /// this filter's attachment, with its egress link ([`Self::adopt_egress`];
    /// re-pinned when it is a new one).
    fn take_attached(
        &mut self,
        iface: &str,
        ifindex: u32,
        mode: AttachedMode,
        link: OwnedFd,
    ) -> Result<()> {
        let link_id = sys::link_state(link.as_fd())?.id;
        let (egress, egress_warning) = match self.adopt_egress(iface, ifindex) {
            Ok(e) => (e, None),
            Err(e) => (None, Some(format!("{e:#}"))),
        };
        let repin = egress.is_some();
        self.attachment = Some(Attachment {
            iface: iface.to_owned(),
            ifindex,
            mode,
            fallback_reason: None,
            link,
            link_id,
            egress,
            egress_warning,
        });
        if repin {
            self.repin()?;
        }
        Ok(())
    }

    /// The egress link of an adopted instance whose XDP link is live on
    /// `iface`: the pinned one when it still holds this device, else a new
    /// one (the old one detached: it holds nothing, or a device that is
    /// gone). `Ok(None)` for an instance pinned without egress.
    fn adopt_egress(&self, iface: &str, ifindex: u32) -> Result<Option<EgressLink>> {
        let Some(dir) = &self.pin else {
            return Ok(None);
        };
        if self.answered.is_none() {
            bail!(
                "the instance pinned under {} has no egress program (pinned by an agent before \
                 egress counting, or on a kernel without tcx): answers are not counted; \
                 `nat-pmp-agent detach --iface {iface}` and start again to count them",
                dir.dir.display()
            );
        }
        let p = dir.path(pin::EGRESS_LINK);
        if let Ok(fd) = sys::obj_get(&p) {
            let state = sys::link_state(fd.as_fd())?;
            if state.ifindex == ifindex {
                return Ok(Some(EgressLink {
                    link: fd,
                    link_id: state.id,
                }));
            }
            let _ = sys::link_detach(fd.as_fd());
        }
        self.attach_egress(iface, ifindex)
    }

    /// Lets go of a pinned instance without detaching it: the pins keep the
    /// program attached and counting. A filter that is not pinned detaches.
    pub fn release(mut self) -> Result<()> {
        if self.pin.is_some() {
            self.attachment = None;
            return Ok(());
        }
        self.detach()
    }

    fn try_attach(&mut self, iface: &str, mode: AttachedMode) -> Result<OwnedFd, AttachError> {
        let flags = match mode {
            AttachedMode::Native => sys::XDP_FLAGS_DRV_MODE,
            AttachedMode::Skb => sys::XDP_FLAGS_SKB_MODE,
        };
        let ifindex = check_iface(iface).map_err(AttachError::Other)?;
        let program = self.program().map_err(AttachError::Other)?;
        let prog_fd = program
            .fd()
            .context("the XDP program is not loaded")
            .map_err(AttachError::Other)?;
        let created = sys::xdp_link_create(prog_fd.as_fd(), ifindex, flags);
        created.map_err(|e| {
            let what = format!("attaching XDP to {iface} in {} mode", mode.name());
            if has_errno(&e, libc::EBUSY) || has_errno(&e, libc::EEXIST) {
                AttachError::Other(anyhow!(e).context(format!("{what}: {}", busy_hint(iface))))
            } else if has_errno(&e, libc::EOPNOTSUPP) {
                AttachError::NotSupported(format!(
                    "{what}: the driver of {iface} has no native XDP support"
                ))
            } else if has_errno(&e, libc::ERANGE) && mode == AttachedMode::Native {
                AttachError::NotSupported(format!(
                    "{what}: the driver refuses native XDP at {iface}'s MTU of {} (native XDP \
                     needs a frame to fit one page: about 3,500 bytes of MTU on veth); lower \
                     the MTU, or run in skb mode",
                    iface_mtu(iface)
                ))
            } else if has_errno(&e, libc::EPERM) || has_errno(&e, libc::EACCES) {
                AttachError::Other(anyhow!(e).context(format!("{what}: {PRIVILEGE_HINT}")))
            } else {
                AttachError::Other(anyhow!(e).context(what))
            }
        })
    }

    /// Where and how the program is attached, if it is.
    pub fn attachment(&self) -> Option<&Attachment> {
        self.attachment.as_ref()
    }

    /// Detaches the links (XDP and egress) at once (whoever else holds
    /// them), keeping the pins.
    pub fn detach_link(&mut self) -> Result<()> {
        match self.attachment.take() {
            Some(att) => {
                let egress = att.egress.as_ref().map_or(Ok(()), |e| {
                    sys::link_detach(e.link.as_fd())
                        .with_context(|| format!("detaching the egress program from {}", att.iface))
                });
                sys::link_detach(std::os::fd::AsFd::as_fd(&att.link))
                    .with_context(|| format!("detaching XDP from {}", att.iface))?;
                egress
            }
            None => Ok(()),
        }
    }

    /// Detaches the program from its interface; a pinned instance also
    /// loses its pins (see [`detach_pinned`]).
    pub fn detach(&mut self) -> Result<()> {
        let detached = self.detach_link();
        if let Some(dir) = self.pin.take() {
            detach_pinned(&dir)?;
        }
        detached
    }
}

/// The XDP program and the XDP link pinned under `dir`, and the link's
/// state, checked to belong together (the link runs that program).
pub(super) fn open_pinned(dir: &PinDir) -> Result<(Xdp, OwnedFd, sys::LinkState)> {
    let prog_path = dir.path(pin::PROG);
    let program = Xdp::from_pin(&prog_path, XdpAttachType::Interface)
        .with_context(|| format!("opening the pinned XDP program {}", prog_path.display()))?;
    let prog_id = program
        .info()
        .context("reading the pinned program's info")?
        .id();
    let link_path = dir.path(pin::LINK);
    let link = sys::obj_get(&link_path)
        .with_context(|| format!("opening the pinned XDP link {}", link_path.display()))?;
    let state = sys::link_state(link.as_fd())?;
    if state.prog_id != prog_id {
        bail!(
            "the link pinned at {} runs program id {} but the program pinned beside it is id \
             {prog_id}: these pins were not made together; refusing to touch them",
            link_path.display(),
            state.prog_id
        );
    }
    Ok((program, link, state))
}

/// Why the instance pinned under `dir` for `iface`, whose XDP link (id
/// `link_id`) is live on another device (`p`), is not taken over: it still
/// protects that device.
pub(super) fn not_here(dir: &PinDir, iface: &str, p: &Protection, link_id: u32) -> anyhow::Error {
    match p {
        Protection::Attached {
            iface: name,
            ifindex,
            ..
        } => anyhow!(
            "the instance pinned under {} for {iface} is attached to {name} (ifindex \
             {ifindex}) of this namespace, not to {iface}: the interface was renamed and \
             another one took its name. Refusing to move it: the filter stays on {name}. \
             Start the agent with `--iface {name}`, or, to give it up, `nat-pmp-agent \
             detach --iface {iface}`",
            dir.dir.display()
        ),
        Protection::Elsewhere { ifindex } => anyhow!(
            "the instance pinned under {} is attached to ifindex {ifindex}, which is not a \
             device of this network namespace running it (the device moved to another \
             namespace?); refusing to touch it: it still protects that device. See it with \
             `bpftool link show id {link_id}`",
            dir.dir.display()
        ),
        Protection::Detached | Protection::NoLink => {
            anyhow!("internal: not_here for a link that holds no device")
        }
    }
}

/// The egress program and its maps pinned under `dir`; none for an
/// instance pinned without them (no tcx, or an older agent).
fn open_pinned_egress(
    dir: &PinDir,
) -> Result<(Option<AnsweredMaps>, Option<Box<SchedClassifier>>)> {
    if !dir.has_egress() {
        return Ok((None, None));
    }
    let p = dir.path(pin::EGRESS_PROG);
    let prog = SchedClassifier::from_pin(&p)
        .with_context(|| format!("opening the pinned egress program {}", p.display()))?;
    Ok((Some(AnsweredMaps::from_pin(dir)?), Some(Box::new(prog))))
}

/// Where an XDP link is, as the kernel says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Protection {
    /// Attached to `iface` (`ifindex`) of this network namespace, which runs
    /// the link's program.
    Attached {
        iface: String,
        ifindex: u32,
        mode: Option<AttachedMode>,
    },
    /// The link holds no device: it was deleted, or someone detached the
    /// link (`nat-pmp-agent detach`, `bpftool link detach`).
    Detached,
    /// The link holds device `ifindex`, but no device of this namespace with
    /// that index runs its program: the device is in another namespace.
    Elsewhere { ifindex: u32 },
    /// There is no link (never attached; waiting for the interface).
    NoLink,
}

impl Protection {
    pub fn is_attached(&self) -> bool {
        matches!(self, Protection::Attached { .. })
    }
}

/// Asks the kernel where the link described by `state` is.
pub fn locate(state: &sys::LinkState) -> Result<Protection> {
    if state.ifindex == 0 {
        return Ok(Protection::Detached);
    }
    Ok(match netlink::by_index(state.ifindex)? {
        Some(i) if i.xdp.is_some_and(|x| x.prog_id == state.prog_id) => Protection::Attached {
            iface: i.name,
            ifindex: i.index,
            mode: i.xdp.and_then(|x| x.mode),
        },
        _ => Protection::Elsewhere {
            ifindex: state.ifindex,
        },
    })
}

/// The MTU of `iface`, for a message (`?` when it cannot be read).
fn iface_mtu(iface: &str) -> String {
    std::fs::read_to_string(format!("/sys/class/net/{iface}/mtu"))
        .map_or_else(|_| "?".to_owned(), |s| s.trim().to_owned())
}

/// What to say when `iface` already runs an XDP program: whose it is, and
/// the command that really removes it (an XDP *link* cannot be removed with
/// `ip link set dev X xdp off`; the kernel refuses).
fn busy_hint(iface: &str) -> String {
    let running = netlink::xdp_attachment(iface).ok().flatten();
    let Some(x) = running else {
        return format!(
            "another XDP program is already attached to {iface}; refusing to replace it"
        );
    };
    let ours = sys::xdp_links_running(PROGRAM_NAME)
        .unwrap_or_default()
        .into_iter()
        .find(|l| l.prog_id == x.prog_id);
    let any_link = aya::programs::loaded_links()
        .filter_map(Result::ok)
        .find(|l| l.program_id() == x.prog_id)
        .map(|l| l.id());
    match (ours, any_link) {
        (Some(l), _) => format!(
            "another XDP program is already attached to {iface}: this product's own filter \
             (program id {}, link id {}), of another agent: a pinned instance (see \
             `nat-pmp-agent status`; remove it with `nat-pmp-agent detach --iface {iface}`, \
             with the --pin-dir it was pinned under) or an agent still running for {iface} \
             (stop that agent); refusing to attach twice. `bpftool link detach id {}` \
             removes it whatever holds it (`ip link set dev {iface} xdp off` cannot)",
            l.prog_id, l.id, l.id
        ),
        (None, Some(link)) => format!(
            "another XDP program (id {}) is attached to {iface} through BPF link id {link}; \
             refusing to replace it. See it with `bpftool net show dev {iface}`; if it is \
             stale, `bpftool link detach id {link}` removes it (`ip link set dev {iface} xdp \
             off` cannot remove a link)",
            x.prog_id
        ),
        (None, None) => format!(
            "another XDP program (id {}) is already attached to {iface}; refusing to replace \
             it. See it with `ip link show dev {iface}` or `bpftool net show dev {iface}`, \
             and remove it (`ip link set dev {iface} xdp off`) only if it is yours and stale",
            x.prog_id
        ),
    }
}

/// Detaches and removes the instance pinned under `dir`: the link is
/// detached at once (even while a running agent holds it), then every pin
/// and the directory go. Returns whether there was anything to remove.
///
/// A link that the kernel says is live on a device of another network
/// namespace is left alone (an error): these pins are not this namespace's.
pub fn detach_pinned(dir: &PinDir) -> Result<bool> {
    if !dir.dir.exists() {
        return Ok(false);
    }
    let link = dir.path(pin::LINK);
    if link.exists() {
        let fd = sys::obj_get(&link)?;
        let state = sys::link_state(std::os::fd::AsFd::as_fd(&fd))?;
        if let Protection::Elsewhere { ifindex } = locate(&state)? {
            bail!(
                "the filter pinned under {} is attached to ifindex {ifindex}, which is not a \
                 device of this network namespace: it protects another namespace's interface. \
                 Run `nat-pmp-agent detach` in that namespace, or `bpftool link detach id {}`",
                dir.dir.display(),
                state.id
            );
        }
        sys::link_detach(std::os::fd::AsFd::as_fd(&fd))
            .with_context(|| format!("detaching the pinned filter from {}", dir.iface))?;
    }
    let egress = dir.path(pin::EGRESS_LINK);
    if egress.exists() {
        let fd = sys::obj_get(&egress)?;
        sys::link_detach(fd.as_fd())
            .with_context(|| format!("detaching the pinned egress program from {}", dir.iface))?;
    }
    dir.remove()?;
    Ok(true)
}

/// Pins `link` (kernel id `id`) at `path`, replacing a pin that names
/// another (defunct) link; nothing to do when it is already pinned there.
fn replace_link_pin(path: &Path, id: u32, link: &OwnedFd) -> Result<()> {
    let current = sys::obj_get(path)
        .and_then(|fd| sys::link_state(fd.as_fd()))
        .ok();
    if current.map(|s| s.id) == Some(id) {
        return Ok(());
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e).with_context(|| format!("replacing the link pin {}", path.display()))
        }
    }
    sys::obj_pin(link.as_fd(), path)
}

/// Why an attach failed: `NotSupported` lets auto mode fall back.
enum AttachError {
    NotSupported(String),
    Other(anyhow::Error),
}

impl From<AttachError> for anyhow::Error {
    fn from(e: AttachError) -> Self {
        match e {
            AttachError::NotSupported(reason) => {
                anyhow!("{reason}; use --xdp-mode skb (or auto) to attach in generic mode")
            }
            AttachError::Other(e) => e,
        }
    }
}
