//! The frames every program is measured on: NAT-PMP requests (valid, map,
//! malformed) and the traffic a WAN link mostly carries (TCP, DNS, IPv6),
//! plus VLAN-tagged and `PPPoE` frames. Built with etherparse; the VLAN tag
//! and the `PPPoE` session header are spliced in by hand because they are
//! four and eight fixed bytes (RFC 2516 §4, IEEE 802.1Q) and etherparse 0.16
//! has no `PPPoE` builder.

use etherparse::PacketBuilder;
use nat_pmp_agent::probe::sample_payload;
use nat_pmp_ebpf_common::{Class, NATPMP_PORT};

use crate::env::{RX_ADDR, RX_MAC, TX_ADDR, TX_MAC};

const V6_SRC: [u8; 16] = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
const V6_DST: [u8; 16] = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

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

/// Pads to the 60-byte Ethernet minimum (without FCS), as a NIC delivers.
fn padded(mut f: Vec<u8>) -> Vec<u8> {
    f.resize(f.len().max(60), 0);
    f
}

/// IPv4/UDP from the sender to the receiver of the flood veth pair.
pub fn udp4(dport: u16, payload: &[u8]) -> Vec<u8> {
    padded(udp4_unpadded(dport, payload))
}

fn udp4_unpadded(dport: u16, payload: &[u8]) -> Vec<u8> {
    udp4_from(TX_ADDR, dport, payload)
}

fn udp4_from(src: [u8; 4], dport: u16, payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(TX_MAC, RX_MAC)
        .ipv4(src, RX_ADDR, 64)
        .udp(40000, dport);
    let mut v = Vec::with_capacity(b.size(payload.len()));
    // Writing into a Vec cannot fail for these small, valid headers.
    let _ = b.write(&mut v, payload);
    v
}

fn tcp4() -> Vec<u8> {
    let b = PacketBuilder::ethernet2(TX_MAC, RX_MAC)
        .ipv4(TX_ADDR, RX_ADDR, 64)
        .tcp(40000, 443, 1, 1024);
    let mut v = Vec::new();
    let _ = b.write(&mut v, &[]);
    padded(v)
}

fn tcp6() -> Vec<u8> {
    let b = PacketBuilder::ethernet2(TX_MAC, RX_MAC)
        .ipv6(V6_SRC, V6_DST, 64)
        .tcp(40000, 443, 1, 1024);
    let mut v = Vec::new();
    let _ = b.write(&mut v, &[]);
    padded(v)
}

fn udp6(dport: u16, payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(TX_MAC, RX_MAC)
        .ipv6(V6_SRC, V6_DST, 64)
        .udp(40000, dport);
    let mut v = Vec::new();
    let _ = b.write(&mut v, payload);
    v
}

fn request4() -> Vec<u8> {
    udp4_unpadded(
        NATPMP_PORT,
        &sample_payload(Class::NatpmpExternalAddressRequest),
    )
}

fn request6() -> Vec<u8> {
    udp6(
        NATPMP_PORT,
        &sample_payload(Class::NatpmpExternalAddressRequest),
    )
}

/// `f` behind VLAN tags, outermost first (each its TPID; VIDs 100, 101).
fn tagged(tpids: &[u16], f: &[u8]) -> Vec<u8> {
    let mut out = f[..12].to_vec();
    for (i, tpid) in tpids.iter().enumerate() {
        out.extend_from_slice(&tpid.to_be_bytes());
        out.extend_from_slice(&[0x00, 100 + u8::try_from(i).unwrap_or(0)]);
    }
    out.extend_from_slice(&f[12..]);
    padded(out)
}

/// `f`'s IP packet inside a `PPPoE` session (RFC 2516 §4), with the PPP
/// protocol field in two bytes or, `compressed`, one (RFC 1661 §6.5).
fn pppoe(f: &[u8], compressed: bool) -> Vec<u8> {
    let ip = &f[14..];
    let proto: u8 = if f[12..14] == [0x86, 0xdd] {
        0x57
    } else {
        0x21
    };
    let field: &[u8] = if compressed { &[proto] } else { &[0, proto] };
    let ppp_len = u16::try_from(ip.len() + field.len())
        .unwrap_or(u16::MAX)
        .to_be_bytes();
    let mut out = f[..12].to_vec();
    out.extend_from_slice(&[0x88, 0x64]); // PPPoE session stage
    out.extend_from_slice(&[0x11, 0x00, 0x00, 0x01, ppp_len[0], ppp_len[1]]);
    out.extend_from_slice(field);
    out.extend_from_slice(ip);
    padded(out)
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
    padded(udp4_from(
        [198, 18, 64 | hi, lo],
        NATPMP_PORT,
        &sample_payload(Class::NatpmpExternalAddressRequest),
    ))
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
            padded(request6()),
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
            tagged(&[0x8100], &tcp4()),
            NotNatpmp,
            false,
        ),
        f(
            ("802.1Q VLAN + opcode 0 request", "802.1Q"),
            tagged(&[0x8100], &request4()),
            OtherRequest,
            false,
        ),
        f(
            ("QinQ (802.1ad + 802.1Q) + opcode 0 request", "QinQ"),
            tagged(&[0x88a8, 0x8100], &request4()),
            OtherRequest,
            false,
        ),
        f(
            ("802.1Q VLAN + IPv6 opcode 0 request", "802.1Q IPv6"),
            tagged(&[0x8100], &request6()),
            OtherRequest,
            false,
        ),
        f(
            ("PPPoE session + opcode 0 request", "PPPoE"),
            pppoe(&request4(), false),
            OtherRequest,
            false,
        ),
        f(
            ("PPPoE session + IPv6 opcode 0 request", "PPPoE IPv6"),
            pppoe(&request6(), false),
            OtherRequest,
            false,
        ),
        f(
            (
                "PPPoE, PPP protocol field compressed + opcode 0 request",
                "PPPoE compressed",
            ),
            pppoe(&request4(), true),
            OtherRequest,
            false,
        ),
    ]
}
