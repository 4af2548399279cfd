//! The senders of NAT-PMP/PCP datagrams: the "scans by source address"
//! view of the advisory's honeypot report.
//!
//! Contract: the XDP program adds each counted datagram to its sender's
//! slot in a per-CPU table of two generations (see `MAP_SOURCES` in
//! -common); the agent owns the table's clock. [`tick`] (once per report
//! interval, by the agent that runs the instance) advances the epoch, waits
//! until no program run that saw the old one is left, and moves what the old
//! generation holds into the ledger ([`crate::ledger`]) for good: exactly, because the
//! program does not touch that generation again until the next tick. [`read`]
//! shows the ledger plus what the current generation holds so far (a
//! process that does not own the instance, such as `status`, sees only
//! that), merged over CPUs: packets and bytes summed, classes united, first
//! and last seen to a report interval's resolution (the kernel keeps no
//! time). `unattributed` counts what found no slot (a set full within one
//! interval) and what the ledger let go at its own bound; with it, the
//! sources' packets add up to every counted datagram.

use std::{
    net::{IpAddr, Ipv6Addr},
    sync::{Arc, PoisonError},
    time::{Duration, SystemTime},
};

use anyhow::Result;
use nat_pmp_ebpf_common::{Class, SourceStats, Unattributed};
use serde_json::{json, Value};

pub use crate::ledger::LEDGER_MAX;
use crate::{ebpf::Maps, sys};

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
    /// Senders known now (the ledger and the current generation).
    pub tracked: usize,
    /// The `limit` sources with the most packets.
    pub top: Vec<Source>,
    /// How many `top` keeps (`--top-sources`).
    pub limit: usize,
    /// Counted datagrams attributed to no sender.
    pub unattributed: Unattributed,
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

/// The end of a report interval for the instance's source table (only the
/// agent that runs the instance calls it): the program moves to the other
/// generation, and once no run that saw the old epoch is left, the old
/// generation goes into the ledger. Every CPU gets `log_tokens` drop-log
/// lines for the next interval with it.
pub fn tick(maps: &mut Maps, log_tokens: u64) -> Result<()> {
    let ledger = Arc::clone(&maps.ledger);
    let mut l = ledger.lock().unwrap_or_else(PoisonError::into_inner);
    let before = maps.clock()?;
    maps.set_clock(before.epoch.wrapping_add(1), log_tokens)?;
    let now = monotonic_ns();
    if sys::synchronize_rcu().is_err() {
        // nohz_full: no grace period to wait for from user space. A program
        // run lasts well under a microsecond; wait far longer.
        std::thread::sleep(Duration::from_millis(50));
    }
    let table = maps.source_table()?;
    l.commit(&table, &before, now);
    Ok(())
}

/// The instance's senders now, and the `top` of them: the ledger plus what
/// the table holds that the ledger has not taken yet.
pub fn read(maps: &Maps, top: usize) -> Result<Sources> {
    let l = maps.ledger.lock().unwrap_or_else(PoisonError::into_inner);
    let clock = maps.clock()?;
    let table = maps.source_table()?;
    let all = l.view(&table, &clock, monotonic_ns());
    let kernel = maps.unattributed()?;
    let mut list: Vec<Source> = all
        .into_iter()
        .map(|(k, stats)| Source {
            addr: addr_of(k),
            stats,
        })
        .collect();
    let tracked = list.len();
    rank(&mut list);
    list.truncate(top);
    Ok(Sources {
        tracked,
        top: list,
        limit: top,
        unattributed: kernel.add(&l.folded()),
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
            unattributed: parts
                .iter()
                .fold(Unattributed::default(), |a, p| a.add(&p.unattributed)),
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

/// `CLOCK_MONOTONIC` now.
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

fn monotonic_ns() -> u64 {
    u64::try_from(monotonic_now().as_nanos()).unwrap_or(u64::MAX)
}

/// Wall-clock time of a `CLOCK_MONOTONIC` reading in nanoseconds.
pub fn wall_time(ktime_ns: u64) -> SystemTime {
    let ago = monotonic_now().saturating_sub(Duration::from_nanos(ktime_ns));
    SystemTime::now()
        .checked_sub(ago)
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

fn rfc3339(ktime_ns: u64) -> String {
    humantime::format_rfc3339_millis(wall_time(ktime_ns)).to_string()
}
