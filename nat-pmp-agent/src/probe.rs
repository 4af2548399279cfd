//! Sending NAT-PMP/PCP probes: sample payloads for every class, the scan mix
//! a honeypot saw, and a bounded sender that also listens for answers.
//!
//! Operators use `nat-pmp-agent probe` to check from outside whether a
//! gateway answers NAT-PMP on its WAN side and whether the filter stops it;
//! the demo and the end-to-end tests use it to send known traffic.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use nat_pmp_ebpf_common::{classify, Class};

/// Most datagrams one probe run may send.
pub const MAX_COUNT: u64 = 1_000_000;

/// A payload of exactly `class`, as a scanner or a gateway would send it.
pub fn sample_payload(class: Class) -> Vec<u8> {
    match class {
        // RFC 6886 §3.2: version 0, opcode 0.
        Class::NatpmpExternalAddressRequest
        | Class::FragmentNonfirst
        | Class::Ipv6ExtChainTooLong => vec![0, 0],
        // RFC 6886 §3.3: reserved, internal port 5000, suggested external
        // port 5000, lifetime 7200 s.
        Class::NatpmpMapUdpRequest => vec![0, 1, 0, 0, 0x13, 0x88, 0x13, 0x88, 0, 0, 0x1c, 0x20],
        Class::NatpmpMapTcpRequest => vec![0, 2, 0, 0, 0x13, 0x88, 0x13, 0x88, 0, 0, 0x1c, 0x20],
        // RFC 6886 §3.2: result 0, epoch 60, external address 198.18.0.1.
        Class::NatpmpExternalAddressResponse => vec![0, 128, 0, 0, 0, 0, 0, 60, 198, 18, 0, 1],
        // RFC 6886 §3.3: result 0, epoch 60, ports 5000/5000, lifetime 7200.
        Class::NatpmpMapUdpResponse => {
            vec![
                0, 129, 0, 0, 0, 0, 0, 60, 0x13, 0x88, 0x13, 0x88, 0, 0, 0x1c, 0x20,
            ]
        }
        Class::NatpmpMapTcpResponse => {
            vec![
                0, 130, 0, 0, 0, 0, 0, 60, 0x13, 0x88, 0x13, 0x88, 0, 0, 0x1c, 0x20,
            ]
        }
        // Opcode 3 is not defined by RFC 6886 (a gateway answers result 5).
        Class::NatpmpUnsupportedOpcode => vec![0, 3],
        // RFC 6887 §7.1, §14.1: a 24-byte ANNOUNCE request, lifetime 0,
        // client 198.18.0.2 as an IPv4-mapped IPv6 address. `pcp` is the
        // aggregate of all PCP classes; its sample is an ANNOUNCE request.
        // The two header classes cannot be sent from a UDP socket (they
        // come from the headers around the payload): their sample is an
        // opcode-0 request, and `probe --class` refuses them.
        Class::Pcp | Class::PcpAnnounceRequest => pcp_header(0, 24),
        // RFC 6887 §7.2: R bit, result 0, lifetime 0, epoch 60.
        Class::PcpAnnounceResponse => pcp_header(0x80, 24),
        // RFC 6887 §11.1: MAP, 36 bytes after the header: nonce, UDP,
        // internal port 5000, suggested external port 5000, address 0.
        Class::PcpMapRequest => pcp_header(1, 60),
        Class::PcpMapResponse => pcp_header(0x81, 60),
        // RFC 6887 §12.1: PEER, 56 bytes after the header.
        Class::PcpPeerRequest => pcp_header(2, 80),
        Class::PcpPeerResponse => pcp_header(0x82, 80),
        // Opcode 3 is not defined by RFC 6887 (UNSUPP_OPCODE, §7.4).
        Class::PcpUnsupportedOpcode => pcp_header(3, 24),
        Class::PcpMalformedShortHeader => vec![2, 1, 0, 0],
        // A MAP request cut after its 24-byte header.
        Class::PcpMalformedShortOpcode => pcp_header(1, 24),
        Class::PcpMalformedTooLong => pcp_header(0, 1104),
        Class::PcpMalformedNotMultipleOf4 => pcp_header(0, 26),
        // A map request cut after 4 bytes.
        Class::MalformedTruncated => vec![0, 1, 0, 0],
        // Version 1 was never standardised (RFC 6887 §9).
        Class::MalformedVersion => vec![1, 0],
    }
}

/// A PCP message of `len` bytes (at least 24) with `opcode` (R bit
/// included): the common header (RFC 6887 §7.1 request / §7.2 response)
/// for client 198.18.0.2, then the opcode's fields (§11.1 MAP, §12.1 PEER)
/// with a fixed nonce, protocol UDP and ports 5000, zero-padded.
fn pcp_header(opcode: u8, len: usize) -> Vec<u8> {
    let mut p = vec![2, opcode, 0, 0];
    if opcode & 0x80 == 0 {
        // Lifetime 7200 s (0 for ANNOUNCE), client address.
        let lifetime: u32 = if opcode == 0 { 0 } else { 7200 };
        p.extend_from_slice(&lifetime.to_be_bytes());
        p.extend_from_slice(&Ipv4Addr::new(198, 18, 0, 2).to_ipv6_mapped().octets());
    } else {
        // Result 0 (in byte 3), lifetime 7200, epoch 60, 12 reserved bytes.
        p.extend_from_slice(&7200u32.to_be_bytes());
        p.extend_from_slice(&60u32.to_be_bytes());
        p.extend_from_slice(&[0; 12]);
    }
    if opcode & 0x7f == 1 || opcode & 0x7f == 2 {
        p.extend_from_slice(&[0x5a; 12]); // mapping nonce
        p.extend_from_slice(&[17, 0, 0, 0]); // protocol UDP, reserved
        p.extend_from_slice(&[0x13, 0x88, 0x13, 0x88]); // ports 5000
    }
    p.resize(len, 0);
    p
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

/// Exactly how many of `count` datagrams each class gets under `weights`
/// (largest-remainder apportionment: the counts add up to `count`).
pub fn apportion(weights: &[(Class, u64)], count: u64) -> Vec<(Class, u64)> {
    let sum: u64 = weights.iter().map(|w| w.1).sum();
    if sum == 0 {
        return weights.iter().map(|w| (w.0, 0)).collect();
    }
    let mut out: Vec<(Class, u64, u64)> = weights
        .iter()
        .map(|&(c, w)| {
            let exact = u128::from(count) * u128::from(w);
            let sum = u128::from(sum);
            #[expect(
                clippy::cast_possible_truncation,
                reason = "quotient <= count, remainder < sum"
            )]
            let parts = ((exact / sum) as u64, (exact % sum) as u64);
            (c, parts.0, parts.1)
        })
        .collect();
    let given: u64 = out.iter().map(|o| o.1).sum();
    let mut order: Vec<usize> = (0..out.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(out[i].2));
    for &i in order
        .iter()
        .take(usize::try_from(count - given).unwrap_or(usize::MAX))
    {
        out[i].1 += 1;
    }
    out.into_iter().map(|(c, n, _)| (c, n)).collect()
}

/// A send order with exactly `counts[i]` datagrams of each class, spread
/// evenly (smooth weighted round robin), so a short run still looks like the
/// mix.
pub fn schedule(counts: &[(Class, u64)]) -> Vec<Class> {
    let total: u64 = counts.iter().map(|c| c.1).sum();
    let mut current = vec![0i128; counts.len()];
    let mut out = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    for _ in 0..total {
        for (cur, &(_, w)) in current.iter_mut().zip(counts) {
            *cur += i128::from(w);
        }
        let best = (0..counts.len())
            .max_by_key(|&i| (current[i], std::cmp::Reverse(i)))
            .unwrap_or(0);
        current[best] -= i128::from(total);
        out.push(counts[best].0);
    }
    out
}

/// What a probe run sent and heard back.
#[derive(Debug, Default)]
pub struct ProbeResult {
    pub sent: BTreeMap<Class, u64>,
    /// Answers from the target's port, by their class.
    pub answers: BTreeMap<Class, u64>,
}

/// Sends `order` to `target` at no more than `rate` datagrams per second,
/// then listens for answers for `wait`.
pub fn run(target: SocketAddr, order: &[Class], rate: u32, wait: Duration) -> Result<ProbeResult> {
    if order.len() as u64 > MAX_COUNT {
        bail!(
            "refusing to send {} datagrams: at most {MAX_COUNT} per run",
            order.len()
        );
    }
    if rate == 0 {
        bail!("--rate must be at least 1 datagram per second");
    }
    let bind: SocketAddr = match target.ip() {
        IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let sock = UdpSocket::bind(bind).with_context(|| format!("binding a UDP socket on {bind}"))?;
    sock.set_read_timeout(Some(Duration::from_millis(20)))
        .context("setting the socket's read timeout")?;
    let mut result = ProbeResult::default();
    let gap = Duration::from_secs_f64(1.0 / f64::from(rate));
    let start = Instant::now();
    let mut buf = [0u8; 1500];
    for (i, &class) in order.iter().enumerate() {
        let due = start + gap * u32::try_from(i).unwrap_or(u32::MAX);
        while let Some(left) = due.checked_duration_since(Instant::now()) {
            if left > Duration::from_millis(2) {
                drain(&sock, target, &mut buf, &mut result);
            } else {
                std::thread::sleep(left);
            }
        }
        sock.send_to(&sample_payload(class), target)
            .with_context(|| format!("sending a {} datagram to {target}", class.name()))?;
        *result.sent.entry(class).or_default() += 1;
    }
    let until = Instant::now() + wait;
    while Instant::now() < until {
        drain(&sock, target, &mut buf, &mut result);
    }
    Ok(result)
}

/// Reads every answer waiting (or one read timeout's worth) into `result`.
fn drain(sock: &UdpSocket, target: SocketAddr, buf: &mut [u8], result: &mut ProbeResult) {
    while let Ok((n, from)) = sock.recv_from(buf) {
        if from.ip() != target.ip() || from.port() != target.port() {
            continue;
        }
        let (version, opcode) = (
            buf.first().copied().unwrap_or(0),
            buf.get(1).copied().unwrap_or(0),
        );
        let class = classify(u32::try_from(n).unwrap_or(u32::MAX), version, opcode).class;
        *result.answers.entry(class).or_default() += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_payloads_are_their_class() {
        for class in Class::ALL.into_iter().filter(|c| !c.decided_by_headers()) {
            let p = sample_payload(class);
            let got = classify(
                u32::try_from(p.len()).unwrap(),
                p[0],
                p.get(1).copied().unwrap_or(0),
            );
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
        for count in [0, 1, 7, 100, 1000, 119_062] {
            let counts = apportion(&HONEYPOT_MIX, count);
            assert_eq!(counts.iter().map(|c| c.1).sum::<u64>(), count);
        }
        let counts = apportion(&HONEYPOT_MIX, 1000);
        assert_eq!(counts[0], (Class::NatpmpExternalAddressRequest, 828));
        assert_eq!(counts[1], (Class::NatpmpMapUdpRequest, 140));
    }

    #[test]
    fn schedule_keeps_counts_and_spreads() {
        let counts = apportion(&HONEYPOT_MIX, 1000);
        let order = schedule(&counts);
        assert_eq!(order.len(), 1000);
        for (class, n) in &counts {
            assert_eq!(order.iter().filter(|c| *c == class).count() as u64, *n);
        }
        // The first 10 already contain a map request: the mix is spread.
        assert!(order[..10].contains(&Class::NatpmpMapUdpRequest));
    }
}
