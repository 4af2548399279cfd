//! Ethernet frames as a host's stack sends them (checksums filled in, IPv4
//! don't-fragment set), from [`MAC_A`] to [`MAC_B`] and between
//! `nat_pmp_ebpf_common::frames`'s addresses, which builds them: the plain
//! traffic of the kernel and xlated tests.

use nat_pmp_ebpf_common::{
    frames::{
        ethernet_between, ipv4_sent, ipv6_sent, tcp, udp, IPPROTO_TCP, V4_DST, V4_SRC, V6_DST,
        V6_SRC,
    },
    headers::{ETH_P_IP, ETH_P_IPV6, IPPROTO_UDP},
};

/// The sender's and the receiver's MAC addresses.
pub const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 1];
pub const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 2];

fn over_ipv4(proto: u8, segment: &[u8]) -> Vec<u8> {
    ethernet_between(
        MAC_A,
        MAC_B,
        &[],
        ETH_P_IP,
        &ipv4_sent(V4_SRC, V4_DST, proto, segment),
    )
}

fn over_ipv6(proto: u8, segment: &[u8]) -> Vec<u8> {
    ethernet_between(
        MAC_A,
        MAC_B,
        &[],
        ETH_P_IPV6,
        &ipv6_sent(V6_SRC, V6_DST, proto, segment),
    )
}

/// An IPv4/UDP frame.
pub fn udp4(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    over_ipv4(IPPROTO_UDP, &udp(sport, dport, payload))
}

/// An IPv6/UDP frame.
pub fn udp6(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    over_ipv6(IPPROTO_UDP, &udp(sport, dport, payload))
}

/// A TCP segment from port 40000 to `dport` (sequence number 1, no flags,
/// window 1024) over IPv4.
pub fn tcp4(dport: u16, payload: &[u8]) -> Vec<u8> {
    over_ipv4(IPPROTO_TCP, &tcp(40000, dport, 1, 0, 1024, payload))
}

/// [`tcp4`] over IPv6.
pub fn tcp6(dport: u16, payload: &[u8]) -> Vec<u8> {
    over_ipv6(IPPROTO_TCP, &tcp(40000, dport, 1, 0, 1024, payload))
}
