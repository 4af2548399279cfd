//! Writes pcap and pcapng captures of a NAT-PMP scan with a known
//! composition, for the replay tests and for `cargo xtask gen-capture`.
//!
//! Contract: [`write`] streams `spec.count` NAT-PMP datagrams in the
//! honeypot's mix ([`HONEYPOT_MIX`]: opcode 0 82.8%, opcode 1 14.0%, opcode 2
//! 2.5%, malformed 0.7%, apportioned exactly) from a handful of scanners in
//! `198.18.0.0/15` and `2001:2::/48` (the benchmarking ranges, RFC 2544 and
//! RFC 5180), spread over `spec.hours` hours, interleaved with background
//! traffic (DNS, TCP SYNs, ARP) that a NAT-PMP filter must not count. It
//! returns the [`Composition`] it wrote: what a correct replay must report,
//! to the packet and byte. The same seed gives the same file.
//!
//! The depended-on crates are chosen so that xtask can use this before the
//! eBPF toolchain exists: nothing here builds the XDP program.

use std::{
    collections::BTreeMap,
    fs::File,
    io::{BufWriter, Write},
    net::IpAddr,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use crate::{
    frames::{ethernet_between, ipv4_sent, ipv6_sent, padded, tcp, udp, IPPROTO_TCP, TCP_SYN},
    headers::{ETH_P_IP, ETH_P_IPV6, IPPROTO_UDP},
    samples::{apportion_into, sample_payload, HONEYPOT_MIX},
    Class, NATPMP_PORT,
};
use anyhow::{Context as _, Result};
use pcap_file::{
    pcap::{PcapHeader, PcapPacket, PcapWriter},
    pcapng::{
        blocks::{
            enhanced_packet::EnhancedPacketBlock,
            interface_description::{InterfaceDescriptionBlock, InterfaceDescriptionOption},
        },
        PcapNgWriter,
    },
    DataLink, Endianness, TsResolution,
};
use rand_chacha::ChaCha8Rng;
use rand_core::{Rng as _, SeedableRng as _};
use serde::{Deserialize, Serialize};

/// The capture's file format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// libpcap's classic format, microsecond timestamps.
    Pcap,
    /// pcapng, one interface, nanosecond timestamps (`if_tsresol` 9).
    Pcapng,
}

/// The capture's link type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Link {
    /// `LINKTYPE_ETHERNET` (1), short frames padded to 60 bytes as on the wire.
    Ethernet,
    /// `LINKTYPE_RAW` (101): frames start with the IP header.
    Raw,
}

impl Link {
    /// The `LINKTYPE_` value written into the file.
    pub const fn linktype(self) -> u32 {
        match self {
            Link::Ethernet => 1,
            Link::Raw => 101,
        }
    }
}

/// What to write.
#[derive(Clone, Copy, Debug)]
pub struct Spec {
    /// NAT-PMP datagrams (background traffic comes on top).
    pub count: u64,
    pub seed: u64,
    pub format: Format,
    pub link: Link,
    /// The capture spans this many hours (at least 1).
    pub hours: u32,
    /// Background frames per 100 NAT-PMP datagrams.
    pub background_percent: u64,
    /// Time of the first frame, seconds since the Unix epoch.
    pub start_unix: u64,
}

impl Default for Spec {
    fn default() -> Self {
        Spec {
            count: 10_000,
            seed: 1,
            format: Format::Pcap,
            link: Link::Ethernet,
            hours: 6,
            background_percent: 20,
            // 2025-06-01T00:00:00Z.
            start_unix: 1_748_736_000,
        }
    }
}

/// Per-class totals of a composition.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassTotals {
    pub packets: u64,
    /// Frame bytes as captured (link-layer header included).
    pub bytes: u64,
    /// Datagrams longer than their opcode needs.
    pub oversized: u64,
}

/// Per-source totals of a composition.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceTotals {
    pub packets: u64,
    pub bytes: u64,
    /// NAT-PMP datagrams per hour, keyed by the hour's start (RFC 3339, UTC).
    pub per_hour: BTreeMap<String, u64>,
}

/// What a capture holds: what a correct replay reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Composition {
    pub format: Format,
    pub link: Link,
    pub seed: u64,
    /// Every frame in the file.
    pub frames: u64,
    /// Frames that are not NAT-PMP/PCP (must not be counted).
    pub background_frames: u64,
    /// NAT-PMP datagrams per class name (classes that never occur are absent).
    pub counters: BTreeMap<String, ClassTotals>,
    /// NAT-PMP datagrams per source address.
    pub sources: BTreeMap<String, SourceTotals>,
    /// First and last frame times (RFC 3339, UTC).
    pub first: String,
    pub last: String,
}

impl Composition {
    /// The totals of `class` (zero when it does not occur).
    pub fn class(&self, class: Class) -> ClassTotals {
        self.counters.get(class.name()).copied().unwrap_or_default()
    }

    /// NAT-PMP datagrams in all.
    pub fn natpmp_packets(&self) -> u64 {
        self.counters.values().map(|c| c.packets).sum()
    }
}

/// The RFC 3339 start of the UTC hour holding `t`.
pub fn hour_key(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    humantime::format_rfc3339_seconds(
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs / 3600 * 3600),
    )
    .to_string()
}

/// The gateway the scan targets.
const GATEWAY_V4: [u8; 4] = [198, 18, 0, 1];
const GATEWAY_V6: [u8; 16] = [0x20, 0x01, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const GATEWAY_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x00, 0x00, 0x01];
const UPSTREAM_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x00, 0x00, 0xfe];

/// One scanner: its address, weight and the hours it is active.
struct Scanner {
    addr: IpAddr,
    weight: u64,
    from_hour: u64,
    to_hour: u64,
}

fn scanners(rng: &mut ChaCha8Rng, hours: u64) -> Vec<Scanner> {
    let mut addrs: Vec<IpAddr> = (0..10u8)
        .map(|i| IpAddr::from([198, 18 + (i % 2), 10 + i * 7, 2 + i * 13]))
        .collect();
    addrs.extend((0..2u8).map(|i| {
        IpAddr::from([
            0x20,
            0x01,
            0,
            2,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0xab,
            0x10 + i,
        ])
    }));
    addrs
        .into_iter()
        .enumerate()
        .map(|(k, addr)| {
            // Zipf-like weights: a few scanners send most, as on the
            // honeypot. The heaviest scans the whole time; the others come
            // and go.
            let (from_hour, to_hour) = if k == 0 {
                (0, hours)
            } else {
                let from = below(rng, hours);
                (from, from + 1 + below(rng, hours - from))
            };
            Scanner {
                addr,
                weight: 1200 / (k as u64 + 1),
                from_hour,
                to_hour,
            }
        })
        .collect()
}

/// A uniform number in `0..n` (`n` > 0). Multiply-shift: the bias is below
/// n / 2^64, irrelevant for test traffic.
fn below(rng: &mut ChaCha8Rng, n: u64) -> u64 {
    let high = (u128::from(rng.next_u64()) * u128::from(n)) >> 64;
    u64::try_from(high).unwrap_or(0)
}

/// Builds the IP packet (no link layer) of a UDP datagram or TCP SYN.
fn ip_packet(src: IpAddr, dst_v4: [u8; 4], dst_v6: [u8; 16], l4: &L4<'_>) -> Vec<u8> {
    let (proto, segment) = match *l4 {
        L4::Udp(sport, dport, payload) => (IPPROTO_UDP, udp(sport, dport, payload)),
        L4::TcpSyn(sport, dport) => (
            IPPROTO_TCP,
            tcp(sport, dport, 0x1234_5678, TCP_SYN, 64_240, &[]),
        ),
    };
    match src {
        IpAddr::V4(s) => ipv4_sent(s.octets(), dst_v4, proto, &segment),
        IpAddr::V6(s) => ipv6_sent(s.octets(), dst_v6, proto, &segment),
    }
}

enum L4<'a> {
    Udp(u16, u16, &'a [u8]),
    TcpSyn(u16, u16),
}

/// Puts an Ethernet header in front of an IP packet and pads the frame to
/// the 60-byte minimum (FCS excluded), as a capture on a real NIC shows it.
fn ethernet(ip: &[u8]) -> Vec<u8> {
    let ether_type = if ip.first().is_some_and(|b| b >> 4 == 6) {
        ETH_P_IPV6
    } else {
        ETH_P_IP
    };
    padded(ethernet_between(
        UPSTREAM_MAC,
        GATEWAY_MAC,
        &[],
        ether_type,
        ip,
    ))
}

/// An ARP request for the gateway (RFC 826), broadcast.
fn arp_request() -> Vec<u8> {
    // Ethernet, IPv4, 6/4-byte addresses, request.
    let mut arp = [0, 1, 8, 0, 6, 4, 0, 1].to_vec();
    arp.extend_from_slice(&UPSTREAM_MAC);
    arp.extend_from_slice(&[198, 18, 0, 254]);
    arp.extend_from_slice(&[0; 6]);
    arp.extend_from_slice(&GATEWAY_V4);
    padded(ethernet_between(UPSTREAM_MAC, [0xff; 6], &[], 0x0806, &arp))
}

/// Where frames go: pcap or pcapng.
enum Sink<W: Write> {
    Pcap(PcapWriter<W>),
    Pcapng(PcapNgWriter<W>),
}

impl<W: Write> Sink<W> {
    fn new(out: W, format: Format, link: Link) -> Result<Self> {
        let datalink = DataLink::from(link.linktype());
        Ok(match format {
            Format::Pcap => Sink::Pcap(
                PcapWriter::with_header(
                    out,
                    PcapHeader {
                        datalink,
                        snaplen: 65_535,
                        ts_resolution: TsResolution::MicroSecond,
                        endianness: Endianness::Little,
                        ..PcapHeader::default()
                    },
                )
                .context("writing the pcap file header")?,
            ),
            Format::Pcapng => {
                let mut w = PcapNgWriter::with_endianness(out, Endianness::Little)
                    .context("writing the pcapng section header")?;
                // pcap-file keeps EPB timestamps as a count of units that it
                // stores in a Duration's nanoseconds; say they are ns.
                w.write_pcapng_block(InterfaceDescriptionBlock {
                    linktype: datalink,
                    snaplen: 0,
                    options: vec![
                        InterfaceDescriptionOption::IfName("capgen0".into()),
                        InterfaceDescriptionOption::IfTsResol(9),
                    ],
                })
                .context("writing the pcapng interface description")?;
                Sink::Pcapng(w)
            }
        })
    }

    fn frame(&mut self, t: Duration, data: &[u8]) -> Result<()> {
        let len = u32::try_from(data.len()).context("frame longer than 4 GiB")?;
        match self {
            Sink::Pcap(w) => w
                .write_packet(&PcapPacket::new(t, len, data))
                .map(drop)
                .context("writing a pcap packet record"),
            Sink::Pcapng(w) => w
                .write_pcapng_block(EnhancedPacketBlock {
                    interface_id: 0,
                    timestamp: t,
                    original_len: len,
                    data: data.into(),
                    options: vec![],
                })
                .map(drop)
                .context("writing a pcapng enhanced packet block"),
        }
    }

    fn finish(self) -> W {
        match self {
            Sink::Pcap(w) => w.into_writer(),
            Sink::Pcapng(w) => w.into_inner(),
        }
    }
}

/// Picks the scanner of a frame in `hour`: by weight among those active.
fn pick_source(scanners: &[Scanner], hour: u64, rng: &mut ChaCha8Rng) -> IpAddr {
    let active = || {
        scanners
            .iter()
            .filter(move |s| (s.from_hour..s.to_hour).contains(&hour))
    };
    let mut pick = below(rng, active().map(|s| s.weight).sum::<u64>().max(1));
    active()
        .find(|s| {
            let hit = pick < s.weight;
            pick = pick.saturating_sub(s.weight);
            hit
        })
        .map_or(scanners[0].addr, |s| s.addr)
}

/// Draws one of the datagrams still owed (`left[i]` of `HONEYPOT_MIX[i]`),
/// without replacement: the counts stay exact, the order is random.
fn pick_class(left: &mut [u64; HONEYPOT_MIX.len()], rng: &mut ChaCha8Rng) -> Class {
    let mut draw = below(rng, left.iter().sum::<u64>().max(1));
    let idx = left
        .iter()
        .position(|&n| {
            let hit = draw < n;
            draw = draw.saturating_sub(n);
            hit
        })
        .unwrap_or(0);
    left[idx] = left[idx].saturating_sub(1);
    HONEYPOT_MIX[idx].0
}

fn framed(link: Link, ip: Vec<u8>) -> Vec<u8> {
    match link {
        Link::Ethernet => ethernet(&ip),
        Link::Raw => ip,
    }
}

/// Writes the capture `spec` describes to `out` and returns what it holds.
pub fn write<W: Write>(spec: &Spec, out: W) -> Result<(Composition, W)> {
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
    let hours = u64::from(spec.hours.max(1));
    let scanners = scanners(&mut rng, hours);
    let mut left = [0u64; HONEYPOT_MIX.len()];
    apportion_into(&HONEYPOT_MIX, spec.count, &mut left);
    let mut natpmp_left = spec.count;
    let mut background_left = spec.count * spec.background_percent / 100;
    let frames = natpmp_left + background_left;
    // Frames are spread evenly with jitter inside each slot (times never go
    // back), in whole microseconds so that pcap's timestamps are exact.
    let step_us = (hours * 3_600_000_000 / frames.max(1)).max(1);
    let mut sink = Sink::new(out, spec.format, spec.link)?;
    let mut comp = Composition {
        format: spec.format,
        link: spec.link,
        seed: spec.seed,
        frames,
        background_frames: background_left,
        counters: BTreeMap::new(),
        sources: BTreeMap::new(),
        first: String::new(),
        last: String::new(),
    };
    for i in 0..frames {
        let offset_us = i * step_us + below(&mut rng, step_us);
        let time = Duration::from_secs(spec.start_unix) + Duration::from_micros(offset_us);
        let src = pick_source(&scanners, offset_us / 3_600_000_000, &mut rng);
        let sport = 32_768 + u16::try_from(below(&mut rng, 28_000)).unwrap_or(0);
        let frame = if below(&mut rng, natpmp_left + background_left) < natpmp_left {
            natpmp_left -= 1;
            let class = pick_class(&mut left, &mut rng);
            // A quarter of the opcode-0 probes carry 4 bytes, as real
            // scanners' do: same class, counted oversized too. Oversized is
            // what the generator chose here, not what `classify` (the code a
            // replay test checks) says of the payload; the samples are each
            // exactly as long as their opcode needs.
            let (payload, oversized): (&[u8], bool) =
                if class == Class::NatpmpExternalAddressRequest && below(&mut rng, 4) == 0 {
                    (&[0, 0, 0, 0], true)
                } else {
                    (sample_payload(class), false)
                };
            let ip = ip_packet(
                src,
                GATEWAY_V4,
                GATEWAY_V6,
                &L4::Udp(sport, NATPMP_PORT, payload),
            );
            let frame = framed(spec.link, ip);
            comp.record(class, oversized, src, time, frame.len() as u64);
            frame
        } else {
            background_left -= 1;
            match below(&mut rng, 3) {
                1 => framed(
                    spec.link,
                    ip_packet(src, GATEWAY_V4, GATEWAY_V6, &L4::TcpSyn(sport, 443)),
                ),
                // Raw-IP links carry no ARP: a DNS query there.
                2 if spec.link == Link::Ethernet => arp_request(),
                _ => framed(
                    spec.link,
                    ip_packet(
                        src,
                        [198, 18, 0, 53],
                        GATEWAY_V6,
                        &L4::Udp(sport, 53, &DNS_QUERY),
                    ),
                ),
            }
        };
        sink.frame(time, &frame)?;
        finish_times(&mut comp, time);
    }
    let mut out = sink.finish();
    out.flush().context("flushing the capture")?;
    Ok((comp, out))
}

impl Composition {
    fn record(&mut self, class: Class, oversized: bool, src: IpAddr, time: Duration, bytes: u64) {
        let e = self.counters.entry(class.name().to_owned()).or_default();
        e.packets += 1;
        e.bytes += bytes;
        e.oversized += u64::from(oversized);
        let s = self.sources.entry(src.to_string()).or_default();
        s.packets += 1;
        s.bytes += bytes;
        *s.per_hour
            .entry(hour_key(SystemTime::UNIX_EPOCH + time))
            .or_default() += 1;
    }
}

fn finish_times(comp: &mut Composition, t: Duration) {
    let s = humantime::format_rfc3339_micros(SystemTime::UNIX_EPOCH + t).to_string();
    if comp.first.is_empty() {
        comp.first.clone_from(&s);
    }
    comp.last = s;
}

/// A DNS query for `example.com. A` (RFC 1035 §4.1), background traffic.
const DNS_QUERY: [u8; 29] = [
    0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 7, b'e', b'x', b'a', b'm', b'p', b'l', b'e', 3, b'c',
    b'o', b'm', 0, 0, 1, 0, 1,
];

/// Where [`write_file`] puts the composition of `capture`: `capture.json`.
pub fn composition_path(capture: &Path) -> PathBuf {
    let mut p = capture.as_os_str().to_owned();
    p.push(".json");
    PathBuf::from(p)
}

/// Writes the capture to `path` and its composition next to it (see
/// [`composition_path`]).
pub fn write_file(spec: &Spec, path: &Path) -> Result<Composition> {
    let file = File::create(path)
        .with_context(|| format!("creating {}: is the directory writable?", path.display()))?;
    let (comp, _) = write(spec, BufWriter::new(file))
        .with_context(|| format!("writing the capture {}", path.display()))?;
    let json_path = composition_path(path);
    let json = serde_json::to_string_pretty(&comp).context("serialising the composition")?;
    std::fs::write(&json_path, json + "\n")
        .with_context(|| format!("writing {}", json_path.display()))?;
    Ok(comp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composition_is_exact_and_reproducible() {
        let spec = Spec {
            count: 1000,
            ..Spec::default()
        };
        let (a, bytes_a) = write(&spec, Vec::new()).unwrap();
        let (b, bytes_b) = write(&spec, Vec::new()).unwrap();
        assert_eq!(a, b);
        assert_eq!(bytes_a, bytes_b, "same seed, same file");
        assert_eq!(a.natpmp_packets(), 1000);
        assert_eq!(a.class(Class::NatpmpExternalAddressRequest).packets, 828);
        assert_eq!(a.class(Class::NatpmpMapUdpRequest).packets, 140);
        assert_eq!(a.class(Class::NatpmpMapTcpRequest).packets, 25);
        assert_eq!(a.class(Class::MalformedTruncated).packets, 4);
        assert_eq!(a.class(Class::MalformedVersion).packets, 3);
        assert_eq!(a.background_frames, 200);
        assert!(a.class(Class::NatpmpExternalAddressRequest).oversized > 100);
        assert!(
            a.sources.len() >= 5,
            "several scanners: {:?}",
            a.sources.keys()
        );
        let per_hour: u64 = a.sources.values().flat_map(|s| s.per_hour.values()).sum();
        assert_eq!(per_hour, 1000);
    }
}
