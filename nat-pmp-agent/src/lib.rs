//! nat-pmp-agent: loads the NAT-PMP/PCP XDP filter, attaches it to a WAN
//! interface and reports its counters. The library holds everything the
//! binary and the tests share.

pub mod counters;
pub mod ebpf;
pub mod monitor;
pub mod probe;
pub mod replay;
pub mod replay_report;
pub mod report;
