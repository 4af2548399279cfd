//! One sample payload per class, and the scan mix a honeypot recorded.
//!
//! Contract: [`sample_payload`] returns, for every [`Class`], a payload that
//! [`crate::classify()`] puts in exactly that class and does not call
//! oversized. The prober (`nat-pmp-agent probe`), the capture generator and
//! the tests all send these bytes, so they share one definition. No
//! allocation: usable from `no_std` code.

use crate::Class;

// RFC 6886 §3.2: version 0, opcode 0.
const EXTERNAL_ADDRESS_REQUEST: [u8; 2] = [0, 0];
// RFC 6886 §3.3: reserved, internal port 5000, suggested external port 5000,
// lifetime 7200 s.
const MAP_UDP_REQUEST: [u8; 12] = [0, 1, 0, 0, 0x13, 0x88, 0x13, 0x88, 0, 0, 0x1c, 0x20];
const MAP_TCP_REQUEST: [u8; 12] = [0, 2, 0, 0, 0x13, 0x88, 0x13, 0x88, 0, 0, 0x1c, 0x20];
// RFC 6886 §3.2: result 0, epoch 60, external address 198.18.0.1.
const EXTERNAL_ADDRESS_RESPONSE: [u8; 12] = [0, 128, 0, 0, 0, 0, 0, 60, 198, 18, 0, 1];
// RFC 6886 §3.3: result 0, epoch 60, ports 5000/5000, lifetime 7200.
const MAP_UDP_RESPONSE: [u8; 16] = [
    0, 129, 0, 0, 0, 0, 0, 60, 0x13, 0x88, 0x13, 0x88, 0, 0, 0x1c, 0x20,
];
const MAP_TCP_RESPONSE: [u8; 16] = [
    0, 130, 0, 0, 0, 0, 0, 60, 0x13, 0x88, 0x13, 0x88, 0, 0, 0x1c, 0x20,
];
// Opcode 3 is not defined by RFC 6886 (a gateway answers result 5, §3.5).
const UNSUPPORTED_OPCODE: [u8; 2] = [0, 3];
// A map request cut after 4 bytes.
const TRUNCATED: [u8; 4] = [0, 1, 0, 0];
// Version 1 was never standardised (RFC 6887 §9).
const BAD_VERSION: [u8; 2] = [1, 0];
// A PCP message cut inside its 24-byte common header (RFC 6887 §7).
const PCP_SHORT_HEADER: [u8; 4] = [2, 1, 0, 0];

/// A PCP message of `N` bytes (at least 24) with `opcode` (R bit included):
/// the common header (RFC 6887 §7.1 request / §7.2 response) for client
/// 198.18.0.2 as an IPv4-mapped IPv6 address, then the opcode's fields
/// (§11.1 MAP, §12.1 PEER) with a fixed nonce, protocol UDP and ports 5000,
/// zero-padded.
const fn pcp_message<const N: usize>(opcode: u8) -> [u8; N] {
    let mut p = [0u8; N];
    p[0] = 2;
    p[1] = opcode;
    let response = opcode & 0x80 != 0;
    let op = opcode & 0x7f;
    // Lifetime 7200 s (0 for an ANNOUNCE request): 0x00001c20.
    if response || op != 0 {
        p[6] = 0x1c;
        p[7] = 0x20;
    }
    if response {
        // Epoch 60; result 0 in byte 3; 12 reserved bytes.
        p[11] = 60;
    } else {
        p[18] = 0xff;
        p[19] = 0xff;
        p[20] = 198;
        p[21] = 18;
        p[23] = 2;
    }
    if (op == 1 || op == 2) && N >= 44 {
        let mut i = 24;
        while i < 36 {
            p[i] = 0x5a; // mapping nonce
            i += 1;
        }
        p[36] = 17; // protocol UDP
        p[40] = 0x13; // internal port 5000
        p[41] = 0x88;
        p[42] = 0x13; // suggested external port 5000
        p[43] = 0x88;
    }
    p
}

const PCP_ANNOUNCE: [u8; 24] = pcp_message(0);
const PCP_ANNOUNCE_RESPONSE: [u8; 24] = pcp_message(0x80);
const PCP_MAP: [u8; 60] = pcp_message(1);
const PCP_MAP_RESPONSE: [u8; 60] = pcp_message(0x81);
const PCP_PEER: [u8; 80] = pcp_message(2);
const PCP_PEER_RESPONSE: [u8; 80] = pcp_message(0x82);
// Opcode 3 is not defined by RFC 6887 (UNSUPP_OPCODE, §7.4).
const PCP_UNSUPPORTED: [u8; 24] = pcp_message(3);
// A MAP request cut after its 24-byte header.
const PCP_SHORT_OPCODE: [u8; 24] = pcp_message(1);
// Longer than the 1,100 bytes a PCP message may have (§7).
const PCP_TOO_LONG: [u8; 1104] = pcp_message(0);
// 26 bytes: not a multiple of 4 (§7).
const PCP_NOT_MULTIPLE_OF_4: [u8; 26] = pcp_message(0);

/// A payload of exactly `class`, as a scanner or a gateway would send it.
///
/// `pcp`, the aggregate of every `pcp_*` class, gets an ANNOUNCE request.
/// The classes the headers around the payload decide
/// ([`Class::decided_by_headers`]) cannot come from a payload: they get an
/// opcode-0 request, and senders refuse them.
pub const fn sample_payload(class: Class) -> &'static [u8] {
    match class {
        Class::NatpmpExternalAddressRequest
        | Class::FragmentNonfirst
        | Class::Ipv6ExtChainTooLong => &EXTERNAL_ADDRESS_REQUEST,
        Class::NatpmpMapUdpRequest => &MAP_UDP_REQUEST,
        Class::NatpmpMapTcpRequest => &MAP_TCP_REQUEST,
        Class::NatpmpExternalAddressResponse => &EXTERNAL_ADDRESS_RESPONSE,
        Class::NatpmpMapUdpResponse => &MAP_UDP_RESPONSE,
        Class::NatpmpMapTcpResponse => &MAP_TCP_RESPONSE,
        Class::NatpmpUnsupportedOpcode => &UNSUPPORTED_OPCODE,
        Class::Pcp | Class::PcpAnnounceRequest => &PCP_ANNOUNCE,
        Class::PcpAnnounceResponse => &PCP_ANNOUNCE_RESPONSE,
        Class::PcpMapRequest => &PCP_MAP,
        Class::PcpMapResponse => &PCP_MAP_RESPONSE,
        Class::PcpPeerRequest => &PCP_PEER,
        Class::PcpPeerResponse => &PCP_PEER_RESPONSE,
        Class::PcpUnsupportedOpcode => &PCP_UNSUPPORTED,
        Class::PcpMalformedShortHeader => &PCP_SHORT_HEADER,
        Class::PcpMalformedShortOpcode => &PCP_SHORT_OPCODE,
        Class::PcpMalformedTooLong => &PCP_TOO_LONG,
        Class::PcpMalformedNotMultipleOf4 => &PCP_NOT_MULTIPLE_OF_4,
        Class::MalformedTruncated => &TRUNCATED,
        Class::MalformedVersion => &BAD_VERSION,
    }
}

/// The composition a honeypot recorded over ten weeks (119,062 datagrams):
/// opcode 0 82.8%, opcode 1 14.0%, opcode 2 2.5%, malformed 0.7%. Weights in
/// tenths of a percent.
pub const HONEYPOT_MIX: [(Class, u64); 5] = [
    (Class::NatpmpExternalAddressRequest, 828),
    (Class::NatpmpMapUdpRequest, 140),
    (Class::NatpmpMapTcpRequest, 25),
    (Class::MalformedTruncated, 4),
    (Class::MalformedVersion, 3),
];

/// Exactly how many of `count` datagrams each entry of `weights` gets
/// (largest-remainder apportionment: the counts add up to `count`), written
/// into `out[i]` for `weights[i]`. `out` must be as long as `weights`; extra
/// entries of either are ignored. Ties go to the earlier entry.
pub fn apportion_into(weights: &[(Class, u64)], count: u64, out: &mut [u64]) {
    let n = weights.len().min(out.len());
    let sum: u128 = weights[..n].iter().map(|w| u128::from(w.1)).sum();
    if sum == 0 {
        out[..n].fill(0);
        return;
    }
    let mut given: u64 = 0;
    for (o, &(_, w)) in out[..n].iter_mut().zip(weights) {
        #[expect(clippy::cast_possible_truncation, reason = "quotient <= count")]
        let q = (u128::from(count) * u128::from(w) / sum) as u64;
        *o = q;
        given += q;
    }
    // Fewer than `n` units are left; each goes to the largest remainder not
    // yet served. Quadratic in `n`, which is a handful, and needs no memory.
    let remainder = |i: usize| u128::from(count) * u128::from(weights[i].1) % sum;
    let mut served: u64 = 0; // bit i: entry i got a unit (n <= 64 below)
    for _ in 0..count - given {
        let best = (0..n.min(64))
            .filter(|&i| served & (1 << i) == 0)
            .max_by_key(|&i| (remainder(i), core::cmp::Reverse(i)));
        let Some(best) = best else { break };
        served |= 1 << best;
        out[best] += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify;

    #[test]
    fn sample_payloads_are_their_class() {
        for class in Class::ALL.into_iter().filter(|c| !c.decided_by_headers()) {
            let p = sample_payload(class);
            let len = u32::try_from(p.len()).unwrap();
            let got = classify(len, p[0], p.get(1).copied().unwrap_or(0));
            if class.is_aggregate() {
                assert_eq!(got.class.parent(), Some(class), "{class:?}: {p:02x?}");
            } else {
                assert_eq!(got.class, class, "{class:?}: {p:02x?}");
            }
            assert!(!got.oversized, "{class:?} sample must not be oversized");
        }
    }

    #[test]
    fn apportion_is_exact() {
        let mut out = [0u64; 5];
        for count in [0, 1, 7, 100, 1000, 119_062] {
            apportion_into(&HONEYPOT_MIX, count, &mut out);
            assert_eq!(out.iter().sum::<u64>(), count, "count {count}");
        }
        apportion_into(&HONEYPOT_MIX, 1000, &mut out);
        assert_eq!(out, [828, 140, 25, 4, 3]);
        apportion_into(&HONEYPOT_MIX, 7, &mut out);
        assert_eq!(out, [6, 1, 0, 0, 0]);
    }
}
