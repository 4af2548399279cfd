//! The senders of NAT-PMP/PCP datagrams: the "scans by source address"
//! view of the advisory's honeypot report.
//!
//! Contract: the XDP program adds each counted datagram to its sender's
//! slot in a per-CPU table of two generations; `crate::bpf::sources` reads
//! it into [`Sources`], merged over CPUs: packets and bytes summed, classes united, first
//! and last seen to a report interval's resolution (the kernel keeps no
//! time). `unattributed` counts what found no slot (a set full within one
//! interval) and what the ledger let go at its own bound; with it, the
//! sources' packets add up to every counted datagram.

use std::net::{IpAddr, Ipv6Addr};

use nat_pmp_ebpf_common::{Class, SourceStats, Unattributed};

pub use super::ledger::LEDGER_MAX;

/// One sender.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    /// IPv4 for IPv4-mapped keys, IPv6 otherwise.
    pub addr: IpAddr,
    pub stats: SourceStats,
}

impl Source {
    /// The classes this source sent, in class order.
    pub fn sent(&self) -> impl Iterator<Item = Class> + '_ {
        Class::ALL
            .into_iter()
            .filter(|c| self.stats.classes & (1 << c.index()) != 0)
    }

    /// The classes this source sent, by name, in class order.
    pub fn classes(&self) -> Vec<&'static str> {
        self.sent().map(Class::name).collect()
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

impl Sources {
    /// The sources of `all` (map key, stats), ranked, the `top` of them
    /// kept; `unattributed` is what no source holds.
    pub fn ranked(
        all: impl IntoIterator<Item = ([u8; 16], SourceStats)>,
        top: usize,
        unattributed: Unattributed,
    ) -> Sources {
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
        Sources {
            tracked,
            top: list,
            limit: top,
            unattributed,
        }
    }

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
}
