//! Offline analysis: `nat-pmp-agent replay FILE...` runs every frame of
//! pcap/pcapng captures through the compiled XDP program with
//! `BPF_PROG_TEST_RUN` and reports what the router would have counted.
//!
//! Contract:
//! - The per-class totals in the report are the kernel's own counters
//!   ([`Filter::snapshot`] after the last frame), so they cannot differ from
//!   what the live filter counts on the same traffic.
//! - The host decides each frame too, with the very code the program runs
//!   (the host reference of `nat-pmp-ebpf-common`: the shared frame walk and
//!   decision over a byte slice), to attribute it to a source (the walk's:
//!   the innermost IP source, as the live program records it) and an hour.
//!   The program runs traced, so each frame's action and sender are read
//!   back from the kernel. After the run the host's per-class totals must
//!   equal the kernel's, and every frame's XDP action and sender the host's;
//!   if not, the replay fails loudly ([`Analysis::disagreement`]).
//! - Ethernet frames are given to the program as they are; raw-IP frames
//!   (and Linux cooked captures, without their cooked header) with the
//!   program's link type set to raw IP, as on a PPP, tun or WireGuard
//!   interface. Bytes are what the program sees.
//! - Files are streamed frame by frame; memory grows with the number of
//!   sources and hours, never with the capture's size.
//! - A missing, truncated or corrupt file, or an unsupported link type,
//!   stops the replay with an error naming the file and the frame number;
//!   everything read before it stays in the [`Analysis`] and is reported.

pub mod report;

use std::{
    cell::Cell,
    collections::{BTreeMap, HashMap},
    fs::File,
    io::{self, Cursor, Read},
    net::IpAddr,
    path::{Path, PathBuf},
    rc::Rc,
    time::{Duration, SystemTime},
};

use anyhow::{anyhow, bail, Context as _, Result};
use nat_pmp_ebpf_common::{
    headers::{EthHdr, ETH_P_IP, ETH_P_IPV6},
    reference::Reference,
    Class, Config, Link, Mode, XDP_DROP,
};
use pcap_file::{
    pcap::PcapReader,
    pcapng::{blocks::interface_description::InterfaceDescriptionOption, Block, PcapNgReader},
    PcapError,
};

use crate::{
    bpf::Filter,
    stats::{counters::Snapshot, sources::addr_of},
};

/// Bytes of a frame that `BPF_PROG_TEST_RUN` puts in the XDP buffer's linear
/// part on x86-64 (4 KiB page − 256 bytes `XDP_PACKET_HEADROOM` − 320 bytes
/// `skb_shared_info`, `net/bpf/test_run.c`); the rest goes into fragments that
/// a program without `xdp.frags` never sees, so it classifies and counts only
/// this much (measured: a 9042-byte frame counts 3520 bytes). The host view
/// mirrors that; the end-of-run check would catch a kernel that differs.
pub const TEST_RUN_LINEAR_MAX: usize = 4096 - 256 - 320;

/// How a link type's frames are turned into the Ethernet frames the XDP
/// program parses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkKind {
    /// `LINKTYPE_ETHERNET` (1): as is.
    Ethernet,
    /// `LINKTYPE_RAW` (101), `LINKTYPE_IPV4` (228), `LINKTYPE_IPV6` (229) and
    /// the historical `DLT_RAW` values 12 and 14: IP from the first byte.
    RawIp,
    /// `LINKTYPE_LINUX_SLL` (113): a 16-byte cooked header, protocol at 14.
    LinuxSll,
    /// `LINKTYPE_LINUX_SLL2` (276): a 20-byte cooked header, protocol at 0.
    LinuxSll2,
}

impl LinkKind {
    /// The kind for a `LINKTYPE_` value, or `None` when replay cannot use it.
    pub const fn from_linktype(linktype: u32) -> Option<Self> {
        match linktype {
            1 => Some(LinkKind::Ethernet),
            12 | 14 | 101 | 228 | 229 => Some(LinkKind::RawIp),
            113 => Some(LinkKind::LinuxSll),
            276 => Some(LinkKind::LinuxSll2),
            _ => None,
        }
    }

    /// Stable name used in reports.
    pub const fn name(self) -> &'static str {
        match self {
            LinkKind::Ethernet => "ethernet",
            LinkKind::RawIp => "raw_ip",
            LinkKind::LinuxSll => "linux_sll",
            LinkKind::LinuxSll2 => "linux_sll2",
        }
    }
}

/// The link type and the bytes the XDP program is given for a captured
/// frame: Ethernet and raw IP as they are; a Linux cooked capture without
/// its cooked header, as raw IP when it carries IPv4 or IPv6 (`None`
/// otherwise: not IP, passed uncounted like any non-IP frame).
fn program_input(kind: LinkKind, data: &[u8]) -> Option<(Link, &[u8])> {
    let cooked = |proto_at: usize, header: usize| {
        let proto = data.get(proto_at..proto_at + 2)?;
        let proto = u16::from_be_bytes([proto[0], proto[1]]);
        (proto == ETH_P_IP || proto == ETH_P_IPV6).then_some(())?;
        Some((Link::RawIp, data.get(header..)?))
    };
    match kind {
        LinkKind::Ethernet => Some((Link::Ethernet, data)),
        LinkKind::RawIp => Some((Link::RawIp, data)),
        // SLL: protocol at 14, 16-byte header; SLL2: protocol at 0, 20 bytes.
        LinkKind::LinuxSll => cooked(14, 16),
        LinkKind::LinuxSll2 => cooked(0, 20),
    }
}

/// One capture file as read.
#[derive(Clone, Debug)]
pub struct FileInfo {
    pub path: PathBuf,
    /// `pcap` or `pcapng`; empty when the file could not be opened.
    pub format: &'static str,
    /// `LINKTYPE_` values seen (one for pcap; one per interface for pcapng).
    pub link_types: Vec<u32>,
    /// Frames read from this file.
    pub frames: u64,
}

/// What one source sent (NAT-PMP/PCP datagrams the program counted).
#[derive(Clone, Debug, Default)]
pub struct Source {
    pub packets: u64,
    /// Bytes as captured.
    pub bytes: u64,
    /// Packets per class, by [`Class::index`].
    pub classes: [u64; Class::COUNT],
    pub first_seen: Option<SystemTime>,
    pub last_seen: Option<SystemTime>,
    /// Packets per hour: hours since the Unix epoch -> packets.
    pub per_hour: BTreeMap<u64, u64>,
}

/// Everything a replay learned; reports are views of it.
#[derive(Debug)]
pub struct Analysis {
    pub mode: Mode,
    pub files: Vec<FileInfo>,
    /// Frames read, in all files.
    pub frames: u64,
    /// Frames the program counted as NAT-PMP/PCP.
    pub natpmp_frames: u64,
    /// Frames the program passed uncounted (not UDP to/from port 5351).
    pub other_frames: u64,
    /// Frames shorter than an Ethernet header: `BPF_PROG_TEST_RUN` refuses
    /// them (EINVAL) and no NIC delivers them; not NAT-PMP.
    pub skipped_short: u64,
    /// Frames the kernel refused to run for another reason, with the first
    /// reason.
    pub refused: u64,
    pub refused_reason: Option<String>,
    /// Frames the capture's snap length cut short: the program saw less than
    /// the wire carried (a cut NAT-PMP datagram counts as malformed).
    pub cut_by_snaplen: u64,
    /// Frames longer than [`TEST_RUN_LINEAR_MAX`]: the program saw (and
    /// counted) only their first bytes.
    pub jumbo: u64,
    /// Frames whose XDP action differed from the host's expectation.
    pub action_mismatches: u64,
    /// Counted frames whose sender the kernel read differently.
    pub source_mismatches: u64,
    /// The kernel's counters after the last frame.
    pub kernel: Snapshot,
    /// The host's counters for the same frames, as the kernel saw them.
    pub host: Snapshot,
    /// The host reference, fed the same frames in the same order.
    reference: Reference,
    pub sources: HashMap<IpAddr, Source>,
    pub first: Option<SystemTime>,
    pub last: Option<SystemTime>,
    /// Why the replay stopped early, naming the file and frame.
    pub error: Option<String>,
}

impl Analysis {
    fn new(mode: Mode) -> Self {
        Analysis {
            mode,
            files: Vec::new(),
            frames: 0,
            natpmp_frames: 0,
            other_frames: 0,
            skipped_short: 0,
            refused: 0,
            refused_reason: None,
            cut_by_snaplen: 0,
            action_mismatches: 0,
            source_mismatches: 0,
            jumbo: 0,
            kernel: Snapshot::default(),
            host: Snapshot::default(),
            reference: Reference::new(Config::new(mode)),
            sources: HashMap::new(),
            first: None,
            last: None,
            error: None,
        }
    }

    /// The per-class counters to report: the kernel's.
    pub fn counters(&self) -> Snapshot {
        self.kernel
    }

    /// `Some(description)` when the host's classification of the frames
    /// differs from the kernel's counters: the two classifiers disagree.
    pub fn disagreement(&self) -> Option<String> {
        let mut diffs = Vec::new();
        for class in Class::ALL {
            let (k, h) = (self.kernel.get(class), self.host.get(class));
            if k != h {
                diffs.push(format!("{}: kernel {k:?}, host {h:?}", class.name()));
            }
        }
        if self.action_mismatches > 0 {
            diffs.push(format!(
                "{} frames got another XDP action than the host expected",
                self.action_mismatches
            ));
        }
        if self.source_mismatches > 0 {
            diffs.push(format!(
                "{} frames were attributed to another sender by the kernel",
                self.source_mismatches
            ));
        }
        (!diffs.is_empty()).then(|| diffs.join("; "))
    }

    /// Sources by packets, most first (ties by address).
    pub fn sources_by_packets(&self) -> Vec<(IpAddr, &Source)> {
        let mut v: Vec<(IpAddr, &Source)> = self.sources.iter().map(|(a, s)| (*a, s)).collect();
        v.sort_by(|a, b| b.1.packets.cmp(&a.1.packets).then(a.0.cmp(&b.0)));
        v
    }

    /// The hours the capture spans (hours since the Unix epoch), first to
    /// last, empty hours included.
    pub fn hours(&self) -> std::ops::Range<u64> {
        let hour = |t: Option<SystemTime>| {
            t.and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                .map(|d| d.as_secs() / 3600)
        };
        match (hour(self.first), hour(self.last)) {
            (Some(a), Some(b)) => a..b + 1,
            _ => 0..0,
        }
    }

    /// Feeds one captured frame through the program and the host reference.
    fn frame(
        &mut self,
        filter: &mut Filter,
        kind: LinkKind,
        time: Option<SystemTime>,
        data: &[u8],
        orig_len: u32,
    ) -> Result<()> {
        self.frames += 1;
        if let Some(t) = time {
            self.first = Some(self.first.map_or(t, |f| f.min(t)));
            self.last = Some(self.last.map_or(t, |l| l.max(t)));
        }
        if (orig_len as usize) > data.len() {
            self.cut_by_snaplen += 1;
        }
        let Some((link, frame)) = program_input(kind, data) else {
            self.other_frames += 1;
            return Ok(());
        };
        if frame.len() < EthHdr::LEN {
            self.skipped_short += 1;
            return Ok(());
        }
        if self.reference.config.link() != link {
            filter.set_link(link)?;
            self.reference.config = self.reference.config.with_link(link);
        }
        if frame.len() > TEST_RUN_LINEAR_MAX {
            self.jumbo += 1;
        }
        let seen = &frame[..frame.len().min(TEST_RUN_LINEAR_MAX)];
        let outcome = self.reference.run(seen);
        let trace = match filter.run_traced(frame) {
            Ok(t) => t,
            Err(e) => {
                self.refused += 1;
                if self.refused_reason.is_none() {
                    self.refused_reason = Some(format!("{e:#}"));
                }
                return Ok(());
            }
        };
        if (trace.action == XDP_DROP) != outcome.drop {
            self.action_mismatches += 1;
        }
        let Some(class) = outcome.class else {
            self.other_frames += 1;
            return Ok(());
        };
        // The sender is the walk's (the innermost IP source, as the live
        // program records it), and the kernel must have seen the same.
        let source = outcome.source();
        if trace.src != source {
            self.source_mismatches += 1;
        }
        self.natpmp_frames += 1;
        let i = class.index() as usize;
        self.host.classes[i].count(&outcome);
        let s = self.sources.entry(addr_of(source)).or_default();
        s.packets += 1;
        s.bytes += outcome.bytes;
        s.classes[i] += 1;
        if let Some(t) = time {
            s.first_seen = Some(s.first_seen.map_or(t, |f| f.min(t)));
            s.last_seen = Some(s.last_seen.map_or(t, |l| l.max(t)));
            if let Ok(d) = t.duration_since(SystemTime::UNIX_EPOCH) {
                *s.per_hour.entry(d.as_secs() / 3600).or_default() += 1;
            }
        }
        Ok(())
    }
}

/// What `replay` was asked to do.
#[derive(Clone, Debug)]
pub struct Options {
    pub files: Vec<PathBuf>,
    pub mode: Mode,
    /// Show a progress bar on stderr.
    pub progress: bool,
}

/// A reader that counts the bytes it hands out (for the progress bar).
struct Counted<R> {
    inner: R,
    count: Rc<Cell<u64>>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.set(self.count.get() + n as u64);
        Ok(n)
    }
}

/// Replays the captures. `Err` only when nothing could start (the program
/// does not load); errors in the files are in [`Analysis::error`], with
/// everything read before them.
pub fn replay(opts: &Options) -> Result<Analysis> {
    let mut filter = Filter::load_traced().context("replay runs the XDP program in the kernel")?;
    filter.set_mode(opts.mode)?;
    let mut analysis = Analysis::new(opts.mode);
    let total_bytes: u64 = opts
        .files
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    let bar = if opts.progress {
        let style = indicatif::ProgressStyle::with_template(
            "{spinner} {msg} [{bar:30}] {bytes}/{total_bytes} ({eta})",
        )
        .map_err(|e| anyhow!("progress bar template: {e}"))?
        .progress_chars("=> ");
        indicatif::ProgressBar::new(total_bytes).with_style(style)
    } else {
        indicatif::ProgressBar::hidden()
    };
    let done_before = Rc::new(Cell::new(0u64));
    for path in &opts.files {
        bar.set_message(path.display().to_string());
        let count = Rc::new(Cell::new(0u64));
        let result = replay_file(&mut filter, path, &mut analysis, &count, &|| {
            bar.set_position(done_before.get() + count.get());
        });
        done_before.set(done_before.get() + count.get());
        if let Err(e) = result {
            analysis.error = Some(format!("{e:#}"));
            break;
        }
    }
    bar.finish_and_clear();
    analysis.kernel = filter.snapshot()?;
    // The kernel's snapshot carries the `pcp` aggregate; so must the host's.
    analysis.host.fill_aggregates();
    Ok(analysis)
}

/// The pcap magic numbers (microsecond and nanosecond, either byte order)
/// and the pcapng Section Header Block type.
const PCAP_MAGICS: [[u8; 4]; 4] = [
    [0xd4, 0xc3, 0xb2, 0xa1],
    [0xa1, 0xb2, 0xc3, 0xd4],
    [0x4d, 0x3c, 0xb2, 0xa1],
    [0xa1, 0xb2, 0x3c, 0x4d],
];
const PCAPNG_MAGIC: [u8; 4] = [0x0a, 0x0d, 0x0d, 0x0a];

fn replay_file(
    filter: &mut Filter,
    path: &Path,
    analysis: &mut Analysis,
    count: &Rc<Cell<u64>>,
    tick: &dyn Fn(),
) -> Result<()> {
    let name = path.display();
    let mut file = File::open(path).with_context(|| {
        format!("opening the capture {name}: check the path and that it is readable")
    })?;
    let mut magic = [0u8; 4];
    file.read_exact(&mut magic).with_context(|| {
        format!("{name}: reading the file header: the file is empty or unreadable")
    })?;
    count.set(4);
    let reader = Counted {
        inner: Cursor::new(magic).chain(file),
        count: Rc::clone(count),
    };
    // Frames already read from this file, for error messages.
    let index = analysis.files.len();
    analysis.files.push(FileInfo {
        path: path.to_owned(),
        format: "",
        link_types: Vec::new(),
        frames: 0,
    });
    if PCAP_MAGICS.contains(&magic) {
        read_pcap(filter, path, reader, analysis, index, tick)?;
    } else if magic == PCAPNG_MAGIC {
        read_pcapng(filter, path, reader, analysis, index, tick)?;
    } else {
        bail!(
            "{name}: not a pcap or pcapng file (it starts with {magic:02x?}); convert it with \
             `editcap -F pcapng {name} out.pcapng` if Wireshark reads it"
        );
    }
    tick();
    Ok(())
}

/// What a reading error means, for frame `frames + 1` of `path`.
fn frame_err(path: &Path, frames: u64, e: PcapError) -> anyhow::Error {
    let name = path.display();
    let n = frames + 1;
    match e {
        PcapError::IoError(io) if io.kind() == io::ErrorKind::UnexpectedEof => anyhow!(
            "{name}: frame {n}: the file ends inside this frame: the capture is truncated \
             (the report covers the {frames} frames before it)"
        ),
        other => anyhow!(other).context(format!(
            "{name}: frame {n}: the capture is corrupt (the report covers the {frames} \
             frames before it)"
        )),
    }
}

fn read_pcap(
    filter: &mut Filter,
    path: &Path,
    reader: impl Read,
    analysis: &mut Analysis,
    index: usize,
    tick: &dyn Fn(),
) -> Result<()> {
    let name = path.display();
    {
        analysis.files[index].format = "pcap";
        let mut r = PcapReader::new(reader)
            .map_err(|e| anyhow!(e).context(format!("{name}: reading the pcap file header")))?;
        let linktype = u32::from(r.header().datalink);
        analysis.files[index].link_types.push(linktype);
        let kind = link_kind(path, linktype, 1)?;
        let mut frames = 0u64;
        while let Some(p) = r.next_packet() {
            let p = p.map_err(|e| frame_err(path, frames, e))?;
            frames += 1;
            analysis.files[index].frames = frames;
            let time = SystemTime::UNIX_EPOCH.checked_add(p.timestamp);
            analysis.frame(filter, kind, time, &p.data, p.orig_len)?;
            if frames.is_multiple_of(4096) {
                tick();
            }
        }
    }
    Ok(())
}

fn read_pcapng(
    filter: &mut Filter,
    path: &Path,
    reader: impl Read,
    analysis: &mut Analysis,
    index: usize,
    tick: &dyn Fn(),
) -> Result<()> {
    let name = path.display();
    {
        analysis.files[index].format = "pcapng";
        let mut r = PcapNgReader::new(reader).map_err(|e| {
            anyhow!(e).context(format!("{name}: reading the pcapng section header block"))
        })?;
        let mut frames = 0u64;
        // This section's interfaces: link type and timestamp resolution.
        // (The reader keeps them too, but a block borrows the reader.)
        let mut interfaces: Vec<(u32, TsUnits)> = Vec::new();
        while let Some(block) = r.next_block() {
            let block = block.map_err(|e| frame_err(path, frames, e))?;
            let (iface, time_units, data, orig_len) = match block {
                Block::SectionHeader(_) => {
                    interfaces.clear();
                    continue;
                }
                Block::InterfaceDescription(idb) => {
                    let linktype = u32::from(idb.linktype);
                    if !analysis.files[index].link_types.contains(&linktype) {
                        analysis.files[index].link_types.push(linktype);
                    }
                    interfaces.push((linktype, TsUnits::of(&idb.options)));
                    continue;
                }
                Block::EnhancedPacket(p) => (
                    p.interface_id,
                    Some(p.timestamp.as_nanos()),
                    p.data,
                    p.original_len,
                ),
                Block::SimplePacket(p) => (0, None, p.data, p.original_len),
                // The obsolete Packet Block keeps the raw 64-bit count.
                Block::Packet(p) => (
                    u32::from(p.interface_id),
                    Some(u128::from(p.timestamp)),
                    p.data,
                    p.original_len,
                ),
                _ => continue,
            };
            frames += 1;
            analysis.files[index].frames = frames;
            let &(linktype, ts) = interfaces.get(iface as usize).with_context(|| {
                format!(
                    "{name}: frame {frames}: refers to interface {iface}, which no Interface \
                     Description Block declared: the capture is corrupt"
                )
            })?;
            let kind = link_kind(path, linktype, frames)?;
            let time = time_units.and_then(|units| ts.time(units));
            analysis.frame(filter, kind, time, &data, orig_len)?;
            if frames.is_multiple_of(4096) {
                tick();
            }
        }
    }
    Ok(())
}

fn link_kind(path: &Path, linktype: u32, frame: u64) -> Result<LinkKind> {
    LinkKind::from_linktype(linktype).with_context(|| {
        format!(
            "{}: frame {frame}: link type {linktype} is not supported; replay reads Ethernet \
             (1), raw IP (101, 228, 229, 12, 14) and Linux cooked captures (113, 276). Capture \
             on an Ethernet interface, or convert with `editcap -T ether` where possible",
            path.display()
        )
    })
}

/// An interface's pcapng timestamp units (pcapng §4.2, `if_tsresol` and
/// `if_tsoffset`).
///
/// pcap-file 2 keeps the raw 64-bit timestamp in a `Duration` as if it were
/// nanoseconds, whatever the interface's resolution; the default resolution
/// is microseconds (`if_tsresol` absent = 6), so the raw count is rescaled
/// here.
#[derive(Clone, Copy, Debug)]
struct TsUnits {
    resol: u8,
    offset_secs: u64,
}

impl TsUnits {
    fn of(options: &[InterfaceDescriptionOption<'_>]) -> Self {
        let mut t = TsUnits {
            resol: 6,
            offset_secs: 0,
        };
        for o in options {
            match o {
                InterfaceDescriptionOption::IfTsResol(r) => t.resol = *r,
                InterfaceDescriptionOption::IfTsOffset(s) => t.offset_secs = *s,
                _ => {}
            }
        }
        t
    }

    /// The time of a packet stamped with `units`.
    fn time(self, units: u128) -> Option<SystemTime> {
        // The high bit chooses a power of 2, else a power of 10.
        let nanos = if self.resol & 0x80 != 0 {
            let per_sec = 1u128.checked_shl(u32::from(self.resol & 0x7f))?;
            units / per_sec * 1_000_000_000 + units % per_sec * 1_000_000_000 / per_sec
        } else {
            let exp = u32::from(self.resol);
            if exp <= 9 {
                units * 10u128.pow(9 - exp)
            } else {
                units / 10u128.checked_pow(exp - 9)?
            }
        };
        let d = Duration::from_secs(u64::try_from(nanos / 1_000_000_000).ok()?)
            + Duration::from_nanos(u64::try_from(nanos % 1_000_000_000).ok()?)
            + Duration::from_secs(self.offset_secs);
        SystemTime::UNIX_EPOCH.checked_add(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcapng_time_resolutions() {
        let t = |opts: &[InterfaceDescriptionOption<'_>], units| {
            TsUnits::of(opts)
                .time(units)
                .unwrap()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
        };
        // Default: microseconds.
        assert_eq!(t(&[], 1_500_000), Duration::from_millis(1500));
        assert_eq!(
            t(&[InterfaceDescriptionOption::IfTsResol(9)], 1_500_000_000),
            Duration::from_millis(1500)
        );
        // 2^-10 s units.
        assert_eq!(
            t(&[InterfaceDescriptionOption::IfTsResol(0x80 | 0x0a)], 1536),
            Duration::from_millis(1500)
        );
        assert_eq!(
            t(
                &[
                    InterfaceDescriptionOption::IfTsResol(3),
                    InterfaceDescriptionOption::IfTsOffset(100)
                ],
                1500
            ),
            Duration::from_millis(101_500)
        );
    }
}
