//! The maps of one instance: opened from a program this agent loaded, from
//! the pins of an earlier agent, or as a second handle on the same kernel
//! maps, always through one list ([`PINNED`]) and one builder
//! ([`Maps::assemble`]), so the three ways cannot drift apart.

use std::sync::{Arc, Mutex};

use anyhow::{bail, Context as _, Result};
use aya::{
    maps::{
        lpm_trie::{Key, LpmTrie},
        Array, IterableMap as _, Map, MapData, MapType, PerCpuArray,
    },
    Ebpf,
};
use nat_pmp_ebpf_common::{
    AgentClock, Class, ClassCounters, Config, Layout, Link, Mode, Prefix, SourceSet, Unattributed,
    CLOCK_SECTION, CONFIG_SECTION, MAP_ALLOW, MAP_CARRIED, MAP_CLOCK, MAP_CONFIG, MAP_LAYOUT,
    MAP_SOURCES, MAP_STATS, MAP_UNATTRIBUTED,
};

use super::pin::PinDir;
use crate::{
    net::sys,
    stats::{counters::Snapshot, ledger::Ledger},
};

/// The kind of kernel map an instance's map is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    PerCpuArray,
    Array,
    LpmTrie,
}

impl Kind {
    /// `data` as the aya map of this kind.
    fn wrap(self, data: MapData) -> Map {
        match self {
            Kind::PerCpuArray => Map::PerCpuArray(data),
            Kind::Array => Map::Array(data),
            Kind::LpmTrie => Map::LpmTrie(data),
        }
    }

    fn map_type(self) -> MapType {
        match self {
            Kind::PerCpuArray => MapType::PerCpuArray,
            Kind::Array => MapType::Array,
            Kind::LpmTrie => MapType::LpmTrie,
        }
    }
}

/// Every map an instance pins (by its pin name) and its kind: what
/// [`Maps`] holds, in the order it holds them.
pub const PINNED: [(&str, Kind); 6] = [
    (MAP_STATS, Kind::PerCpuArray),
    (MAP_CONFIG, Kind::Array),
    (MAP_SOURCES, Kind::PerCpuArray),
    (MAP_UNATTRIBUTED, Kind::PerCpuArray),
    (MAP_CLOCK, Kind::Array),
    (MAP_ALLOW, Kind::LpmTrie),
];

/// The maps of one instance that the reports, `status`, `mode`, `allow`
/// and the metrics endpoint read and write.
pub struct Maps {
    stats: PerCpuArray<MapData, ClassCounters>,
    config: Array<MapData, Config>,
    sources: PerCpuArray<MapData, SourceSet>,
    unattributed: PerCpuArray<MapData, Unattributed>,
    clock: Array<MapData, AgentClock>,
    allow: LpmTrie<MapData, [u8; 16], u32>,
    /// The counters carried over from the programs an in-place upgrade
    /// replaced ([`MAP_CARRIED`], layout 2 on); `None` in an older layout.
    carried: Option<Carried>,
    /// What the agent read of the source table so far; shared by every
    /// handle on this instance ([`Maps::try_clone`]).
    pub(crate) ledger: Arc<Mutex<Ledger>>,
}

/// The layout and agent version an instance was pinned with; `None` for
/// one pinned before layouts were versioned (no [`MAP_LAYOUT`] pin).
pub fn pinned_layout(dir: &PinDir) -> Result<Option<Layout>> {
    let path = dir.path(MAP_LAYOUT);
    if !path.exists() {
        return Ok(None);
    }
    let data = MapData::from_pin(&path)
        .with_context(|| format!("opening the pinned map {}", path.display()))?;
    let map: Array<MapData, Layout> = typed(Map::Array(data), MAP_LAYOUT, "")?;
    map.get(&0, 0)
        .map(Some)
        .with_context(|| format!("reading {}", path.display()))
}

/// Writes this agent's layout into a freshly loaded object's
/// [`MAP_LAYOUT`] and returns the map (to be pinned with the others).
pub(crate) fn stamp_layout(ebpf: &mut Ebpf) -> Result<Array<MapData, Layout>> {
    let map = ebpf
        .take_map(MAP_LAYOUT)
        .with_context(|| format!("the XDP object has no map {MAP_LAYOUT}"))?;
    let mut map: Array<MapData, Layout> = typed(map, MAP_LAYOUT, "")?;
    map.set(0, super::object::layout(), 0)
        .with_context(|| format!("writing map {MAP_LAYOUT}"))?;
    Ok(map)
}

/// How many CPUs the kernel may bring online: the length of every per-CPU
/// value.
pub(crate) fn possible_cpus() -> Result<usize> {
    aya::util::nr_cpus().map_err(|(path, e)| {
        anyhow::Error::new(e).context(format!("counting possible CPUs ({path})"))
    })
}

/// Opens `name` from a kernel map as the aya type `T`.
fn typed<T: TryFrom<Map>>(map: Map, name: &str, hint: &str) -> Result<T>
where
    T::Error: std::error::Error + Send + Sync + 'static,
{
    T::try_from(map)
        .with_context(|| format!("map {name} is not of the type this agent expects{hint}"))
}

impl Maps {
    /// The one builder: `get(name, kind)` gives each map of [`PINNED`].
    /// `hint` ends the error of a map of the wrong type.
    fn assemble(mut get: impl FnMut(&str, Kind) -> Result<Map>, hint: &str) -> Result<Self> {
        let mut next = |i: usize| {
            let (name, kind) = PINNED[i];
            get(name, kind).map(|m| (m, name))
        };
        let (m, n) = next(0)?;
        let stats = typed(m, n, hint)?;
        let (m, n) = next(1)?;
        let config = typed(m, n, hint)?;
        let (m, n) = next(2)?;
        let sources = typed(m, n, hint)?;
        let (m, n) = next(3)?;
        let unattributed = typed(m, n, hint)?;
        let (m, n) = next(4)?;
        let clock = typed(m, n, hint)?;
        let (m, n) = next(5)?;
        let allow = typed(m, n, hint)?;
        Ok(Maps {
            stats,
            config,
            sources,
            unattributed,
            clock,
            allow,
            carried: None,
            ledger: Arc::default(),
        })
    }

    /// Takes the maps out of an object this agent just loaded (the
    /// configuration and the clock are the object's global sections).
    pub(crate) fn take(ebpf: &mut Ebpf) -> Result<Self> {
        // Absent only from the test-only object of the previous layout.
        let carried = ebpf.take_map(MAP_CARRIED).map(Carried::open).transpose()?;
        let mut maps = Self::assemble(
            |name, _| {
                let section = match name {
                    MAP_CONFIG => CONFIG_SECTION,
                    MAP_CLOCK => CLOCK_SECTION,
                    other => other,
                };
                ebpf.take_map(section)
                    .with_context(|| format!("the XDP object has no map {section}"))
            },
            "",
        )?;
        maps.carried = carried;
        Ok(maps)
    }

    /// Opens the maps of the instance pinned under `dir`.
    ///
    /// A map is opened as its kind only if the kernel says it is one: an
    /// older agent pinned its clock as a per-CPU array, and a plain lookup
    /// of a per-CPU value writes one value per CPU.
    pub fn from_pin(dir: &PinDir) -> Result<Self> {
        let stale = format!(
            " (an instance pinned by an older agent); detach it once with `nat-pmp-agent \
             detach --iface {}` and start again",
            dir.iface
        );
        let mut maps = Self::assemble(
            |name, kind| {
                let path = dir.path(name);
                let data = MapData::from_pin(&path).with_context(|| {
                    format!(
                        "opening the pinned map {} (is an agent with --pin running, or was                          one, on {}? see `nat-pmp-agent status`)",
                        path.display(),
                        dir.iface
                    )
                })?;
                let found = data
                    .info()
                    .and_then(|i| i.map_type())
                    .with_context(|| format!("reading the type of the pinned map {name}"))?;
                if found != kind.map_type() {
                    bail!(
                        "{name} under {} is a {found:?} map, not this agent's {:?}{stale}",
                        dir.dir.display(),
                        kind.map_type()
                    );
                }
                Ok(kind.wrap(data))
            },
            &stale,
        )?;
        maps.carried = Carried::from_pin(dir)?;
        Ok(maps)
    }

    /// Each map's kernel data, with its pin name, in [`PINNED`] order.
    pub(crate) fn each(&self) -> [(&'static str, &MapData); 6] {
        [
            (PINNED[0].0, self.stats.map()),
            (PINNED[1].0, self.config.map()),
            (PINNED[2].0, self.sources.map()),
            (PINNED[3].0, self.unattributed.map()),
            (PINNED[4].0, self.clock.map()),
            (PINNED[5].0, self.allow.map()),
        ]
    }

    /// The carried-over counters' map with its pin name, when this layout
    /// has it.
    pub(crate) fn carried(&self) -> Option<&Carried> {
        self.carried.as_ref()
    }

    /// The carried-over counters, to write them (an upgrade).
    pub(crate) fn carried_mut(&mut self) -> Option<&mut Carried> {
        self.carried.as_mut()
    }

    /// A second handle on the same kernel maps (for another thread).
    pub fn try_clone(&self) -> Result<Self> {
        let each = self.each();
        let mut maps = Self::assemble(
            |name, kind| {
                let (_, data) = each
                    .iter()
                    .find(|(n, _)| *n == name)
                    .with_context(|| format!("internal: no map {name}"))?;
                let fd = std::os::fd::AsFd::as_fd(data.fd())
                    .try_clone_to_owned()
                    .with_context(|| format!("duplicating the fd of map {name}"))?;
                let data = MapData::from_fd(fd).with_context(|| format!("reopening map {name}"))?;
                Ok(kind.wrap(data))
            },
            "",
        )?;
        maps.ledger = Arc::clone(&self.ledger);
        maps.carried = self.carried.as_ref().map(Carried::try_clone).transpose()?;
        Ok(maps)
    }

    /// The whole source table: every set of both generations, one
    /// [`SourceSet`] per possible CPU, in key order. One
    /// `BPF_MAP_LOOKUP_BATCH` call per 1,024 sets where the kernel has it,
    /// else a lookup per set.
    pub fn source_table(&self) -> Result<Vec<(u32, Vec<SourceSet>)>> {
        let cpus = possible_cpus()?;
        let fd = std::os::fd::AsFd::as_fd(self.sources.map().fd());
        let batch = super::batch::percpu_entries::<u32, SourceSet>(fd, cpus)
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
    pub(crate) fn draw_hash_key(&mut self) -> Result<()> {
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
            Err(e) if sys::has_errno(&e, libc::ENOENT) => false,
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
        Ok(self.config()?.mode())
    }

    /// Totals since load, summed over CPUs, with what an in-place upgrade
    /// carried over from the programs before.
    pub fn snapshot(&self) -> Result<Snapshot> {
        class_snapshot(&self.stats, MAP_STATS, self.carried.as_ref(), Counted::Xdp)
    }
}

/// Which counters of [`MAP_CARRIED`]: the XDP program's or the answers'.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Counted {
    Xdp,
    Answered,
}

impl Counted {
    /// Where this half starts in [`MAP_CARRIED`].
    fn base(self) -> u32 {
        match self {
            Counted::Xdp => 0,
            Counted::Answered => Class::ALL.len().try_into().unwrap_or(u32::MAX),
        }
    }
}

/// [`MAP_CARRIED`]: the class counters carried over from the programs an
/// in-place upgrade replaced. Only the agent writes it, while nothing else
/// does; the programs never touch it, so a plain array (no per-CPU race).
pub(crate) struct Carried {
    map: Array<MapData, ClassCounters>,
}

impl Carried {
    fn open(map: Map) -> Result<Self> {
        Ok(Carried {
            map: typed(map, MAP_CARRIED, "")?,
        })
    }

    /// The one pinned under `dir`; `None` in a layout before it.
    pub(crate) fn from_pin(dir: &PinDir) -> Result<Option<Self>> {
        let path = dir.path(MAP_CARRIED);
        if !path.exists() {
            return Ok(None);
        }
        let data = MapData::from_pin(&path)
            .with_context(|| format!("opening the pinned map {}", path.display()))?;
        Self::open(Map::Array(data)).map(Some)
    }

    /// The kernel map (to pin it).
    pub(crate) fn map(&self) -> &MapData {
        self.map.map()
    }

    pub(crate) fn try_clone(&self) -> Result<Self> {
        let fd = std::os::fd::AsFd::as_fd(self.map.map().fd())
            .try_clone_to_owned()
            .with_context(|| format!("duplicating the fd of map {MAP_CARRIED}"))?;
        let data = MapData::from_fd(fd).with_context(|| format!("reopening map {MAP_CARRIED}"))?;
        Self::open(Map::Array(data))
    }

    /// Class `class`'s carried counters of `which`.
    fn get(&self, which: Counted, class: Class) -> Result<ClassCounters> {
        self.map
            .get(&(which.base() + class.index()), 0)
            .with_context(|| format!("reading {} from map {MAP_CARRIED}", class.name()))
    }

    /// Makes the carried counters of `which` exactly `snap`'s classes.
    pub(crate) fn set(&mut self, which: Counted, snap: &Snapshot) -> Result<()> {
        for class in Class::ALL {
            let c = snap.classes[class.index() as usize];
            self.map
                .set(which.base() + class.index(), c, 0)
                .with_context(|| format!("writing {} into map {MAP_CARRIED}", class.name()))?;
        }
        Ok(())
    }
}

/// Every class's counters in the per-CPU array `map` (named `name`), summed
/// over CPUs, plus what `carried` holds for them (`which`), aggregates
/// filled in: the XDP counters and the answers alike.
pub(crate) fn class_snapshot(
    map: &PerCpuArray<MapData, ClassCounters>,
    name: &str,
    carried: Option<&Carried>,
    which: Counted,
) -> Result<Snapshot> {
    let mut snap = Snapshot::default();
    for class in Class::ALL {
        let per_cpu = map
            .get(&class.index(), 0)
            .with_context(|| format!("reading {} from map {name}", class.name()))?;
        let before = match carried {
            Some(c) => c.get(which, class)?,
            None => ClassCounters::default(),
        };
        snap.classes[class.index() as usize] = per_cpu.iter().fold(before, |acc, c| acc.add(c));
    }
    snap.fill_aggregates();
    Ok(snap)
}
