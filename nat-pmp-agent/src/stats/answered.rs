//! Answers the router sent from port 5351 out of an interface: exposure
//! (RFC 6886 §3: a NAT gateway must not answer on its external interface).
//!
//! Contract: the tc egress program counts every datagram leaving the
//! interface from port 5351 by class (the XDP path's class table and
//! counter function) and by destination (an LRU of
//! [`ANSWERED_TO_MAX_ENTRIES`](nat_pmp_ebpf_common::ANSWERED_TO_MAX_ENTRIES)
//! peers), and the last answer. `crate::bpf::answered` reads them into an
//! [`Answered`]: the one type the live table, the JSON lines, the metrics,
//! `status` and `audit` show. A leaf like the rest of `stats`: times are
//! already wall-clock here.

use std::{net::IpAddr, time::SystemTime};

use nat_pmp_ebpf_common::{Class, ClassCounters};

use super::counters::Snapshot;

/// Destinations an [`Answered`] keeps (the most answered first): what the
/// reports show and the bound of the metrics' cardinality.
pub const TOP_DESTINATIONS: usize = 10;

/// One peer that got answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Destination {
    /// IPv4 for IPv4-mapped keys, IPv6 otherwise.
    pub addr: IpAddr,
    pub packets: u64,
    /// Frame bytes.
    pub bytes: u64,
    /// When the last answer to it left.
    pub last_seen: SystemTime,
}

/// The last answer that left.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LastAnswer {
    pub addr: IpAddr,
    pub class: Class,
    pub at: SystemTime,
}

/// Answers one interface sent (totals since the egress program loaded).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Answered {
    /// Per class: packets and frame bytes (all `passed_*`: egress never
    /// drops), aggregates filled in.
    pub classes: Snapshot,
    /// Destinations in the kernel's table now (at most its bound).
    pub destinations: usize,
    /// The [`TOP_DESTINATIONS`] most answered, most first.
    pub top: Vec<Destination>,
    /// The last answer, if any left.
    pub last: Option<LastAnswer>,
}

impl Answered {
    /// Builds it from the kernel's readings: per-class counters summed over
    /// CPUs, every destination, the last answer.
    pub fn new(mut classes: Snapshot, mut all: Vec<Destination>, last: Option<LastAnswer>) -> Self {
        classes.fill_aggregates();
        all.sort_by(|a, b| b.packets.cmp(&a.packets).then(a.addr.cmp(&b.addr)));
        let destinations = all.len();
        all.truncate(TOP_DESTINATIONS);
        Answered {
            classes,
            destinations,
            top: all,
            last,
        }
    }

    /// Several interfaces' answers as one: classes summed, destinations
    /// ranked together (one that several interfaces answered stays apart
    /// per interface), the latest last answer.
    pub fn merge(parts: &[&Answered]) -> Answered {
        let classes = parts
            .iter()
            .fold(Snapshot::default(), |acc, a| acc.add(&a.classes));
        let all = parts.iter().flat_map(|a| a.top.iter().cloned()).collect();
        let last = parts
            .iter()
            .filter_map(|a| a.last.clone())
            .max_by_key(|l| l.at);
        let mut merged = Answered::new(classes, all, last);
        merged.destinations = parts.iter().map(|a| a.destinations).sum();
        merged
    }

    /// Every class added up.
    pub fn total(&self) -> ClassCounters {
        self.classes.total()
    }

    /// Answers sent.
    pub fn packets(&self) -> u64 {
        self.total().packets()
    }

    /// Their frame bytes.
    pub fn bytes(&self) -> u64 {
        self.total().bytes()
    }

    /// Whether this interface answered anyone: exposed.
    pub fn exposed(&self) -> bool {
        self.packets() > 0
    }

    /// The classes that were answered, with their counters, in class order
    /// (aggregates left out).
    pub fn answered_classes(&self) -> impl Iterator<Item = (Class, &ClassCounters)> + '_ {
        Class::ALL
            .into_iter()
            .filter(|c| !c.is_aggregate())
            .map(|c| (c, self.classes.get(c)))
            .filter(|(_, c)| c.packets() > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_and_bounds_destinations() {
        let t = SystemTime::UNIX_EPOCH;
        let all: Vec<Destination> = (0..15u8)
            .map(|i| Destination {
                addr: IpAddr::from([198, 18, 1, i]),
                packets: u64::from(i % 5),
                bytes: 0,
                last_seen: t,
            })
            .collect();
        let mut snap = Snapshot::default();
        snap.classes[Class::PcpMapResponse.index() as usize].passed_packets = 3;
        let a = Answered::new(snap, all, None);
        assert_eq!(a.destinations, 15);
        assert_eq!(a.top.len(), TOP_DESTINATIONS);
        assert_eq!(a.top[0].packets, 4);
        assert_eq!(a.top[0].addr, IpAddr::from([198, 18, 1, 4]));
        assert!(a.exposed());
        assert_eq!(a.packets(), 3);
        assert_eq!(a.classes.get(Class::Pcp).packets(), 3, "aggregate filled");
        assert_eq!(a.answered_classes().count(), 1);
    }
}
