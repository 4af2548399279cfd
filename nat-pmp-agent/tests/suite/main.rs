//! The integration tests, one binary, a module per topic:
//!
//! - `bench_verdicts`: the bench's PASS/MISS logic, failing closed;
//! - `kernel`: the compiled XDP program in the running kernel
//!   (`BPF_PROG_TEST_RUN`), table-driven, with the exact counter deltas;
//! - `differential`: a million generated and mutated frames through the
//!   kernel and the host reference, which must agree on each;
//! - `xlated`: an interpreter of the loaded program's xlated instructions,
//!   checked against the kernel, and the paths that must make no call;
//! - `sources`: the per-source map and the allowlist, in the kernel;
//! - `egress`: the tc egress program that counts answers from port 5351
//!   (exposure), in the kernel and with the agent in namespaces;
//! - `replay`: captures through `nat-pmp-agent replay`;
//! - `report`: the report schema and the text tables;
//! - `e2e`: the agent binary on a veth WAN in namespaces, real datagrams;
//! - `ops`: pinning, status, the runtime mode switch, several interfaces,
//!   metrics, the config file;
//! - `protect`: the filter following its interface, re-attaching, SIGHUP,
//!   and what the agent says about it;
//! - `audit`: `nat-pmp-agent audit` against a real miniupnpd, pinned drop
//!   mode, real scans, and an unprivileged run;
//! - `upgrade`: an instance of the previous pinned layout upgraded in place
//!   under a flood (not one request through, counters continue), a newer
//!   layout refused;
//! - `tui`: the live view in a pseudo-terminal, read through a terminal
//!   emulator: it fits, counts exactly, redraws on resize, quits cleanly;
//! - `dist`: the release folder of `cargo xtask dist`: static ELF binaries,
//!   the aarch64 agent under qemu-user, the packages' contents, a real
//!   `dpkg -i` and `dpkg --purge` of the amd64 package;
//! - `real_peers`: against miniupnpd, nmap, libnatpmp's natpmpc and
//!   Wireshark's dissectors (Debian packages `cargo xtask setup` installs).
//!
//! Most need root, and the tests share kernel state (interfaces, XDP
//! attachments): run them one at a time, as `cargo xtask test` does:
//!
//! ```text
//! cargo test --release -p nat-pmp-agent --test suite -- --test-threads=1
//! cargo test --release -p nat-pmp-agent --test suite xlated:: -- --test-threads=1
//! cargo test --release -p nat-pmp-agent --test suite -- --test-threads=1 --skip real_peers::
//! ```
//!
//! One binary rather than one per topic: the agent's library and every
//! dependency are linked once, and `support` is compiled once. The real-peer
//! tests are a module here too: `cargo xtask test` runs them with the rest,
//! and they fail (naming the Debian package) rather than skip when a peer is
//! missing; `--skip real_peers::` leaves them out of a quick run.
//!
//! `support` holds what the modules share (namespaces, bpffs, processes, the
//! agent, frames, the xlated interpreter); the bench includes part of it.

#[path = "../support/mod.rs"]
mod support;

mod audit;
mod bench_verdicts;
mod differential;
mod dist;
mod e2e;
mod egress;
mod fleet;
mod kernel;
mod ops;
mod protect;
mod real_peers;
mod replay;
mod report;
mod sources;
mod tui;
mod upgrade;
mod xlated;
