//! nat-pmp-agent: loads the NAT-PMP/PCP XDP filter, attaches it to WAN
//! interfaces and reports its counters (tables, JSON lines, Prometheus);
//! with `--pin` the filter outlives the agent. The library holds everything
//! the binary and the tests share.

pub mod allow;
pub mod batch;
pub mod console;
pub mod counters;
pub mod droplog;
pub mod ebpf;
pub mod iface;
pub mod ledger;
pub mod metrics;
pub mod monitor;
pub mod netlink;
pub mod pin;
pub mod probe;
pub mod replay;
pub mod replay_report;
pub mod report;
pub mod sources;
pub mod sys;
