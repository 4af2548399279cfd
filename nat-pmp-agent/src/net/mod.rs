//! The operating system around the filter: interfaces and their link types
//! ([`iface`]), rtnetlink queries and link events ([`netlink`]), the UDP
//! sockets on the NAT-PMP ports and their processes ([`sockets`]), and the
//! few bpf(2) and clock calls aya does not wrap ([`sys`]).
//!
//! A leaf: depends only on `nat-pmp-ebpf-common`.

pub mod iface;
pub mod netlink;
pub mod sockets;
pub mod sys;
