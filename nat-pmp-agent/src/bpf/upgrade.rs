//! Taking over an instance pinned with another layout, or by another agent
//! version, without ever leaving the interface unprotected: the in-place
//! upgrade.
//!
//! What [`takeover`] decides: an instance pinned by this very agent build
//! (same layout, same agent version) is adopted as it is
//! ([`Filter::adopt`]); one pinned with an older layout, before layouts
//! were versioned, in the old per-interface folder, or by another agent
//! version, is upgraded ([`Filter::upgrade`]); one pinned with a *newer*
//! layout is refused (this agent cannot know its maps), and nothing is
//! touched.
//!
//! How [`Filter::upgrade`] keeps the WAN protected:
//!
//! 1. It reads what the old instance holds, through its pins: the policy
//!    (mode, link type, per-source tracking), the allowlist, and every
//!    class counter (XDP and answers, with what earlier upgrades carried).
//!    Per-source state (the source table, the fragment table) restarts.
//! 2. It loads this agent's program, gives it that policy and allowlist
//!    (so it drops exactly what the old one drops from its first packet),
//!    and pins it in a staging folder (`upgrade:<iface>`).
//! 3. It swaps the program on the *existing* XDP link with
//!    `BPF_LINK_UPDATE` (`BPF_F_REPLACE`: only if the link still runs the
//!    old program): the device never runs without one, and the link keeps
//!    its id, its pins and its XDP mode. The tcx egress link is swapped the
//!    same way.
//! 4. Once no run of the old program is in flight (an RCU grace period),
//!    its final counts go into the new instance's `NATPMP_CARRIED`, which
//!    every reader adds: the counters continue.
//! 5. The staging folder, now with the link pins too, takes the old
//!    folder's place in one `renameat2(RENAME_EXCHANGE)`, and the old
//!    pins go (unpinned, never detached).
//!
//! Until step 3 nothing of the old instance has changed, and an error
//! leaves it exactly as it was (the staging folder removed). From step 3 on
//! the link runs the new program with the old policy: whatever fails after
//! that, the interface stays protected, and the error says so.

use std::os::fd::{AsFd as _, OwnedFd};

use anyhow::{anyhow, bail, Context as _, Result};
use aya::programs::{SchedClassifier, Xdp};
use nat_pmp_ebpf_common::Layout;

use super::{
    answered::AnsweredMaps,
    filter::{locate, not_here, open_pinned, Attachment, EgressLink, Filter, Protection},
    maps::{pinned_layout, Counted, Maps},
    object,
    pin::{self, PinDir},
};
use crate::{
    net::{iface::check_iface, iface::AttachMode, iface::AttachedMode, sys},
    stats::counters::Snapshot,
};

/// What an agent does with the instance pinned for its interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Takeover {
    /// Nothing pinned there, or an instance of this agent build: take it as
    /// it is (or load a new one).
    Adopt,
    /// An instance of another layout or agent version (`None`: pinned
    /// before layouts were versioned): upgrade it in place.
    Upgrade(Option<Layout>),
}

/// What this agent does with the instance pinned under `dir`; an error for
/// one pinned with a newer layout than this agent's.
pub fn takeover(dir: &PinDir) -> Result<Takeover> {
    if !dir.has_link() {
        return Ok(Takeover::Adopt);
    }
    let found = pinned_layout(dir)?;
    decide(dir, found, object::layout())
}

/// [`takeover`] for an instance whose layout is `found`, by an agent whose
/// own is `ours`.
fn decide(dir: &PinDir, found: Option<Layout>, ours: Layout) -> Result<Takeover> {
    match found {
        Some(l) if l.version > ours.version => bail!(
            "the instance pinned under {} has layout {} (agent {}), newer than this agent's \
             layout {} (agent {}): this agent cannot read its maps and leaves it as it is \
             (it keeps protecting {}). Run the newer agent, or, to go back to this one, \
             `nat-pmp-agent detach --iface {}` first (the interface is open until this agent \
             attaches)",
            dir.dir.display(),
            l.version,
            l.agent_version(),
            ours.version,
            ours.agent_version(),
            dir.iface,
            dir.iface
        ),
        Some(l) if l == ours && !dir.legacy => Ok(Takeover::Adopt),
        other => Ok(Takeover::Upgrade(other)),
    }
}

/// How an upgrade went, for the operator's note.
#[derive(Debug)]
pub struct Upgraded {
    /// The old instance's layout (`None`: before layouts were versioned).
    pub from: Option<Layout>,
    /// Where it was pinned.
    pub old_dir: std::path::PathBuf,
    /// Program ids before and after; `None` when it was not attached (no
    /// swap: nothing to keep protected).
    pub swapped: Option<Swap>,
}

/// The swap on the live link.
#[derive(Debug)]
pub struct Swap {
    pub link_id: u32,
    pub old_prog: u32,
    pub new_prog: u32,
}

impl Upgraded {
    /// One line for the operator.
    pub fn note(&self) -> String {
        let from = self.from.map_or_else(
            || "an unversioned layout".to_owned(),
            |l| format!("layout {} (agent {})", l.version, l.agent_version()),
        );
        let to = object::layout();
        let how = match &self.swapped {
            Some(s) => format!(
                "program id {} -> {} swapped on XDP link id {} (BPF_LINK_UPDATE: never detached)",
                s.old_prog, s.new_prog, s.link_id
            ),
            None => "it was not attached: the new program attaches as usual".to_owned(),
        };
        format!(
            "upgraded the instance pinned under {} in place, from {from} to layout {} (agent \
             {}): {how}; mode, allowlist and counters carried over, per-source state restarts",
            self.old_dir.display(),
            to.version,
            to.agent_version()
        )
    }
}

/// What the old instance holds that the new one carries on.
struct Held {
    maps: Maps,
    answered: Option<AnsweredMaps>,
}

impl Held {
    fn open(dir: &PinDir) -> Result<Self> {
        let cannot = || {
            format!(
                "reading the instance pinned under {} to carry it over (its layout differs in a \
                 map this agent cannot read; it is left as it is and keeps protecting {}: \
                 detach it with `nat-pmp-agent detach --iface {}` and start again, which opens \
                 the interface until the new filter attaches)",
                dir.dir.display(),
                dir.iface,
                dir.iface
            )
        };
        let maps = Maps::from_pin(dir).with_context(cannot)?;
        let answered = if dir.has_egress() {
            Some(AnsweredMaps::from_pin(dir).with_context(cannot)?)
        } else {
            None
        };
        Ok(Held { maps, answered })
    }

    /// Every counter so far (with what earlier upgrades carried).
    fn totals(&self) -> Result<(Snapshot, Option<Snapshot>)> {
        let answered = self
            .answered
            .as_ref()
            .map(AnsweredMaps::totals)
            .transpose()?;
        Ok((self.maps.snapshot()?, answered))
    }
}

impl Filter {
    /// Upgrades the instance pinned under `dir` for `iface` in place (see
    /// the module's documentation): returns the new filter, pinned where
    /// this agent pins `iface` and attached where the old one was, and
    /// what happened. `from` is the old layout ([`takeover`]).
    pub fn upgrade(
        iface: &str,
        mode: AttachMode,
        dir: &PinDir,
        from: Option<Layout>,
    ) -> Result<(Filter, Upgraded)> {
        let held = Held::open(dir)?;
        let (old_prog, link, state) = open_pinned(dir)?;
        let protection = locate(&state)?;
        let here = match &protection {
            Protection::Attached {
                iface: name,
                ifindex,
                mode,
            } if name == iface => Some((*ifindex, mode.unwrap_or(AttachedMode::Native))),
            Protection::Attached { .. } | Protection::Elsewhere { .. } => {
                return Err(not_here(dir, iface, &protection, state.id));
            }
            Protection::Detached | Protection::NoLink => None,
        };
        let mut new = Filter::load()?;
        new.maps
            .set_config(held.maps.config()?)
            .context("giving the new program the old instance's policy")?;
        new.maps
            .set_allowlist(&held.maps.allowed()?)
            .context("giving the new program the old instance's allowlist")?;
        let target = PinDir::new(&dir.root, iface)?;
        let mut upgraded = Upgraded {
            from,
            old_dir: dir.dir.clone(),
            swapped: None,
        };
        let Some((ifindex, attached)) = here else {
            // Nothing to keep protected: the old pins go, the new program
            // attaches (or waits for the interface) like a first start.
            drop(link);
            super::filter::detach_pinned(dir)?;
            sys::wait_for_program_runs();
            new.carry(&held)?;
            if check_iface(iface).is_ok() {
                new.attach_pinned(iface, mode, &target)?;
            } else {
                new.pin_when_attached(&target)?;
            }
            return Ok((new, upgraded));
        };
        let staging = PinDir::staging(&dir.root, iface)?;
        // A staging folder left by an upgrade that stopped half-way holds
        // pins only: removing them detaches nothing.
        staging.remove()?;
        new.carry(&held)?;
        new.pin = Some(staging.clone());
        if let Err(e) = new.repin() {
            let _ = staging.remove();
            return Err(e.context("pinning the new program before the swap"));
        }
        let swap = match swap_xdp(&new, &old_prog, &link, &state) {
            Ok(s) => s,
            Err(e) => {
                let _ = staging.remove();
                return Err(e.context(format!(
                    "swapping the new program in on {iface}'s XDP link id {}: nothing was \
                     changed, the old instance keeps protecting {iface}",
                    state.id
                )));
            }
        };
        // From here on the link runs the new program with the old policy.
        let protected = |e: anyhow::Error| {
            e.context(format!(
                "the new program runs on {iface}'s XDP link id {} and protects it, but the \
                 upgrade could not finish",
                state.id
            ))
        };
        let (egress, egress_warning) = match new.swap_egress(dir, iface, ifindex) {
            Ok(e) => (e, None),
            Err(e) => (None, Some(format!("{e:#}"))),
        };
        sys::wait_for_program_runs();
        new.carry(&held).map_err(protected)?;
        new.attachment = Some(Attachment {
            iface: iface.to_owned(),
            ifindex,
            mode: attached,
            fallback_reason: None,
            link,
            link_id: state.id,
            egress,
            egress_warning,
        });
        new.repin().map_err(protected)?;
        move_into_place(&staging, dir, &target).map_err(protected)?;
        new.pin = Some(target);
        upgraded.swapped = Some(swap);
        Ok((new, upgraded))
    }

    /// Writes the old instance's totals into this (new) filter's carried
    /// counters. Before the swap (so that a reader never sees them drop)
    /// and again after it, when the old program runs no more.
    fn carry(&mut self, held: &Held) -> Result<()> {
        let (counted, answered) = held.totals()?;
        let Some(carried) = self.maps.carried_mut() else {
            bail!("internal: this agent's object has no carried-counters map");
        };
        carried.set(Counted::Xdp, &counted)?;
        if let Some(answered) = answered {
            carried.set(Counted::Answered, &answered)?;
        }
        Ok(())
    }

    /// Swaps the new egress program in on the old instance's tcx link when
    /// it still holds `ifindex`; else attaches it anew (the old one, if
    /// any, detached: answers are counted once). `Ok(None)` never: an
    /// upgraded instance always has egress, or the error says why not.
    fn swap_egress(&self, dir: &PinDir, iface: &str, ifindex: u32) -> Result<Option<EgressLink>> {
        let new_prog = self
            .egress_program()
            .context("internal: the new object has no egress program")?
            .fd()
            .context("the new egress program is not loaded")?;
        let old = sys::obj_get(&dir.path(pin::EGRESS_LINK)).ok();
        if let Some(link) = old {
            let state = sys::link_state(link.as_fd())?;
            if state.ifindex == ifindex {
                let old_prog = SchedClassifier::from_pin(dir.path(pin::EGRESS_PROG))
                    .context("opening the old egress program's pin")?;
                let old_fd = old_prog.fd().context("the old egress program's fd")?;
                sys::link_update(link.as_fd(), new_prog.as_fd(), old_fd.as_fd())
                    .map_err(|e| anyhow!(e))
                    .with_context(|| {
                        format!(
                            "swapping the egress program on {iface}'s tcx link id {}",
                            state.id
                        )
                    })?;
                return Ok(Some(EgressLink::new(link, state.id)));
            }
            let _ = sys::link_detach(link.as_fd());
        }
        self.attach_egress(iface, ifindex)
    }
}

/// `BPF_LINK_UPDATE` of the XDP `link` (`state`: running `old`, the old
/// pinned program, as [`open_pinned`] checked) to the new filter's program.
fn swap_xdp(new: &Filter, old: &Xdp, link: &OwnedFd, state: &sys::LinkState) -> Result<Swap> {
    let old_fd = old.fd().context("the old program's fd")?;
    let new_prog = new.program()?;
    let new_fd = new_prog.fd().context("the new XDP program is not loaded")?;
    sys::link_update(link.as_fd(), new_fd.as_fd(), old_fd.as_fd()).map_err(|e| {
        let hint = if sys::has_errno(&e, libc::EPERM) {
            ": the link no longer runs the old program (someone replaced it meanwhile)"
        } else if sys::has_errno(&e, libc::EINVAL) {
            ": the kernel refused the new program for this link (another program or attach \
             type)"
        } else {
            ""
        };
        anyhow!(e).context(format!("BPF_LINK_UPDATE{hint}"))
    })?;
    Ok(Swap {
        link_id: state.id,
        old_prog: state.prog_id,
        new_prog: new.program_id()?,
    })
}

/// Puts the staging folder where this agent pins the interface: in one
/// exchange with the old folder when they are the same place, else (an
/// instance of the old per-interface layout) by a rename; then the old pins
/// go (unpinned only: the link is pinned in the new folder too).
fn move_into_place(staging: &PinDir, old: &PinDir, target: &PinDir) -> Result<()> {
    if old.dir == target.dir {
        sys::rename_exchange(&staging.dir, &target.dir)?;
        // `staging` now holds the old pins.
        return staging.remove();
    }
    if let Some(parent) = target.dir.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::rename(&staging.dir, &target.dir).with_context(|| {
        format!(
            "moving {} to {}",
            staging.dir.display(),
            target.dir.display()
        )
    })?;
    old.remove()
}

#[cfg(test)]
mod tests {
    use nat_pmp_ebpf_common::LAYOUT_VERSION;

    use super::*;

    fn dir(legacy: bool) -> PinDir {
        PinDir {
            iface: "wan0".to_owned(),
            root: "/sys/fs/bpf/x".into(),
            dir: "/sys/fs/bpf/x/wan0".into(),
            legacy,
        }
    }

    #[test]
    fn the_same_build_adopts_and_every_other_layout_or_version_upgrades() {
        let ours = Layout::new(LAYOUT_VERSION, "1.2.0");
        let d = dir(false);
        assert_eq!(decide(&d, Some(ours), ours).unwrap(), Takeover::Adopt);
        for other in [
            None,
            Some(Layout::new(LAYOUT_VERSION - 1, "1.1.0")),
            Some(Layout::new(LAYOUT_VERSION, "1.1.9")),
        ] {
            assert_eq!(
                decide(&d, other, ours).unwrap(),
                Takeover::Upgrade(other),
                "{other:?}"
            );
        }
        // The old per-interface folder moves, even with this very layout.
        assert_eq!(
            decide(&dir(true), Some(ours), ours).unwrap(),
            Takeover::Upgrade(Some(ours))
        );
    }

    #[test]
    fn a_newer_layout_is_refused_naming_both_layouts() {
        let ours = Layout::new(LAYOUT_VERSION, "1.2.0");
        let newer = Layout::new(LAYOUT_VERSION + 1, "2.0.0");
        let e = format!("{:#}", decide(&dir(false), Some(newer), ours).unwrap_err());
        assert!(e.contains(&format!("layout {}", LAYOUT_VERSION + 1)), "{e}");
        assert!(
            e.contains("agent 2.0.0") && e.contains("agent 1.2.0"),
            "{e}"
        );
        assert!(e.contains("keeps protecting wan0"), "{e}");
    }
}
