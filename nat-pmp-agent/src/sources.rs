//! The senders of NAT-PMP/PCP datagrams, as the XDP program's per-CPU LRU
//! map (`NATPMP_SOURCES`) records them: the "scans by source address" view
//! of the advisory's honeypot report.
//!
//! Contract: [`read`] merges each source's per-CPU entries (packets and
//! bytes summed, first seen the earliest, last seen the latest, classes
//! united), converts the kernel's `CLOCK_MONOTONIC` nanoseconds to wall-clock
//! time, and keeps the `top` sources by packets (ties by address, so the
//! order is stable). The map is bounded
//! ([`nat_pmp_ebpf_common::SOURCES_MAX_ENTRIES`]): `tracked` is how many
//! sources it holds now, not how many were ever seen.

use std::{
    net::{IpAddr, Ipv6Addr},
    time::{Duration, SystemTime},
};

use anyhow::Result;
use nat_pmp_ebpf_common::{Class, SourceStats};
use serde_json::{json, Value};

use crate::ebpf::Maps;

/// One sender.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    /// IPv4 for IPv4-mapped keys, IPv6 otherwise.
    pub addr: IpAddr,
    pub stats: SourceStats,
}

impl Source {
    /// The classes this source sent, by name, in class order.
    pub fn classes(&self) -> Vec<&'static str> {
        Class::ALL
            .iter()
            .filter(|c| self.stats.classes & (1 << c.index()) != 0)
            .map(|c| c.name())
            .collect()
    }
}

/// The top sources of one interface (or of several, merged).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sources {
    /// Entries in the map now.
    pub tracked: usize,
    /// The `limit` sources with the most packets.
    pub top: Vec<Source>,
    /// How many `top` keeps (`--top-sources`).
    pub limit: usize,
}

/// A map key as an address: IPv4-mapped keys are IPv4 sources.
pub fn addr_of(key: [u8; 16]) -> IpAddr {
    let v6 = Ipv6Addr::from(key);
    v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
}

/// Orders by packets (most first), then by address.
fn rank(all: &mut [Source]) {
    all.sort_by(|a, b| {
        b.stats
            .packets
            .cmp(&a.stats.packets)
            .then(a.addr.cmp(&b.addr))
    });
}

/// Reads the sources map of one instance and keeps the `top` sources.
pub fn read(maps: &Maps, top: usize) -> Result<Sources> {
    let entries = maps.sources()?;
    let tracked = entries.len();
    let mut all: Vec<Source> = entries
        .into_iter()
        .map(|(k, stats)| Source {
            addr: addr_of(k),
            stats,
        })
        .collect();
    rank(&mut all);
    all.truncate(top);
    Ok(Sources {
        tracked,
        top: all,
        limit: top,
    })
}

impl Sources {
    /// Several interfaces' sources as one: tracked entries add up, a source
    /// seen on several interfaces is merged, and the `top` are kept.
    pub fn merge(parts: &[&Sources]) -> Sources {
        let top = parts.iter().map(|p| p.limit).max().unwrap_or(0);
        let mut all: Vec<Source> = Vec::new();
        for p in parts {
            for s in &p.top {
                match all.iter_mut().find(|x| x.addr == s.addr) {
                    Some(x) => x.stats = x.stats.merge(&s.stats),
                    None => all.push(s.clone()),
                }
            }
        }
        rank(&mut all);
        all.truncate(top);
        Sources {
            tracked: parts.iter().map(|p| p.tracked).sum(),
            top: all,
            limit: top,
        }
    }

    /// The `sources` array of the JSON report.
    pub fn to_json(&self) -> Value {
        Value::Array(
            self.top
                .iter()
                .map(|s| {
                    json!({
                        "address": s.addr.to_string(),
                        "packets": s.stats.packets,
                        "bytes": s.stats.bytes,
                        "first_seen": rfc3339(s.stats.first_seen_ns),
                        "last_seen": rfc3339(s.stats.last_seen_ns),
                        "classes": s.classes(),
                    })
                })
                .collect(),
        )
    }
}

/// `CLOCK_MONOTONIC` now: the clock the program's coarse timestamps
/// (`bpf_ktime_get_coarse_ns`) lag by at most a tick.
fn monotonic_now() -> Duration {
    // SAFETY: `timespec` is plain old data; all-zero is a valid value.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: a valid out-pointer; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) };
    Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}

/// Wall-clock time of a `bpf_ktime_get_coarse_ns` reading.
pub fn wall_time(ktime_ns: u64) -> SystemTime {
    let ago = monotonic_now().saturating_sub(Duration::from_nanos(ktime_ns));
    SystemTime::now()
        .checked_sub(ago)
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

fn rfc3339(ktime_ns: u64) -> String {
    humantime::format_rfc3339_millis(wall_time(ktime_ns)).to_string()
}
