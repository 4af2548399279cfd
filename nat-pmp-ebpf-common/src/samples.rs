//! One sample payload per class, and the scan mix a honeypot recorded.
//!
//! Contract: [`sample_payload`] returns, for every [`Class`], a payload that
//! [`crate::classify`] puts in exactly that class and does not call
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
// RFC 6887 §7.1: a 24-byte ANNOUNCE request header, lifetime 0, client
// 198.18.0.2 as an IPv4-mapped IPv6 address.
const PCP_ANNOUNCE: [u8; 24] = [
    2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 198, 18, 0, 2,
];
// A map request cut after 4 bytes.
const TRUNCATED: [u8; 4] = [0, 1, 0, 0];
// Version 1 was never standardised (RFC 6887 §9).
const BAD_VERSION: [u8; 2] = [1, 0];

/// A payload of exactly `class`, as a scanner or a gateway would send it.
pub const fn sample_payload(class: Class) -> &'static [u8] {
    match class {
        Class::NatpmpExternalAddressRequest => &EXTERNAL_ADDRESS_REQUEST,
        Class::NatpmpMapUdpRequest => &MAP_UDP_REQUEST,
        Class::NatpmpMapTcpRequest => &MAP_TCP_REQUEST,
        Class::NatpmpExternalAddressResponse => &EXTERNAL_ADDRESS_RESPONSE,
        Class::NatpmpMapUdpResponse => &MAP_UDP_RESPONSE,
        Class::NatpmpMapTcpResponse => &MAP_TCP_RESPONSE,
        Class::NatpmpUnsupportedOpcode => &UNSUPPORTED_OPCODE,
        Class::Pcp => &PCP_ANNOUNCE,
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
        for class in Class::ALL {
            let p = sample_payload(class);
            let len = u32::try_from(p.len()).unwrap();
            let got = classify(len, p[0], p.get(1).copied().unwrap_or(0));
            assert_eq!(got.class, class, "{class:?}: {p:02x?}");
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
