//! The egress program's maps (answers sent from port 5351: exposure) and
//! reading them into [`Answered`]: from a program this agent loaded, or
//! from the pins of an instance ([`read_pinned`], what `status` and
//! `audit` use).

use std::os::fd::AsFd as _;

use anyhow::{bail, Context as _, Result};
use aya::{
    maps::{Array, HashMap, IterableMap as _, MapData, PerCpuArray},
    Ebpf,
};
use nat_pmp_ebpf_common::{
    AnswerLast, AnsweredTo, Class, ClassCounters, MAP_ANSWERED, MAP_ANSWERED_TO, MAP_ANSWER_LAST,
};

use super::pin::{PinDir, EGRESS_MAPS};
use crate::{
    net::sys,
    stats::{
        answered::{Answered, Destination, LastAnswer},
        sources::addr_of,
    },
};

/// The three maps of the egress program.
pub struct AnsweredMaps {
    counters: PerCpuArray<MapData, ClassCounters>,
    to: HashMap<MapData, [u8; 16], AnsweredTo>,
    last: Array<MapData, AnswerLast>,
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
        let map = |name: &str| -> Result<aya::maps::Map> {
            let path = dir.path(name);
            let data = MapData::from_pin(&path)
                .with_context(|| format!("opening the pinned map {}", path.display()))?;
            Ok(match name {
                MAP_ANSWERED => aya::maps::Map::PerCpuArray(data),
                MAP_ANSWERED_TO => aya::maps::Map::LruHashMap(data),
                _ => aya::maps::Map::Array(data),
            })
        };
        Ok(AnsweredMaps {
            counters: open(map(MAP_ANSWERED)?, MAP_ANSWERED)?,
            to: open(map(MAP_ANSWERED_TO)?, MAP_ANSWERED_TO)?,
            last: open(map(MAP_ANSWER_LAST)?, MAP_ANSWER_LAST)?,
        })
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
        })
    }

    /// Reads everything: per-class counters summed over CPUs, every
    /// destination, the last answer (kernel times made wall-clock).
    pub fn read(&self) -> Result<Answered> {
        let snap = super::maps::class_snapshot(&self.counters, MAP_ANSWERED)?;
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
