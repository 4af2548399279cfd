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
    maps::{
        lpm_trie::{Key, LpmTrie},
        Array, HashMap, IterableMap as _, Map, MapData, PerCpuArray,
    },
    programs::{TestRun as _, TestRunOptions, Xdp},
    Ebpf, EbpfLoader,
};
use aya_obj::programs::XdpAttachType;
use nat_pmp_ebpf_common::{
    AgentClock, Class, ClassCounters, Config, FragEntry, FragKey, Link, Mode, Prefix, SourceSet,
    Trace, Unattributed, CLOCK_SECTION, CONFIG_SECTION, MAP_ALLOW, MAP_CLOCK, MAP_CONFIG,
    MAP_FRAGS, MAP_SOURCES, MAP_STATS, MAP_TRACE, MAP_UNATTRIBUTED, PROGRAM_NAME, TRACE_GLOBAL,
};

pub use crate::iface::{check_iface, AttachMode, AttachedMode, LinkType};
use crate::{
    counters::Snapshot,
    netlink,
    pin::{self, PinDir},
    sys,
};

/// The compiled XDP object, built by `build.rs` from the `nat-pmp-ebpf` crate.
pub static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/nat-pmp-ebpf"));

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
    link: OwnedFd,
    /// The link's kernel id.
    pub link_id: u32,
}

/// The maps of one instance that the reports, `status`, `mode`, `allow`
/// and the metrics endpoint read and write.
pub struct Maps {
    stats: PerCpuArray<MapData, ClassCounters>,
    config: Array<MapData, Config>,
    sources: PerCpuArray<MapData, SourceSet>,
    unattributed: PerCpuArray<MapData, Unattributed>,
    clock: Array<MapData, AgentClock>,
    allow: LpmTrie<MapData, [u8; 16], u32>,
    /// What the agent read of the source table so far; shared by every
    /// handle on this instance ([`Maps::try_clone`]).
    pub(crate) ledger: std::sync::Arc<std::sync::Mutex<crate::ledger::Ledger>>,
}

/// How many CPUs the kernel may bring online: the length of every per-CPU
/// value.
fn possible_cpus() -> Result<usize> {
    aya::util::nr_cpus().map_err(|(path, e)| {
        anyhow::Error::new(e).context(format!("counting possible CPUs ({path})"))
    })
}

/// Opens `name` from a kernel map as the aya type `T`.
fn typed<T: TryFrom<Map>>(map: Map, name: &str) -> Result<T>
where
    T::Error: std::error::Error + Send + Sync + 'static,
{
    T::try_from(map).with_context(|| format!("map {name} is not of the type this agent expects"))
}

impl Maps {
    /// Opens the maps of the instance pinned under `dir`.
    pub fn from_pin(dir: &PinDir) -> Result<Self> {
        let open = |name: &str| {
            let path = dir.path(name);
            MapData::from_pin(&path).with_context(|| {
                format!(
                    "opening the pinned map {} (is an agent with --pin running, or was one, \
                     on {}? see `nat-pmp-agent status`)",
                    path.display(),
                    dir.iface
                )
            })
        };
        // An array opened as such only if the kernel says it is one: an
        // older agent pinned its clock as a per-CPU array, and a plain
        // lookup of a per-CPU value writes one value per CPU.
        let open_array = |name: &str| {
            let map = open(name)?;
            let kind = map
                .info()
                .and_then(|i| i.map_type())
                .with_context(|| format!("reading the type of the pinned map {name}"))?;
            if kind != aya::maps::MapType::Array {
                bail!(
                    "{name} under {} is a {kind:?} map, not this agent's array (an instance \
                     pinned by an older agent); detach it once with `nat-pmp-agent detach \
                     --iface {}` and start again",
                    dir.dir.display(),
                    dir.iface
                );
            }
            Ok(map)
        };
        Ok(Maps {
            stats: PerCpuArray::try_from(Map::PerCpuArray(open(MAP_STATS)?))
                .with_context(|| format!("{MAP_STATS} under {} is not ours", dir.dir.display()))?,
            config: Array::try_from(Map::Array(open_array(MAP_CONFIG)?)).with_context(|| {
                format!(
                    "{MAP_CONFIG} under {} is not this agent's (a different value size: an \
                     instance pinned by an older agent); detach it once with \
                     `nat-pmp-agent detach --iface {}` and start again",
                    dir.dir.display(),
                    dir.iface
                )
            })?,
            sources: typed(Map::PerCpuArray(open(MAP_SOURCES)?), MAP_SOURCES)?,
            unattributed: typed(Map::PerCpuArray(open(MAP_UNATTRIBUTED)?), MAP_UNATTRIBUTED)?,
            clock: typed(Map::Array(open_array(MAP_CLOCK)?), MAP_CLOCK)?,
            allow: typed(Map::LpmTrie(open(MAP_ALLOW)?), MAP_ALLOW)?,
            ledger: std::sync::Arc::default(),
        })
    }

    /// A second handle on the same kernel maps (for another thread).
    pub fn try_clone(&self) -> Result<Self> {
        let dup = |m: &MapData, name: &str| {
            let fd = std::os::fd::AsFd::as_fd(m.fd())
                .try_clone_to_owned()
                .with_context(|| format!("duplicating the fd of map {name}"))?;
            MapData::from_fd(fd).with_context(|| format!("reopening map {name}"))
        };
        Ok(Maps {
            stats: PerCpuArray::try_from(Map::PerCpuArray(dup(self.stats.map(), MAP_STATS)?))
                .with_context(|| format!("reopening map {MAP_STATS}"))?,
            config: Array::try_from(Map::Array(dup(self.config.map(), MAP_CONFIG)?))
                .with_context(|| format!("reopening map {MAP_CONFIG}"))?,
            sources: typed(
                Map::PerCpuArray(dup(self.sources.map(), MAP_SOURCES)?),
                MAP_SOURCES,
            )?,
            unattributed: typed(
                Map::PerCpuArray(dup(self.unattributed.map(), MAP_UNATTRIBUTED)?),
                MAP_UNATTRIBUTED,
            )?,
            clock: typed(Map::Array(dup(self.clock.map(), MAP_CLOCK)?), MAP_CLOCK)?,
            allow: typed(Map::LpmTrie(dup(self.allow.map(), MAP_ALLOW)?), MAP_ALLOW)?,
            ledger: std::sync::Arc::clone(&self.ledger),
        })
    }

    /// The whole source table: every set of both generations, one
    /// [`SourceSet`] per possible CPU, in key order. One
    /// `BPF_MAP_LOOKUP_BATCH` call per 1,024 sets where the kernel has it,
    /// else a lookup per set.
    pub fn source_table(&self) -> Result<Vec<(u32, Vec<SourceSet>)>> {
        let cpus = possible_cpus()?;
        let fd = std::os::fd::AsFd::as_fd(self.sources.map().fd());
        let batch = crate::batch::percpu_entries::<u32, SourceSet>(fd, cpus)
            .with_context(|| format!("reading map {MAP_SOURCES} (BPF_MAP_LOOKUP_BATCH)"))?;
        if let Some(entries) = batch {
            return Ok(entries);
        }
        let n = nat_pmp_ebpf_common::SOURCE_GENERATIONS * nat_pmp_ebpf_common::SOURCE_SETS;
        (0..n)
            .map(|k| {
                let v = self
                    .sources
                    .get(&k, 0)
                    .with_context(|| format!("reading set {k} of map {MAP_SOURCES}"))?;
                Ok((k, v.iter().copied().collect()))
            })
            .collect()
    }

    /// Counted datagrams whose sender found no slot, summed over CPUs.
    pub fn unattributed(&self) -> Result<Unattributed> {
        let per_cpu = self
            .unattributed
            .get(&0, 0)
            .with_context(|| format!("reading map {MAP_UNATTRIBUTED}"))?;
        Ok(per_cpu
            .iter()
            .fold(Unattributed::default(), |a, u| a.add(u)))
    }

    /// The agent's clock as the program sees it.
    pub fn clock(&self) -> Result<AgentClock> {
        self.clock
            .get(&0, 0)
            .with_context(|| format!("reading map {MAP_CLOCK}"))
    }

    /// Sets the clock: the epoch of the source table, and `tokens`
    /// drop-log lines until the next call, on all CPUs together (the
    /// budget is set, not added to, so an idle interval saves nothing for
    /// a burst). Only the agent that runs the instance calls it.
    pub fn set_clock(&mut self, epoch: u32, tokens: u64) -> Result<()> {
        let clock = AgentClock {
            tokens: i64::try_from(tokens).unwrap_or(i64::MAX),
            epoch,
            pad: 0,
        };
        self.clock
            .set(0, clock, 0)
            .with_context(|| format!("writing the agent's clock into map {MAP_CLOCK}"))
    }

    /// Grants `tokens` drop-log lines, keeping the epoch.
    pub fn refill_log_budget(&mut self, tokens: u64) -> Result<()> {
        let epoch = self.clock()?.epoch;
        self.set_clock(epoch, tokens)
    }

    /// Draws the source table's hash key (at load time, before any packet).
    fn draw_hash_key(&mut self) -> Result<()> {
        let mut key = [0u8; 16];
        sys::random(&mut key).context("drawing the source table's hash key (getrandom)")?;
        let config = Config {
            hash_key: [
                u64::from_ne_bytes(key[..8].try_into().unwrap_or_default()),
                u64::from_ne_bytes(key[8..].try_into().unwrap_or_default()),
            ],
            ..self.config()?
        };
        self.write_config(config, "the source table's hash key")
    }

    /// The allowlisted prefixes.
    pub fn allowed(&self) -> Result<Vec<Prefix>> {
        self.allow
            .keys()
            .map(|k| {
                k.map(|k| Prefix::new(k.data(), k.prefix_len()))
                    .with_context(|| format!("listing map {MAP_ALLOW}"))
            })
            .collect()
    }

    /// Adds `prefix` to the allowlist; the program applies it from its next
    /// packet.
    pub fn allow(&mut self, prefix: Prefix) -> Result<()> {
        self.allow
            .insert(&Key::new(prefix.len, prefix.addr), 1, 0)
            .with_context(|| {
                format!(
                    "adding a prefix to map {MAP_ALLOW} (it holds at most {} prefixes)",
                    nat_pmp_ebpf_common::ALLOW_MAX_ENTRIES
                )
            })?;
        self.count_allowed()
    }

    /// Removes `prefix` from the allowlist; returns whether it was there.
    pub fn disallow(&mut self, prefix: Prefix) -> Result<bool> {
        let removed = match self.allow.remove(&Key::new(prefix.len, prefix.addr)) {
            Ok(()) => true,
            Err(aya::maps::MapError::KeyNotFound) => false,
            Err(e) if has_errno(&e, libc::ENOENT) => false,
            Err(e) => {
                return Err(e).with_context(|| format!("removing a prefix from map {MAP_ALLOW}"))
            }
        };
        self.count_allowed()?;
        Ok(removed)
    }

    /// Writes the allowlist's size into the configuration: the program
    /// skips the trie lookup while it is 0. Counted from the trie itself
    /// after every change (after an insert, so that no packet skips a
    /// lookup the new prefix needs), which also repairs a count another
    /// process left stale.
    pub fn count_allowed(&mut self) -> Result<()> {
        let n = u32::try_from(self.allowed()?.len()).unwrap_or(u32::MAX);
        let config = Config {
            allow_prefixes: n,
            ..self.config()?
        };
        self.write_config(config, "the allowlist's size")
    }

    /// Switches per-source tracking on or off; the program sees it on its
    /// next packet. Off, counted datagrams cost no source-map update and
    /// the source table keeps what it holds.
    pub fn set_source_tracking(&mut self, on: bool) -> Result<()> {
        let config = Config {
            sources_off: u32::from(!on),
            ..self.config()?
        };
        let what = if on {
            "per-source tracking on"
        } else {
            "per-source tracking off"
        };
        self.write_config(config, what)
    }

    /// The configuration the program applies.
    pub fn config(&self) -> Result<Config> {
        self.config
            .get(&0, 0)
            .with_context(|| format!("reading map {MAP_CONFIG}"))
    }

    /// Writes a whole policy back (undoing a failed start's changes). The
    /// hash key stays the program's own.
    pub fn set_config(&mut self, config: Config) -> Result<()> {
        let now = self.config()?;
        let config = Config {
            hash_key: now.hash_key,
            ..config
        };
        self.write_config(config, "the configuration")
    }

    /// Makes the allowlist exactly `want`: adds what is missing first (so
    /// no packet sees a gap in a prefix that stays), then removes the rest.
    /// Returns (added, removed).
    pub fn set_allowlist(&mut self, want: &[Prefix]) -> Result<(Vec<Prefix>, Vec<Prefix>)> {
        let have = self.allowed()?;
        let mut added = Vec::new();
        for p in want {
            if !have.contains(p) && !added.contains(p) {
                self.allow(*p)?;
                added.push(*p);
            }
        }
        let mut removed = Vec::new();
        for p in have {
            if !want.contains(&p) {
                self.disallow(p)?;
                removed.push(p);
            }
        }
        self.count_allowed()?;
        Ok((added, removed))
    }

    fn write_config(&mut self, config: Config, what: &str) -> Result<()> {
        self.config
            .set(0, config, 0)
            .with_context(|| format!("writing {what} into map {MAP_CONFIG}"))
    }

    /// Sets the policy, keeping the link type; the running program sees it
    /// on its next packet (one 16-byte array element written by one syscall:
    /// no packet sees a mix).
    pub fn set_mode(&mut self, mode: Mode) -> Result<()> {
        let config = Config {
            mode: mode as u32,
            ..self.config()?
        };
        self.write_config(config, &format!("{} mode", mode.name()))
    }

    /// Sets where the network header starts, keeping the policy.
    pub fn set_link(&mut self, link: Link) -> Result<()> {
        let config = self.config()?.with_link(link);
        self.write_config(config, &format!("link type {}", link.name()))
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
        snap.fill_aggregates();
        Ok(snap)
    }
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
    maps: Maps,
    /// First fragments the program remembers; only for a program this
    /// agent loaded (tests clear it), not for one picked up from pins.
    frags: Option<HashMap<MapData, FragKey, FragEntry>>,
    trace: Option<Array<MapData, Trace>>,
    attachment: Option<Attachment>,
    /// Where the instance is pinned, when it is.
    pin: Option<PinDir>,
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
        Self::load_with(false)
    }

    /// Loads the program with tracing on: every run writes its decision to
    /// the trace map, read back by [`Filter::run_traced`]. For tests: it
    /// costs a map write per frame.
    pub fn load_traced() -> Result<Self> {
        Self::load_with(true)
    }

    fn load_with(traced: bool) -> Result<Self> {
        let trace_on = u32::from(traced);
        let mut ebpf = EbpfLoader::new()
            .override_global(TRACE_GLOBAL, &trace_on, true)
            .load(EBPF_OBJECT)
            .map_err(|e| {
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
            ebpf.take_map(CONFIG_SECTION)
                .with_context(|| format!("the XDP object has no section {CONFIG_SECTION}"))?,
        )
        .with_context(|| format!("opening map {MAP_CONFIG}"))?;
        let take = |ebpf: &mut Ebpf, name: &str| {
            ebpf.take_map(name)
                .with_context(|| format!("the XDP object has no map {name}"))
        };
        let sources = typed(take(&mut ebpf, MAP_SOURCES)?, MAP_SOURCES)?;
        let unattributed = typed(take(&mut ebpf, MAP_UNATTRIBUTED)?, MAP_UNATTRIBUTED)?;
        let clock = typed(take(&mut ebpf, CLOCK_SECTION)?, MAP_CLOCK)?;
        let allow = typed(take(&mut ebpf, MAP_ALLOW)?, MAP_ALLOW)?;
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
        let mut maps = Maps {
            stats,
            config,
            sources,
            unattributed,
            clock,
            allow,
            ledger: std::sync::Arc::default(),
        };
        maps.draw_hash_key()?;
        Ok(Filter {
            program: Program::Loaded(Box::new(ebpf)),
            maps,
            frags: Some(frags),
            trace,
            attachment: None,
            pin: None,
        })
    }

    /// The XDP program, e.g. for `BPF_PROG_TEST_RUN`.
    pub fn program(&self) -> Result<&Xdp> {
        match &self.program {
            Program::Loaded(ebpf) => ebpf
                .program(PROGRAM_NAME)
                .with_context(|| format!("the XDP object has no program named {PROGRAM_NAME}"))?
                .try_into()
                .context("the program in the XDP object is not an XDP program"),
            Program::Pinned(xdp) => Ok(xdp),
        }
    }

    /// The maps of this instance.
    pub fn maps(&self) -> &Maps {
        &self.maps
    }

    /// Starts reading the program's log of dropped datagrams (its aya-log
    /// ring buffer) into `logger`; records arrive on
    /// [`aya_log::EbpfLogger::flush`]. Keep the returned value: dropping it
    /// stops the reading (the program keeps running and its log map stays,
    /// held by the program).
    pub fn drop_log<T: log::Log>(
        &mut self,
        logger: T,
    ) -> Result<aya_log::EbpfLogger<crate::droplog::DropLogger<T>>> {
        let logger = crate::droplog::DropLogger { inner: logger };
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
        match &mut self.program {
            Program::Loaded(ebpf) => ebpf
                .program_mut(PROGRAM_NAME)
                .with_context(|| format!("the XDP object has no program named {PROGRAM_NAME}"))?
                .try_into()
                .context("the program in the XDP object is not an XDP program"),
            Program::Pinned(xdp) => Ok(xdp),
        }
    }

    /// Runs the program once on `frame` and returns the decision it traced.
    /// Needs [`Filter::load_traced`].
    pub fn run_traced(&self, frame: &[u8]) -> Result<Trace> {
        let trace = self
            .trace
            .as_ref()
            .context("run_traced needs a program loaded with Filter::load_traced")?;
        let before = trace
            .get(&0, 0)
            .with_context(|| format!("reading map {MAP_TRACE}"))?;
        let action = self.run_frame(frame)?;
        let after = trace
            .get(&0, 0)
            .with_context(|| format!("reading map {MAP_TRACE}"))?;
        if after.seq != before.seq.wrapping_add(1) || after.action != action {
            bail!(
                "the trace map did not record this run (seq {} -> {}, action {action} vs {})",
                before.seq,
                after.seq,
                after.action
            );
        }
        Ok(after)
    }

    /// The last decision the program traced (needs [`Filter::load_traced`]).
    /// Its `seq` tells how many frames were traced so far.
    pub fn last_trace(&self) -> Result<Trace> {
        self.trace
            .as_ref()
            .context("last_trace needs a program loaded with Filter::load_traced")?
            .get(&0, 0)
            .with_context(|| format!("reading map {MAP_TRACE}"))
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

    /// Forgets every first fragment the program remembers (tests compare
    /// the kernel with a host table that never evicts).
    pub fn clear_fragments(&mut self) -> Result<()> {
        let frags = self
            .frags
            .as_mut()
            .context("this filter was picked up from pins: its fragment map is not open")?;
        let keys: Vec<FragKey> = frags
            .keys()
            .collect::<Result<_, _>>()
            .with_context(|| format!("listing map {MAP_FRAGS}"))?;
        for key in keys {
            // A key the LRU evicted meanwhile is already gone.
            let _ = frags.remove(&key);
        }
        Ok(())
    }

    /// Instructions the verifier processed when it loaded the program
    /// (`verified_insns`, Linux 5.16+).
    pub fn verified_instructions(&self) -> Result<Option<u32>> {
        Ok(self
            .program()?
            .info()
            .context("reading the program's info (BPF_OBJ_GET_INFO_BY_FD)")?
            .verified_instruction_count())
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
        Ok(self.attachment.insert(Attachment {
            iface: iface.to_owned(),
            ifindex,
            mode: attached,
            fallback_reason,
            link,
            link_id,
        }))
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
        for (name, map) in [
            (MAP_STATS, self.maps.stats.map()),
            (MAP_CONFIG, self.maps.config.map()),
            (MAP_SOURCES, self.maps.sources.map()),
            (MAP_UNATTRIBUTED, self.maps.unattributed.map()),
            (MAP_CLOCK, self.maps.clock.map()),
            (MAP_ALLOW, self.maps.allow.map()),
        ] {
            let p = dir.path(name);
            if !p.exists() {
                map.pin(&p).with_context(|| pin_err(name, &p))?;
            }
        }
        if let Some(att) = &self.attachment {
            let p = dir.path(pin::LINK);
            let current = sys::obj_get(&p)
                .and_then(|fd| sys::link_state(std::os::fd::AsFd::as_fd(&fd)))
                .ok();
            if current.map(|s| s.id) != Some(att.link_id) {
                match std::fs::remove_file(&p) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(e)
                            .with_context(|| format!("replacing the link pin {}", p.display()))
                    }
                }
                sys::obj_pin(std::os::fd::AsFd::as_fd(&att.link), &p)
                    .with_context(|| pin_err("the XDP link", &p))?;
            }
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
        // once its pin is replaced.
        self.attachment = None;
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
        let prog_path = dir.path(pin::PROG);
        let program = Xdp::from_pin(&prog_path, XdpAttachType::Interface)
            .with_context(|| format!("opening the pinned XDP program {}", prog_path.display()))?;
        let prog_id = program
            .info()
            .context("reading the pinned program's info")?
            .id();
        let maps = Maps::from_pin(dir)?;
        let link_path = dir.path(pin::LINK);
        let link = sys::obj_get(&link_path)
            .with_context(|| format!("opening the pinned XDP link {}", link_path.display()))?;
        let state = sys::link_state(std::os::fd::AsFd::as_fd(&link))?;
        if state.prog_id != prog_id {
            bail!(
                "the link pinned at {} runs program id {} but the program pinned beside it is \
                 id {prog_id}: these pins were not made together; refusing to touch them",
                link_path.display(),
                state.prog_id
            );
        }
        let mut filter = Filter {
            program: Program::Pinned(Box::new(program)),
            maps,
            frags: None,
            trace: None,
            attachment: None,
            pin: Some(dir.clone()),
        };
        match locate(&state)? {
            Protection::Attached {
                iface: name,
                ifindex,
                mode: m,
            } if name == iface => {
                filter.attachment = Some(Attachment {
                    iface: iface.to_owned(),
                    ifindex,
                    mode: m.unwrap_or(AttachedMode::Native),
                    fallback_reason: None,
                    link,
                    link_id: state.id,
                });
            }
            Protection::Attached {
                iface: name,
                ifindex,
                ..
            } => bail!(
                "the instance pinned under {} for {iface} is attached to {name} (ifindex \
                 {ifindex}) of this namespace, not to {iface}: the interface was renamed and \
                 another one took its name. Refusing to move it: the filter stays on {name}. \
                 Start the agent with `--iface {name}`, or, to give it up, `nat-pmp-agent \
                 detach --iface {iface}`",
                dir.dir.display()
            ),
            Protection::Elsewhere { ifindex } => bail!(
                "the instance pinned under {} is attached to ifindex {ifindex}, which is not a \
                 device of this network namespace running it (the device moved to another \
                 namespace?); refusing to touch it: it still protects that device. See it with \
                 `bpftool link show id {}`",
                dir.dir.display(),
                state.id
            ),
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

    /// Detaches the link at once (whoever else holds it), keeping the pins.
    pub fn detach_link(&mut self) -> Result<()> {
        match self.attachment.take() {
            Some(att) => sys::link_detach(std::os::fd::AsFd::as_fd(&att.link))
                .with_context(|| format!("detaching XDP from {}", att.iface)),
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
    dir.remove()?;
    Ok(true)
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
