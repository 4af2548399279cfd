//! Frame builders for tests, the differential test, the fuzz corpus and the
//! docs: each function wraps a body in one header.
//!
//! Hand-rolled on purpose: etherparse (used elsewhere in the tests) builds
//! neither PPPoE, nor IPv6 extension-header chains, nor IPv4 in IPv6, and the
//! tests need headers with deliberately wrong lengths, which a checked
//! builder refuses. Checksums are left zero (the XDP program never reads
//! them; a UDP checksum of zero means "none" for IPv4, RFC 768).

extern crate std;

use std::vec::Vec;

use crate::headers::{ETH_P_PPP_SES, IPPROTO_FRAGMENT};

/// Source and destination MAC addresses of every built frame.
pub const MAC_SRC: [u8; 6] = [2, 0, 0, 0, 0, 2];
pub const MAC_DST: [u8; 6] = [2, 0, 0, 0, 0, 1];
/// IPv4 addresses (198.18.0.0/15, RFC 2544 benchmarking).
pub const V4_SRC: [u8; 4] = [198, 18, 0, 2];
pub const V4_DST: [u8; 4] = [198, 18, 0, 1];
/// IPv6 addresses (`2001:db8::/32`, RFC 3849 documentation).
pub const V6_SRC: [u8; 16] = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
pub const V6_DST: [u8; 16] = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

fn be16(v: usize) -> [u8; 2] {
    u16::try_from(v).unwrap_or(u16::MAX).to_be_bytes()
}

/// A UDP datagram with a correct length field.
pub fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + payload.len());
    v.extend_from_slice(&sport.to_be_bytes());
    v.extend_from_slice(&dport.to_be_bytes());
    v.extend_from_slice(&be16(8 + payload.len()));
    v.extend_from_slice(&[0, 0]);
    v.extend_from_slice(payload);
    v
}

/// IPv4 fragmentation: the flags/offset field.
#[derive(Clone, Copy, Debug, Default)]
pub struct V4Frag {
    pub id: u16,
    /// Fragment offset in 8-byte units.
    pub offset: u16,
    pub more: bool,
}

impl V4Frag {
    /// The flags/fragment-offset field.
    pub const fn field(self) -> u16 {
        (self.offset & 0x1fff) | if self.more { 0x2000 } else { 0 }
    }
}

/// An IPv4 header carrying `body` as protocol `proto`; `options` (padded
/// with zeros to a multiple of 4, at most 40 bytes) sets the IHL.
pub fn ipv4(proto: u8, frag: V4Frag, options: &[u8], body: &[u8]) -> Vec<u8> {
    let mut opts = options.to_vec();
    opts.resize(options.len().div_ceil(4) * 4, 0);
    let hlen = 20 + opts.len();
    let mut v = Vec::with_capacity(hlen + body.len());
    #[expect(clippy::cast_possible_truncation, reason = "IHL is at most 15")]
    v.push(0x40 | ((hlen / 4) as u8 & 0x0f));
    v.push(0);
    v.extend_from_slice(&be16(hlen + body.len()));
    v.extend_from_slice(&frag.id.to_be_bytes());
    v.extend_from_slice(&frag.field().to_be_bytes());
    v.extend_from_slice(&[64, proto, 0, 0]);
    v.extend_from_slice(&V4_SRC);
    v.extend_from_slice(&V4_DST);
    v.extend_from_slice(&opts);
    v.extend_from_slice(body);
    v
}

/// An IPv6 header whose next header is `next`; `body` holds the extension
/// headers (if any) and the upper layer.
pub fn ipv6(next: u8, body: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(40 + body.len());
    v.extend_from_slice(&[0x60, 0, 0, 0]);
    v.extend_from_slice(&be16(body.len()));
    v.extend_from_slice(&[next, 64]);
    v.extend_from_slice(&V6_SRC);
    v.extend_from_slice(&V6_DST);
    v.extend_from_slice(body);
    v
}

/// A request to port 5351 (from port 40000) in IPv4, no options, not a
/// fragment: the IP packet a test wraps in its link layer.
pub fn v4(payload: &[u8]) -> Vec<u8> {
    ipv4(
        crate::headers::IPPROTO_UDP,
        V4Frag::default(),
        &[],
        &udp(40000, crate::NATPMP_PORT, payload),
    )
}

/// A request to port 5351 (from port 40000) in IPv6, no extension header.
pub fn v6(payload: &[u8]) -> Vec<u8> {
    ipv6(
        crate::headers::IPPROTO_UDP,
        &udp(40000, crate::NATPMP_PORT, payload),
    )
}

/// A hop-by-hop, routing or destination-options header of `units + 1`
/// 8-byte units (zero-filled: Pad1 options, routing type 0 with no segments
/// left) followed by `rest`, whose protocol is `next`.
pub fn ext(next: u8, units: u8, rest: &[u8]) -> Vec<u8> {
    let len = (usize::from(units) + 1) * 8;
    let mut v = Vec::with_capacity(len + rest.len());
    v.extend_from_slice(&[next, units]);
    v.resize(len, 0);
    v.extend_from_slice(rest);
    v
}

/// An IPv6 fragment header (offset in 8-byte units) followed by `rest`.
pub fn frag6(next: u8, offset: u16, more: bool, id: u32, rest: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + rest.len());
    v.extend_from_slice(&[next, 0]);
    v.extend_from_slice(&((offset << 3) | u16::from(more)).to_be_bytes());
    v.extend_from_slice(&id.to_be_bytes());
    v.extend_from_slice(rest);
    v
}

/// The protocol number of an IPv6 fragment header, for chains.
pub const FRAGMENT: u8 = IPPROTO_FRAGMENT;

/// A PPPoE session header and PPP protocol field (RFC 2516 §4) around
/// `body`; wrap it with [`ethernet`] and EtherType 0x8864.
pub fn pppoe(ppp_protocol: u16, body: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + body.len());
    v.extend_from_slice(&[0x11, 0, 0x12, 0x34]);
    v.extend_from_slice(&be16(2 + body.len()));
    v.extend_from_slice(&ppp_protocol.to_be_bytes());
    v.extend_from_slice(body);
    v
}

/// A PPPoE session header and a PPP frame whose protocol field is
/// compressed to one byte (RFC 1661 §6.5; `ppp_protocol` must fit in it
/// and be odd, as 0x21 and 0x57 are).
pub fn pppoe_compressed(ppp_protocol: u8, body: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(7 + body.len());
    v.extend_from_slice(&[0x11, 0, 0x12, 0x34]);
    v.extend_from_slice(&be16(1 + body.len()));
    v.push(ppp_protocol);
    v.extend_from_slice(body);
    v
}

/// An Ethernet frame: MAC addresses, then one 4-byte tag per entry of
/// `tags` (each the tag's own EtherType, 0x8100 or 0x88A8), then
/// `ether_type` and `body`.
pub fn ethernet(tags: &[u16], ether_type: u16, body: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(14 + 4 * tags.len() + body.len());
    v.extend_from_slice(&MAC_DST);
    v.extend_from_slice(&MAC_SRC);
    for (i, tag) in tags.iter().enumerate() {
        v.extend_from_slice(&tag.to_be_bytes());
        // VLAN ids 100, 101, ... in the tag control information.
        v.extend_from_slice(&be16(100 + i));
    }
    v.extend_from_slice(&ether_type.to_be_bytes());
    v.extend_from_slice(body);
    v
}

/// A PPPoE session frame over Ethernet.
pub fn ethernet_pppoe(ppp_protocol: u16, body: &[u8]) -> Vec<u8> {
    ethernet(&[], ETH_P_PPP_SES, &pppoe(ppp_protocol, body))
}
