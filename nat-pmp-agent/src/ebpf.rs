//! Loading, configuring, attaching and reading the embedded XDP program.
//!
//! Contract: [`Filter::load`] either returns a verified program with its maps
//! or an error that says why and what to do; [`Filter::attach`] never
//! replaces an XDP program someone else attached, and a failed attach leaves
//! nothing attached. Dropping a `Filter` detaches what it attached.

use std::{ffi::CString, io};

use anyhow::{anyhow, bail, Context as _, Result};
use aya::{
    maps::{Array, MapData, PerCpuArray},
    programs::{xdp::XdpLinkId, TestRun as _, TestRunOptions, Xdp, XdpMode},
    Ebpf,
};
use nat_pmp_ebpf_common::{
    Class, ClassCounters, Config, Mode, MAP_CONFIG, MAP_STATS, PROGRAM_NAME,
};

use crate::counters::Snapshot;

/// The compiled XDP object, built by `build.rs` from the `nat-pmp-ebpf` crate.
pub static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/nat-pmp-ebpf"));

/// How to attach: what the user asked for on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AttachMode {
    /// Native (driver) mode, falling back to skb mode where the driver has none.
    Auto,
    /// Native (driver) mode only.
    Native,
    /// Generic (skb) mode: works on every interface, slower.
    Skb,
}

/// The XDP mode a program actually got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachedMode {
    Native,
    Skb,
}

impl AttachedMode {
    /// Stable name used in JSON and reports.
    pub const fn name(self) -> &'static str {
        match self {
            AttachedMode::Native => "native",
            AttachedMode::Skb => "skb",
        }
    }
}

/// What [`Filter::attach`] did.
#[derive(Debug)]
pub struct Attachment {
    pub iface: String,
    pub mode: AttachedMode,
    /// Set when auto mode fell back to skb mode: the kernel's reason.
    pub fallback_reason: Option<String>,
    link: XdpLinkId,
}

/// The loaded program and its maps.
pub struct Filter {
    ebpf: Ebpf,
    stats: PerCpuArray<MapData, ClassCounters>,
    config: Array<MapData, Config>,
    attachment: Option<Attachment>,
}

/// Does any cause in `err`'s chain carry this errno?
fn has_errno(err: &(dyn std::error::Error + 'static), errno: i32) -> bool {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            if io.raw_os_error() == Some(errno) {
                return true;
            }
        }
        cur = e.source();
    }
    false
}

/// The XDP program in `ebpf`.
fn xdp_mut(ebpf: &mut Ebpf) -> Result<&mut Xdp> {
    ebpf.program_mut(PROGRAM_NAME)
        .with_context(|| format!("the XDP object has no program named {PROGRAM_NAME}"))?
        .try_into()
        .context("the program in the XDP object is not an XDP program")
}

/// Wraps a load error with what was done and a hint: the privilege hint when
/// the kernel said EPERM, `otherwise` else.
fn privilege_or<E>(e: E, what: &str, otherwise: &str) -> anyhow::Error
where
    E: std::error::Error + Send + Sync + 'static,
{
    let hint = if has_errno(&e, libc::EPERM) {
        PRIVILEGE_HINT
    } else {
        otherwise
    };
    anyhow!(e).context(format!("{what}: {hint}"))
}

const PRIVILEGE_HINT: &str = "loading XDP programs needs root, or CAP_BPF + CAP_NET_ADMIN \
     (+ CAP_PERFMON); run it with sudo";

impl Filter {
    /// Loads the embedded XDP program into the kernel (it is verified here)
    /// and opens its maps. Nothing is attached yet.
    pub fn load() -> Result<Self> {
        let mut ebpf = Ebpf::load(EBPF_OBJECT).map_err(|e| {
            privilege_or(
                e,
                "loading the embedded XDP object",
                "the kernel refused the maps; it needs BPF support (CONFIG_BPF_SYSCALL)",
            )
        })?;
        xdp_mut(&mut ebpf)?.load().map_err(|e| {
            privilege_or(
                e,
                &format!("loading the XDP program {PROGRAM_NAME}"),
                "the kernel rejected it (the verifier's log follows); this kernel may lack \
                 BPF features the program needs",
            )
        })?;
        let stats = PerCpuArray::try_from(
            ebpf.take_map(MAP_STATS)
                .with_context(|| format!("the XDP object has no map {MAP_STATS}"))?,
        )
        .with_context(|| format!("opening map {MAP_STATS}"))?;
        let config = Array::try_from(
            ebpf.take_map(MAP_CONFIG)
                .with_context(|| format!("the XDP object has no map {MAP_CONFIG}"))?,
        )
        .with_context(|| format!("opening map {MAP_CONFIG}"))?;
        Ok(Filter {
            ebpf,
            stats,
            config,
            attachment: None,
        })
    }

    /// The XDP program, e.g. for `BPF_PROG_TEST_RUN`.
    pub fn program(&self) -> Result<&Xdp> {
        self.ebpf
            .program(PROGRAM_NAME)
            .with_context(|| format!("the XDP object has no program named {PROGRAM_NAME}"))?
            .try_into()
            .context("the program in the XDP object is not an XDP program")
    }

    /// Runs the program once on `frame` with `BPF_PROG_TEST_RUN` (counters
    /// and policy apply as on a live interface) and returns its XDP action.
    pub fn run_frame(&self, frame: &[u8]) -> Result<u32> {
        let result = self
            .program()?
            .test_run(TestRunOptions {
                data_in: Some(frame),
                ..TestRunOptions::default()
            })
            .with_context(|| {
                format!(
                    "running the XDP program on a {}-byte frame (BPF_PROG_TEST_RUN)",
                    frame.len()
                )
            })?;
        Ok(result.return_value)
    }

    fn program_mut(&mut self) -> Result<&mut Xdp> {
        xdp_mut(&mut self.ebpf)
    }

    /// Sets the policy; the running program sees it on its next packet.
    pub fn set_mode(&mut self, mode: Mode) -> Result<()> {
        self.config
            .set(0, Config::new(mode), 0)
            .with_context(|| format!("writing {} mode into map {MAP_CONFIG}", mode.name()))
    }

    /// The policy the program currently applies.
    pub fn mode(&self) -> Result<Mode> {
        let cfg = self
            .config
            .get(&0, 0)
            .with_context(|| format!("reading map {MAP_CONFIG}"))?;
        Ok(if cfg.drops() {
            Mode::Drop
        } else {
            Mode::Monitor
        })
    }

    /// Totals since load, summed over CPUs.
    pub fn snapshot(&self) -> Result<Snapshot> {
        let mut snap = Snapshot::default();
        for class in Class::ALL {
            let per_cpu = self
                .stats
                .get(&class.index(), 0)
                .with_context(|| format!("reading {} from map {MAP_STATS}", class.name()))?;
            snap.classes[class.index() as usize] = per_cpu
                .iter()
                .fold(ClassCounters::default(), |acc, c| acc.add(c));
        }
        Ok(snap)
    }

    /// Attaches the program to `iface`.
    ///
    /// `Auto` tries native mode and falls back to skb mode only when the
    /// driver has no native XDP; it never replaces an attached program.
    pub fn attach(&mut self, iface: &str, mode: AttachMode) -> Result<&Attachment> {
        if self.attachment.is_some() {
            bail!("the program is already attached; detach it first");
        }
        check_iface(iface)?;
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
        Ok(self.attachment.insert(Attachment {
            iface: iface.to_owned(),
            mode: attached,
            fallback_reason,
            link,
        }))
    }

    fn try_attach(&mut self, iface: &str, mode: AttachedMode) -> Result<XdpLinkId, AttachError> {
        let xdp_mode = match mode {
            AttachedMode::Native => XdpMode::Driver,
            AttachedMode::Skb => XdpMode::Skb,
        };
        let program = self.program_mut().map_err(AttachError::Other)?;
        program.attach(iface, xdp_mode).map_err(|e| {
            let what = format!("attaching XDP to {iface} in {} mode", mode.name());
            if has_errno(&e, libc::EBUSY) || has_errno(&e, libc::EEXIST) {
                AttachError::Other(anyhow!(e).context(format!(
                    "{what}: another XDP program is already attached to {iface}; refusing to \
                     replace it. See it with `ip link show dev {iface}` or `bpftool net show dev \
                     {iface}`, and remove it (`ip link set dev {iface} xdp off`) only if it is \
                     yours and stale"
                )))
            } else if has_errno(&e, libc::EOPNOTSUPP) {
                AttachError::NotSupported(format!(
                    "{what}: the driver of {iface} has no native XDP support"
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

    /// Detaches the program from its interface.
    pub fn detach(&mut self) -> Result<()> {
        let Some(att) = self.attachment.take() else {
            return Ok(());
        };
        let iface = att.iface.clone();
        self.program_mut()?
            .detach(att.link)
            .with_context(|| format!("detaching XDP from {iface}"))
    }
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

/// Fails with a helpful message unless `iface` exists in this namespace.
pub fn check_iface(iface: &str) -> Result<u32> {
    let c =
        CString::new(iface).map_err(|_| anyhow!("interface name {iface:?} contains a NUL byte"))?;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if index == 0 {
        bail!(
            "interface {iface:?} does not exist in this network namespace; list interfaces \
             with `ip link show`"
        );
    }
    Ok(index)
}
