//! Frame builders for the tests, the bench, the differential test, the fuzz
//! corpus, the capture generator and the docs: each function wraps a body in
//! one header. Nothing else in the workspace builds frames.
//!
//! Hand-rolled on purpose: etherparse (which the tests keep as an independent
//! parser) builds neither PPPoE, nor IPv6 extension-header chains, nor IPv4 in
//! IPv6, and the tests need headers with deliberately wrong lengths, which a
//! checked builder refuses.
//!
//! Two flavours of IP header:
//! - [`ipv4`], [`ipv6`] (and [`ipv4_between`], [`ipv6_between`] for other
//!   addresses) leave every checksum zero: the XDP program never reads them,
//!   and a UDP checksum of zero means "none" for IPv4 (RFC 768).
//! - [`ipv4_sent`], [`ipv6_sent`] build a whole datagram as a host's IP stack
//!   sends it (and as etherparse's `PacketBuilder` writes it): IPv4 with the
//!   don't-fragment flag, the header checksum and the UDP or TCP checksum
//!   filled in. Frames that a receiving stack must accept (written into a tun
//!   device, replayed to a socket) need them.

extern crate std;

use std::vec::Vec;

use crate::headers::{ETH_P_PPP_SES, IPPROTO_FRAGMENT, IPPROTO_UDP};

/// Source and destination MAC addresses of every built frame.
pub const MAC_SRC: [u8; 6] = [2, 0, 0, 0, 0, 2];
pub const MAC_DST: [u8; 6] = [2, 0, 0, 0, 0, 1];
/// IPv4 addresses (198.18.0.0/15, RFC 2544 benchmarking).
pub const V4_SRC: [u8; 4] = [198, 18, 0, 2];
pub const V4_DST: [u8; 4] = [198, 18, 0, 1];
/// IPv6 addresses (`2001:db8::/32`, RFC 3849 documentation).
pub const V6_SRC: [u8; 16] = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
pub const V6_DST: [u8; 16] = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
/// The protocol number of TCP.
pub const IPPROTO_TCP: u8 = 6;
/// The SYN flag of a TCP header, for [`tcp`].
pub const TCP_SYN: u8 = 0x02;
/// The session id of the PPPoE headers [`pppoe`] and [`pppoe_compressed`]
/// write.
pub const PPPOE_SESSION: u16 = 0x1234;
/// The shortest Ethernet frame (without FCS); [`padded`] pads to it.
pub const ETH_MIN_FRAME: usize = 60;

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

/// A TCP segment without options: `flags` (e.g. [`TCP_SYN`]; 0 for none),
/// acknowledgement number and urgent pointer zero, checksum zero
/// ([`ipv4_sent`] and [`ipv6_sent`] fill it in).
pub fn tcp(sport: u16, dport: u16, seq: u32, flags: u8, window: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(20 + payload.len());
    v.extend_from_slice(&sport.to_be_bytes());
    v.extend_from_slice(&dport.to_be_bytes());
    v.extend_from_slice(&seq.to_be_bytes());
    v.extend_from_slice(&[0; 4]);
    // Data offset 5 (20 bytes), then the flags.
    v.extend_from_slice(&[5 << 4, flags]);
    v.extend_from_slice(&window.to_be_bytes());
    v.extend_from_slice(&[0; 4]);
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
    /// The first fragment of datagram `id` (offset 0, more to come).
    pub const fn first(id: u16) -> V4Frag {
        V4Frag {
            id,
            offset: 0,
            more: true,
        }
    }

    /// The last fragment of datagram `id`, at `offset` (8-byte units).
    pub const fn later(id: u16, offset: u16) -> V4Frag {
        V4Frag {
            id,
            offset,
            more: false,
        }
    }

    /// The flags/fragment-offset field.
    pub const fn field(self) -> u16 {
        (self.offset & 0x1fff) | if self.more { 0x2000 } else { 0 }
    }
}

/// An IPv4 header carrying `body` as protocol `proto`; `options` (padded
/// with zeros to a multiple of 4, at most 40 bytes) sets the IHL.
pub fn ipv4(proto: u8, frag: V4Frag, options: &[u8], body: &[u8]) -> Vec<u8> {
    ipv4_between(V4_SRC, V4_DST, proto, frag, options, body)
}

/// [`ipv4`] from `src` to `dst`.
pub fn ipv4_between(
    src: [u8; 4],
    dst: [u8; 4],
    proto: u8,
    frag: V4Frag,
    options: &[u8],
    body: &[u8],
) -> Vec<u8> {
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
    v.extend_from_slice(&src);
    v.extend_from_slice(&dst);
    v.extend_from_slice(&opts);
    v.extend_from_slice(body);
    v
}

/// An IPv6 header whose next header is `next`; `body` holds the extension
/// headers (if any) and the upper layer.
pub fn ipv6(next: u8, body: &[u8]) -> Vec<u8> {
    ipv6_between(V6_SRC, V6_DST, next, body)
}

/// [`ipv6`] from `src` to `dst`.
pub fn ipv6_between(src: [u8; 16], dst: [u8; 16], next: u8, body: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(40 + body.len());
    v.extend_from_slice(&[0x60, 0, 0, 0]);
    v.extend_from_slice(&be16(body.len()));
    v.extend_from_slice(&[next, 64]);
    v.extend_from_slice(&src);
    v.extend_from_slice(&dst);
    v.extend_from_slice(body);
    v
}

/// The IPv4 flag "don't fragment" in the flags/fragment-offset field.
const DONT_FRAGMENT: u16 = 0x4000;

/// `packet` (an IPv4 packet) with its header checksum (RFC 791) filled in.
pub fn with_ipv4_checksum(mut packet: Vec<u8>) -> Vec<u8> {
    let hlen = usize::from(packet[0] & 0x0f) * 4;
    packet[10..12].fill(0);
    let sum = !ones_complement_sum(&[&packet[..hlen]]);
    packet[10..12].copy_from_slice(&sum.to_be_bytes());
    packet
}

/// A whole IPv4 datagram from `src` to `dst` as a host's IP stack sends it
/// (and as etherparse's `PacketBuilder` writes it): no options,
/// identification 0, don't-fragment set, TTL 64, the header checksum and,
/// for [`IPPROTO_UDP`] and [`IPPROTO_TCP`], the transport checksum of
/// `body` (the transport header and payload) filled in.
pub fn ipv4_sent(src: [u8; 4], dst: [u8; 4], proto: u8, body: &[u8]) -> Vec<u8> {
    let mut v = ipv4_between(src, dst, proto, V4Frag::default(), &[], body);
    v[6..8].copy_from_slice(&DONT_FRAGMENT.to_be_bytes());
    let pseudo = [&src[..], &dst[..], &[0, proto], &be16(body.len())].concat();
    fill_transport_checksum(&mut v[20..], proto, &pseudo);
    with_ipv4_checksum(v)
}

/// A whole IPv6 datagram from `src` to `dst` without extension headers as a
/// host's IP stack sends it: hop limit 64, for [`IPPROTO_UDP`] and
/// [`IPPROTO_TCP`] the transport checksum of `body` filled in (mandatory for
/// UDP over IPv6, RFC 8200 §8.1).
pub fn ipv6_sent(src: [u8; 16], dst: [u8; 16], next: u8, body: &[u8]) -> Vec<u8> {
    let mut v = ipv6_between(src, dst, next, body);
    let len = u32::try_from(body.len()).unwrap_or(u32::MAX).to_be_bytes();
    let pseudo = [&src[..], &dst[..], &len[..], &[0, 0, 0, next]].concat();
    fill_transport_checksum(&mut v[40..], next, &pseudo);
    v
}

/// Fills in the checksum of a UDP datagram or TCP segment (`segment`, the
/// transport header on) over the pseudo-header `pseudo`; other protocols
/// are left alone. A UDP checksum that comes out zero is sent as 0xffff
/// (zero means "none", RFC 768).
fn fill_transport_checksum(segment: &mut [u8], proto: u8, pseudo: &[u8]) {
    let at = match proto {
        IPPROTO_UDP => 6,
        IPPROTO_TCP => 16,
        _ => return,
    };
    segment[at..at + 2].fill(0);
    let mut sum = !ones_complement_sum(&[pseudo, segment]);
    if sum == 0 && proto == IPPROTO_UDP {
        sum = 0xffff;
    }
    segment[at..at + 2].copy_from_slice(&sum.to_be_bytes());
}

/// The 16-bit one's complement sum of `parts`, each padded with a zero byte
/// to an even length (RFC 1071).
fn ones_complement_sum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    for part in parts {
        for pair in part.chunks(2) {
            let word = u16::from_be_bytes([pair[0], pair.get(1).copied().unwrap_or(0)]);
            sum += u32::from(word);
            sum = (sum & 0xffff) + (sum >> 16);
        }
    }
    u16::try_from(sum).unwrap_or(u16::MAX)
}

/// A request to port 5351 (from port 40000) in IPv4, no options, not a
/// fragment: the IP packet a test wraps in its link layer.
pub fn v4(payload: &[u8]) -> Vec<u8> {
    ipv4(
        IPPROTO_UDP,
        V4Frag::default(),
        &[],
        &udp(40000, crate::NATPMP_PORT, payload),
    )
}

/// An answer from port 5351 (to port 40000) in IPv4, no options, not a
/// fragment: what a NAT-PMP/PCP server sends back.
pub fn v4_answer(payload: &[u8]) -> Vec<u8> {
    ipv4(
        IPPROTO_UDP,
        V4Frag::default(),
        &[],
        &udp(crate::NATPMP_PORT, 40000, payload),
    )
}

/// A request to port 5351 (from port 40000) in IPv6, no extension header.
pub fn v6(payload: &[u8]) -> Vec<u8> {
    ipv6(IPPROTO_UDP, &udp(40000, crate::NATPMP_PORT, payload))
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
    pppoe_session(PPPOE_SESSION, &ppp_protocol.to_be_bytes(), body)
}

/// A PPPoE session header and a PPP frame whose protocol field is
/// compressed to one byte (RFC 1661 §6.5; `ppp_protocol` must fit in it
/// and be odd, as 0x21 and 0x57 are).
pub fn pppoe_compressed(ppp_protocol: u8, body: &[u8]) -> Vec<u8> {
    pppoe_session(PPPOE_SESSION, &[ppp_protocol], body)
}

/// A PPPoE session header of session `session` (version 1, type 1, code 0)
/// and the PPP protocol field `protocol` as given (two bytes, or one when
/// compressed) around `body`.
pub fn pppoe_session(session: u16, protocol: &[u8], body: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(6 + protocol.len() + body.len());
    v.extend_from_slice(&[0x11, 0]);
    v.extend_from_slice(&session.to_be_bytes());
    v.extend_from_slice(&be16(protocol.len() + body.len()));
    v.extend_from_slice(protocol);
    v.extend_from_slice(body);
    v
}

/// An Ethernet frame: MAC addresses, then one 4-byte tag per entry of
/// `tags` (each the tag's own EtherType, 0x8100 or 0x88A8), then
/// `ether_type` and `body`.
pub fn ethernet(tags: &[u16], ether_type: u16, body: &[u8]) -> Vec<u8> {
    ethernet_between(MAC_SRC, MAC_DST, tags, ether_type, body)
}

/// [`ethernet`] from `src` to `dst`.
pub fn ethernet_between(
    src: [u8; 6],
    dst: [u8; 6],
    tags: &[u16],
    ether_type: u16,
    body: &[u8],
) -> Vec<u8> {
    let mut v = Vec::with_capacity(14 + 4 * tags.len() + body.len());
    v.extend_from_slice(&dst);
    v.extend_from_slice(&src);
    for (i, tag) in tags.iter().enumerate() {
        v.extend_from_slice(&tag.to_be_bytes());
        // VLAN ids 100, 101, ... in the tag control information.
        v.extend_from_slice(&be16(100 + i));
    }
    v.extend_from_slice(&ether_type.to_be_bytes());
    v.extend_from_slice(body);
    v
}

/// `frame` padded with zeros to [`ETH_MIN_FRAME`] bytes, as a NIC delivers
/// a short one.
pub fn padded(mut frame: Vec<u8>) -> Vec<u8> {
    frame.resize(frame.len().max(ETH_MIN_FRAME), 0);
    frame
}

/// A PPPoE session frame over Ethernet.
pub fn ethernet_pppoe(ppp_protocol: u16, body: &[u8]) -> Vec<u8> {
    ethernet(&[], ETH_P_PPP_SES, &pppoe(ppp_protocol, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    }

    /// What etherparse's `PacketBuilder` wrote for the same datagrams (the
    /// bench's frames before they were built here): checksums and flags as a
    /// host's stack sends them.
    #[test]
    fn sent_packets_are_what_a_host_stack_sends() {
        let (tx, rx) = ([2, 0, 0, 0, 0xbe, 2], [2, 0, 0, 0, 0xbe, 1]);
        let v4 = ipv4_sent(V4_SRC, V4_DST, IPPROTO_UDP, &udp(40000, 5351, &[0, 0]));
        assert_eq!(
            padded(ethernet_between(tx, rx, &[], 0x0800, &v4)),
            hex(
                "02000000be0102000000be0208004500001e000040004011aea7c6120002c6120001\
                 9c4014e7000ac28a000000000000000000000000000000000000"
            )
        );
        let v6 = ipv6_sent(V6_SRC, V6_DST, IPPROTO_UDP, &udp(40000, 5351, &[0, 0]));
        assert_eq!(
            ethernet_between(tx, rx, &[], 0x86dd, &v6),
            hex(
                "02000000be0102000000be0286dd60000000000a114020010db8000000000000000000\
                 00000220010db80000000000000000000000019c4014e7000af33d0000"
            )
        );
        let tcp6 = ipv6_sent(
            V6_SRC,
            V6_DST,
            IPPROTO_TCP,
            &tcp(40000, 443, 1, 0, 1024, &[]),
        );
        assert_eq!(
            padded(ethernet_between(tx, rx, &[], 0x86dd, &tcp6)),
            hex(
                "02000000be0102000000be0286dd600000000014064020010db8000000000000000000\
                 00000220010db80000000000000000000000019c4001bb0000000100000000500004\
                 00b2730000"
            )
        );
    }
}
