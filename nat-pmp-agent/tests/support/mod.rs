//! Test support: what the suite's modules share.
//!
//! Every guard removes what it made on drop, so a failing assertion still
//! cleans up: namespaces with their interfaces ([`netns::NetNs`]), bpffs
//! mounts with their pins ([`bpffs::Bpffs`]), processes by the PID we
//! started ([`process::Proc`], [`process::Agent`]).
//!
//! The bench (`benches/xdp/main.rs`) includes the modules it needs from this
//! directory too, each file on its own; they return errors (anyhow) rather
//! than panic, as the bench does. These are `bpffs`, `netns`, `process`,
//! `tun`, `xdp` and `xlated`; a module the bench includes must be used by it
//! in full. The suite-only modules (`agent`, `frames`, `peers`, `schema`, `sentinel`, `wan`) are test steps that
//! panic with what went wrong, and add the suite's own methods to the shared
//! types.

pub mod agent;
pub mod bpffs;
pub mod frames;
pub mod netns;
pub mod peers;
pub mod process;
pub mod schema;
pub mod sentinel;
pub mod tun;
pub mod wan;
pub mod xdp;
pub mod xlated;

/// Panics with a clear reason unless the tests run as root: these tests load
/// XDP programs and create namespaces, and must not pass silently without.
pub fn require_root() {
    assert!(
        process::is_root(),
        "this test loads XDP programs and builds network namespaces: run it as root \
         (`cargo xtask test` does); refusing to skip silently"
    );
}
