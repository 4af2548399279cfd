//! nat-pmp-agent: loads the NAT-PMP/PCP XDP filter, attaches it to WAN
//! interfaces and reports its counters (tables, JSON lines, Prometheus);
//! with `--pin` the filter outlives the agent. The library holds everything
//! the binary and the tests share; `main.rs` only calls [`cli::main`].
//!
//! # Layers
//!
//! Modules by responsibility; an arrow is "may use", and no module uses one
//! above it (no import cycles):
//!
//! ```text
//! cli                         the command line, config file, options: parse, merge, check
//!  -> live, ops, replay, probe   the features: the running agent, pinned-instance
//!                                commands and the exposure audit, captures, the
//!                                probe sender
//!  -> output                  tables, the JSON report, Prometheus metrics
//!  -> bpf                     the XDP object, its maps, the Filter lifecycle, pins
//!  -> stats, net              counters and sources (no kernel handles); interfaces,
//!                             rtnetlink, the syscalls aya does not wrap
//!  -> nat-pmp-ebpf-common     the class table, classifier, walk and map types
//! ```
//!
//! A feature may use another feature's output types only through `output`;
//! `stats` and `net` do not use each other.

pub mod bpf;
pub mod cli;
pub mod live;
pub mod net;
pub mod ops;
pub mod output;
pub mod probe;
pub mod replay;
pub mod stats;
