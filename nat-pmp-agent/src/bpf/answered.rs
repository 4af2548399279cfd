//! The egress program's maps (answers sent from port 5351: exposure) and
//! reading them into [`Answered`]: from a program this agent loaded, or
//! from the pins of an instance ([`read_pinned`], what `status` and
//! `audit` use).

use std::os::fd::AsFd as _;

use anyhow::{bail, Context as _, Result};
use aya::{
    maps::{Array, HashMap, IterableMap as _, MapData, MapType, PerCpuArray},
    programs::{tc::TcAttachType, ProgramInfo, SchedClassifier},
    Ebpf,
};
use nat_pmp_ebpf_common::{
    AnswerLast, AnsweredTo, Class, ClassCounters, EGRESS_PROGRAM_NAME, MAP_ANSWERED,
    MAP_ANSWERED_TO, MAP_ANSWER_LAST,
};

use super::{
    maps::{class_snapshot, Carried, Counted},
    pin::{PinDir, EGRESS_MAPS},
};
use crate::{
    net::sys,
    stats::{
        answered::{Answered, Destination, LastAnswer},
        sources::addr_of,
    },
};

/// The kernel type of each egress map (as nat-pmp-ebpf declares them).
fn map_type(name: &str) -> MapType {
    match name {
        MAP_ANSWERED => MapType::PerCpuArray,
        MAP_ANSWERED_TO => MapType::LruHash,
        _ => MapType::Array,
    }
}

/// The three maps of the egress program.
pub struct AnsweredMaps {
    counters: PerCpuArray<MapData, ClassCounters>,
    to: HashMap<MapData, [u8; 16], AnsweredTo>,
    last: Array<MapData, AnswerLast>,
    /// The answers carried over by an in-place upgrade (the second half of
    /// `MAP_CARRIED`, shared with the XDP counters' [`super::maps::Maps`]).
    pub(crate) carried: Option<Carried>,
}

fn open<T: TryFrom<aya::maps::Map>>(map: aya::maps::Map, name: &str) -> Result<T>
where
    T::Error: std::error::Error + Send + Sync + 'static,
{
    T::try_from(map).with_context(|| {
        format!("map {name} is not of the type this agent expects (pinned by another version?)")
    })
}

impl AnsweredMaps {
    /// Takes them out of an object this agent just loaded.
    pub(crate) fn take(ebpf: &mut Ebpf) -> Result<Self> {
        let mut take = |name: &str| {
            ebpf.take_map(name)
                .with_context(|| format!("the eBPF object has no map {name}"))
        };
        Ok(AnsweredMaps {
            counters: open(take(MAP_ANSWERED)?, MAP_ANSWERED)?,
            to: open(take(MAP_ANSWERED_TO)?, MAP_ANSWERED_TO)?,
            last: open(take(MAP_ANSWER_LAST)?, MAP_ANSWER_LAST)?,
            carried: None,
        })
    }

    /// Opens them from the pins under `dir`.
    pub fn from_pin(dir: &PinDir) -> Result<Self> {
        if !dir.has_egress() {
            bail!(
                "the instance pinned under {} has no egress program (answers are not counted): \
                 it was pinned on a kernel without tcx (Linux 6.6), or by an agent before \
                 egress counting; detach it once with `nat-pmp-agent detach --iface {}` and \
                 start again to count answers",
                dir.dir.display(),
                dir.iface
            );
        }
        let mut maps = Self::build(|name| {
            let path = dir.path(name);
            MapData::from_pin(&path)
                .with_context(|| format!("opening the pinned map {}", path.display()))
        })?;
        maps.carried = Carried::from_pin(dir)?;
        Ok(maps)
    }

    /// Opens the maps of a running egress program (one without pins: an
    /// agent started without `--pin`), found by name among the maps the
    /// kernel lists for that program.
    pub fn from_program(info: &ProgramInfo) -> Result<Self> {
        let prog_id = info.id();
        let ids = info
            .map_ids()
            .with_context(|| format!("listing the maps of BPF program id {prog_id}"))?
            .unwrap_or_default();
        let mut maps: Vec<(Vec<u8>, Option<MapType>, MapData)> = Vec::new();
        for id in ids {
            let data = MapData::from_id(id).with_context(|| format!("opening BPF map id {id}"))?;
            let info = data
                .info()
                .with_context(|| format!("reading the info of BPF map id {id}"))?;
            maps.push((info.name().to_vec(), info.map_type().ok(), data));
        }
        // The kernel keeps 15 bytes of a map's name: NATPMP_ANSWERED and
        // NATPMP_ANSWERED_TO are both "NATPMP_ANSWERED" there, told apart by
        // their types.
        Self::build(|name| {
            let short = &name.as_bytes()[..name.len().min(15)];
            let kind = map_type(name);
            let i = maps
                .iter()
                .position(|(n, t, _)| n == short && *t == Some(kind))
                .with_context(|| format!("BPF program id {prog_id} has no map {name}"))?;
            Ok(maps.swap_remove(i).2)
        })
    }

    /// The three maps, each opened by `data` from its name, as their types.
    fn build(mut data: impl FnMut(&str) -> Result<MapData>) -> Result<Self> {
        let mut map = |name: &str| -> Result<aya::maps::Map> {
            let data = data(name)?;
            Ok(match map_type(name) {
                MapType::PerCpuArray => aya::maps::Map::PerCpuArray(data),
                MapType::LruHash => aya::maps::Map::LruHashMap(data),
                _ => aya::maps::Map::Array(data),
            })
        };
        Ok(AnsweredMaps {
            counters: open(map(MAP_ANSWERED)?, MAP_ANSWERED)?,
            to: open(map(MAP_ANSWERED_TO)?, MAP_ANSWERED_TO)?,
            last: open(map(MAP_ANSWER_LAST)?, MAP_ANSWER_LAST)?,
            carried: None,
        })
    }

    /// The answers per class, summed over CPUs, with what an in-place
    /// upgrade carried over.
    pub(crate) fn totals(&self) -> Result<crate::stats::counters::Snapshot> {
        class_snapshot(
            &self.counters,
            MAP_ANSWERED,
            self.carried.as_ref(),
            Counted::Answered,
        )
    }

    /// Each map's kernel data with its pin name ([`EGRESS_MAPS`] order).
    pub(crate) fn each(&self) -> [(&'static str, &MapData); 3] {
        [
            (EGRESS_MAPS[0], self.counters.map()),
            (EGRESS_MAPS[1], self.to.map()),
            (EGRESS_MAPS[2], self.last.map()),
        ]
    }

    /// A second handle on the same kernel maps (for another thread).
    pub fn try_clone(&self) -> Result<Self> {
        let dup = |name: &str, data: &MapData| -> Result<MapData> {
            let fd = data
                .fd()
                .as_fd()
                .try_clone_to_owned()
                .with_context(|| format!("duplicating the fd of map {name}"))?;
            MapData::from_fd(fd).with_context(|| format!("reopening map {name}"))
        };
        let [(n0, d0), (n1, d1), (n2, d2)] = self.each();
        Ok(AnsweredMaps {
            counters: open(aya::maps::Map::PerCpuArray(dup(n0, d0)?), n0)?,
            to: open(aya::maps::Map::LruHashMap(dup(n1, d1)?), n1)?,
            last: open(aya::maps::Map::Array(dup(n2, d2)?), n2)?,
            carried: self.carried.as_ref().map(Carried::try_clone).transpose()?,
        })
    }

    /// Reads everything: per-class counters summed over CPUs, every
    /// destination, the last answer (kernel times made wall-clock).
    pub fn read(&self) -> Result<Answered> {
        let snap = self.totals()?;
        let mut all = Vec::new();
        for entry in &self.to {
            // An entry the LRU evicted while the map was walked is skipped.
            let Ok((key, v)) = entry else { continue };
            all.push(Destination {
                addr: addr_of(key),
                packets: v.packets,
                bytes: v.bytes,
                last_seen: sys::wall_time(v.last_ns),
            });
        }
        let last = self
            .last
            .get(&0, 0)
            .with_context(|| format!("reading map {MAP_ANSWER_LAST}"))?;
        let last = (last.at_ns != 0).then(|| LastAnswer {
            addr: addr_of(last.addr),
            class: Class::from_index(last.class).unwrap_or(Class::MalformedTruncated),
            at: sys::wall_time(last.at_ns),
        });
        Ok(Answered::new(snap, all, last))
    }
}

/// The answers counted by the instance pinned under `pins`; an error when
/// it has no egress pins ([`PinDir::has_egress`]).
pub fn read_pinned(pins: &PinDir) -> Result<Answered> {
    AnsweredMaps::from_pin(pins)?.read()
}

/// The answers counted by this product's egress program attached to
/// `iface`'s tcx egress in this network namespace, pinned or not (what
/// runs, by the kernel's `BPF_PROG_QUERY`): the program id and its count.
/// `None` when no such program is attached.
pub fn read_running(iface: &str) -> Result<Option<(u32, Answered)>> {
    let (_, progs) = SchedClassifier::query_tcx(iface, TcAttachType::Egress)
        .with_context(|| format!("querying the programs on {iface}'s tcx egress (needs root)"))?;
    let short = &EGRESS_PROGRAM_NAME.as_bytes()[..EGRESS_PROGRAM_NAME.len().min(15)];
    let Some(info) = progs.iter().find(|p| p.name() == short) else {
        return Ok(None);
    };
    let answered = AnsweredMaps::from_program(info)?.read()?;
    Ok(Some((info.id(), answered)))
}
