//! The frames every program is measured on: NAT-PMP requests (valid, map,
//! malformed) and the traffic a WAN link mostly carries (TCP, DNS, IPv6),
//! plus VLAN-tagged and `PPPoE` frames, from the sender to the receiver of
//! the flood veth pair. Built with `nat_pmp_ebpf_common::frames`, as a host's
//! stack sends them (checksums filled in).

use nat_pmp_agent::probe::sample_payload;
use nat_pmp_ebpf_common::{
    frames::{
        ethernet_between, ipv4_sent, ipv6_sent, padded, pppoe_session, tcp, udp, IPPROTO_TCP,
        V6_DST, V6_SRC,
    },
    headers::{ETH_P_8021AD, ETH_P_8021Q, ETH_P_IP, ETH_P_IPV6, ETH_P_PPP_SES, IPPROTO_UDP},
    Class, NATPMP_PORT,
};

use crate::env::{RX_ADDR, RX_MAC, TX_ADDR, TX_MAC};

/// Which of the targets a frame's cost is judged by.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Group {
    /// An untagged IPv4 NAT-PMP request (opcode 0, map): at most 1.5x the
    /// reference as shipped, 1.25x with `--no-sources`.
    Ipv4Request,
    /// An untagged IPv4 datagram to 5351 that is not a valid request: on
    /// the fast path (no call), no ratio target.
    Ipv4Malformed,
    /// An IPv6 request, or a request behind 802.1Q, QinQ or `PPPoE`: at
    /// most 2x the reference's plain IPv4 cost, at most half of xdp-filter.
    OtherRequest,
    /// Not NAT-PMP: at most bare `XDP_PASS` + 5 ns.
    NotNatpmp,
}

/// One measured frame.
pub struct Frame {
    pub name: &'static str,
    /// A few words for the targets' lines.
    pub short: &'static str,
    pub bytes: Vec<u8>,
    /// Is it a datagram to port 5351 (the product counts it)?
    pub natpmp: bool,
    pub group: Group,
    /// IP directly after the Ethernet header (no VLAN tag, no `PPPoE`).
    pub untagged: bool,
}

impl Frame {
    /// On the paths that must make no call: untagged IPv4/IPv6 requests
    /// and traffic that is not NAT-PMP.
    pub fn fast_path(&self) -> bool {
        self.group == Group::NotNatpmp || (self.natpmp && self.untagged)
    }
}

/// An Ethernet frame from the sender to the receiver, behind VLAN tags
/// `tags` (outermost first; VIDs 100, 101).
fn eth(tags: &[u16], ether_type: u16, body: &[u8]) -> Vec<u8> {
    ethernet_between(TX_MAC, RX_MAC, tags, ether_type, body)
}

/// The IP packet `ip` (IPv6 if `v6`) in an Ethernet frame behind VLAN tags
/// `tags` (none for an untagged frame), padded.
fn framed(tags: &[u16], v6: bool, ip: &[u8]) -> Vec<u8> {
    let ether_type = if v6 { ETH_P_IPV6 } else { ETH_P_IP };
    padded(eth(tags, ether_type, ip))
}

/// IPv4/UDP from port 40000 of `src` to the receiver.
fn udp4_packet(src: [u8; 4], dport: u16, payload: &[u8]) -> Vec<u8> {
    ipv4_sent(src, RX_ADDR, IPPROTO_UDP, &udp(40000, dport, payload))
}

/// IPv4/UDP from the sender to the receiver, untagged.
fn udp4(dport: u16, payload: &[u8]) -> Vec<u8> {
    framed(&[], false, &udp4_packet(TX_ADDR, dport, payload))
}

/// A TCP segment from port 40000 to 443 (sequence number 1, no flags,
/// window 1024).
fn tcp_segment() -> Vec<u8> {
    tcp(40000, 443, 1, 0, 1024, &[])
}

fn tcp4() -> Vec<u8> {
    let ip = ipv4_sent(TX_ADDR, RX_ADDR, IPPROTO_TCP, &tcp_segment());
    framed(&[], false, &ip)
}

fn tcp6() -> Vec<u8> {
    let ip = ipv6_sent(V6_SRC, V6_DST, IPPROTO_TCP, &tcp_segment());
    framed(&[], true, &ip)
}

/// The opcode-0 request's IPv4 packet.
fn request4() -> Vec<u8> {
    udp4_packet(
        TX_ADDR,
        NATPMP_PORT,
        &sample_payload(Class::NatpmpExternalAddressRequest),
    )
}

/// The opcode-0 request's IPv6 packet.
fn request6() -> Vec<u8> {
    let payload = sample_payload(Class::NatpmpExternalAddressRequest);
    ipv6_sent(
        V6_SRC,
        V6_DST,
        IPPROTO_UDP,
        &udp(40000, NATPMP_PORT, &payload),
    )
}

/// The IP packet `ip` (IPv6 if `v6`) inside a `PPPoE` session (RFC 2516
/// §4, session 1), with the PPP protocol field in two bytes or,
/// `compressed`, one (RFC 1661 §6.5); padded.
fn pppoe(ip: &[u8], v6: bool, compressed: bool) -> Vec<u8> {
    let proto: u8 = if v6 { 0x57 } else { 0x21 };
    let field: &[u8] = if compressed { &[proto] } else { &[0, proto] };
    padded(eth(&[], ETH_P_PPP_SES, &pppoe_session(1, field, ip)))
}

/// The opcode-0 request of the flood test.
pub fn opcode0() -> Vec<u8> {
    udp4(
        NATPMP_PORT,
        &sample_payload(Class::NatpmpExternalAddressRequest),
    )
}

/// The opcode-0 request from source number `i` of the 16,384 in
/// 198.18.64.0/18 (the benchmarking range, RFC 2544): what fills the
/// agent's source table.
pub fn opcode0_from(i: u16) -> Vec<u8> {
    let [hi, lo] = (i & 0x3fff).to_be_bytes();
    let ip = udp4_packet(
        [198, 18, 64 | hi, lo],
        NATPMP_PORT,
        &sample_payload(Class::NatpmpExternalAddressRequest),
    );
    framed(&[], false, &ip)
}

/// Row names.
pub const IPV4_REQUEST: &str = "NAT-PMP opcode 0 request (IPv4 UDP/5351)";
pub const IPV6_REQUEST: &str = "NAT-PMP opcode 0 request (IPv6 UDP/5351)";
pub const VLAN_TCP: &str = "802.1Q VLAN + IPv4 TCP/443";

/// Every frame of the per-packet table, in table order.
pub fn all() -> Vec<Frame> {
    use Group::{Ipv4Malformed, Ipv4Request, NotNatpmp, OtherRequest};
    let f = |(name, short), bytes, group, untagged| Frame {
        name,
        short,
        bytes,
        natpmp: group != NotNatpmp,
        group,
        untagged,
    };
    vec![
        f(
            (IPV4_REQUEST, "IPv4 opcode 0"),
            opcode0(),
            Ipv4Request,
            true,
        ),
        f(
            ("NAT-PMP map UDP request (opcode 1)", "IPv4 map"),
            udp4(NATPMP_PORT, &sample_payload(Class::NatpmpMapUdpRequest)),
            Ipv4Request,
            true,
        ),
        f(
            (
                "malformed NAT-PMP (map request cut to 4 bytes)",
                "IPv4 malformed",
            ),
            udp4(NATPMP_PORT, &sample_payload(Class::MalformedTruncated)),
            Ipv4Malformed,
            true,
        ),
        f(
            (IPV6_REQUEST, "IPv6 opcode 0"),
            framed(&[], true, &request6()),
            OtherRequest,
            true,
        ),
        f(("IPv4 TCP/443", "IPv4 TCP"), tcp4(), NotNatpmp, true),
        f(
            ("IPv4 UDP/53 (DNS)", "IPv4 UDP/53"),
            udp4(53, &[0; 12]),
            NotNatpmp,
            true,
        ),
        f(("IPv6 TCP/443", "IPv6 TCP"), tcp6(), NotNatpmp, true),
        f(
            (VLAN_TCP, "802.1Q TCP"),
            // The untagged frame's body, padding included, behind the tag.
            padded(eth(&[ETH_P_8021Q], ETH_P_IP, &tcp4()[14..])),
            NotNatpmp,
            false,
        ),
        f(
            ("802.1Q VLAN + opcode 0 request", "802.1Q"),
            framed(&[ETH_P_8021Q], false, &request4()),
            OtherRequest,
            false,
        ),
        f(
            ("QinQ (802.1ad + 802.1Q) + opcode 0 request", "QinQ"),
            framed(&[ETH_P_8021AD, ETH_P_8021Q], false, &request4()),
            OtherRequest,
            false,
        ),
        f(
            ("802.1Q VLAN + IPv6 opcode 0 request", "802.1Q IPv6"),
            framed(&[ETH_P_8021Q], true, &request6()),
            OtherRequest,
            false,
        ),
        f(
            ("PPPoE session + opcode 0 request", "PPPoE"),
            pppoe(&request4(), false, false),
            OtherRequest,
            false,
        ),
        f(
            ("PPPoE session + IPv6 opcode 0 request", "PPPoE IPv6"),
            pppoe(&request6(), true, false),
            OtherRequest,
            false,
        ),
        f(
            (
                "PPPoE, PPP protocol field compressed + opcode 0 request",
                "PPPoE compressed",
            ),
            pppoe(&request4(), false, true),
            OtherRequest,
            false,
        ),
    ]
}
