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
use nat_pmp_ebpf_common::{classify, samples, Class};

/// Most datagrams one probe run may send.
pub const MAX_COUNT: u64 = 1_000_000;

/// A payload of exactly `class`, as a scanner or a gateway would send it
/// (the shared definition in [`nat_pmp_ebpf_common::samples`]).
pub fn sample_payload(class: Class) -> Vec<u8> {
    samples::sample_payload(class).to_vec()
}

pub use nat_pmp_ebpf_common::samples::HONEYPOT_MIX;

/// Exactly how many of `count` datagrams each class gets under `weights`
/// (largest-remainder apportionment: the counts add up to `count`).
pub fn apportion(weights: &[(Class, u64)], count: u64) -> Vec<(Class, u64)> {
    let mut counts = vec![0; weights.len()];
    samples::apportion_into(weights, count, &mut counts);
    weights.iter().map(|w| w.0).zip(counts).collect()
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
