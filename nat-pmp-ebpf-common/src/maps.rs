//! Everything the kernel and user space share through maps and globals:
//! the names of the maps and sections, their sizes, and the `#[repr(C)]`
//! types they hold ([`Config`], [`ClassCounters`], [`Trace`], the source
//! table's [`SourceSet`]/[`SourceSlot`], [`Unattributed`], [`AgentClock`],
//! the fragment table's [`FragKey`]/[`FragEntry`]), with their size checks
//! and, for the agent (feature `user`), their `aya::Pod` impls. Also the
//! address-word helpers the source table is keyed by.
//!
//! Every type here is `Copy`, without implicit padding (asserted below),
//! and takes any bit pattern a map can hold. Depends on nothing else in the
//! crate.

/// Name of the per-CPU array of [`ClassCounters`], indexed by
/// [`Class`](crate::Class).
pub const MAP_STATS: &str = "NATPMP_STATS";
/// Name of the one-entry array holding the [`Config`] the agent writes.
pub const MAP_CONFIG: &str = "NATPMP_CONFIG";
/// The object's section that holds the program's [`Config`] (a global the
/// program reads in place); the loader makes it a one-entry array map,
/// pinned as [`MAP_CONFIG`].
pub const CONFIG_SECTION: &str = ".data.config";
/// Name of the LRU hash of first fragments seen on port 5351
/// ([`FragKey`] to [`FragEntry`]).
pub const MAP_FRAGS: &str = "NATPMP_FRAGS";
/// Entries of [`MAP_FRAGS`]: datagrams in flight whose later fragments can
/// still be recognised.
pub const FRAGS_MAX_ENTRIES: u32 = 4096;
/// Name of the per-CPU table of senders: [`SOURCE_GENERATIONS`] ×
/// [`SOURCE_SETS`] entries of one [`SourceSet`] each, indexed by
/// `generation * SOURCE_SETS + set`. Updated only for counted NAT-PMP/PCP
/// datagrams, while per-source tracking is on.
///
/// Why this shape: a per-CPU array lookup is inlined by the verifier (an LRU
/// hash lookup is a helper call that hashes the key), and with per-CPU
/// values nothing is shared between CPUs. A source's set is a keyed hash of
/// its address ([`source_set`]) with a key drawn at load time, so a scanner
/// cannot aim at one set. The program writes only the generation of the
/// current epoch ([`AgentClock::epoch`], odd or even); the agent advances the
/// epoch every interval, waits until no program run that saw the old epoch
/// is left (an RCU grace period), and then reads the old generation for
/// good: a slot is reused (in the epoch after next) only after the agent has
/// read it. A datagram whose set has no free way is counted in
/// [`MAP_UNATTRIBUTED`]: nothing is lost silently.
pub const MAP_SOURCES: &str = "NATPMP_SOURCES";
/// Sets per generation of [`MAP_SOURCES`] (a power of two).
pub const SOURCE_SETS: u32 = 512;
/// Ways (slots) per set.
pub const SOURCE_WAYS: usize = 8;
/// Generations: the one the program fills, and the one the agent reads.
pub const SOURCE_GENERATIONS: u32 = 2;
/// Distinct senders one CPU can attribute in one report interval; more go to
/// [`MAP_UNATTRIBUTED`]. The table's fixed memory is
/// `SOURCE_GENERATIONS × SOURCES_MAX_ENTRIES × 40` bytes per possible CPU:
/// 320 KiB per CPU (640 KiB on 2 CPUs, 5 MiB on 16).
#[expect(clippy::cast_possible_truncation, reason = "8 ways")]
pub const SOURCES_MAX_ENTRIES: u32 = SOURCE_SETS * SOURCE_WAYS as u32;
/// Name of the per-CPU one-entry array of [`Unattributed`]: counted
/// datagrams whose sender found no free slot in [`MAP_SOURCES`].
pub const MAP_UNATTRIBUTED: &str = "NATPMP_UNATTRIBUTED";
/// Name of the LPM trie of allowlisted source prefixes (16-byte keys,
/// IPv4-mapped for IPv4; the value is unused, 1).
pub const MAP_ALLOW: &str = "NATPMP_ALLOW";
/// Entries of [`MAP_ALLOW`]: prefixes an operator lists by hand.
pub const ALLOW_MAX_ENTRIES: u32 = 1024;
/// Name of the one-entry array of [`AgentClock`]: the agent's epoch and
/// the drop-log budget. The epoch is written only by the agent that runs
/// the instance (every interval), never by `nat-pmp-agent mode` or `allow`
/// from another shell, which write [`MAP_CONFIG`]: a read-modify-write of
/// the policy can then never undo an epoch, nor an epoch a policy change.
/// The program only takes drop-log tokens from it.
pub const MAP_CLOCK: &str = "NATPMP_CLOCK";
/// The object's section that holds the [`AgentClock`] (a global the program
/// reads in place); the loader makes it a one-entry array map, pinned as
/// [`MAP_CLOCK`].
pub const CLOCK_SECTION: &str = ".data.clock";
/// Dropped datagrams logged (through aya-log) per second at most, per
/// instance: the agent refills the [`AgentClock`] budget to this times its
/// interval (a sample for the operator, never a flood of the log).
pub const DROP_LOG_PER_SEC: u64 = 5;
/// Name of the one-entry array the program writes its last [`Trace`] into,
/// when loaded with [`TRACE_GLOBAL`] set (tests only).
pub const MAP_TRACE: &str = "NATPMP_TRACE";
/// Name of the read-only global that turns tracing on at load time. It is
/// a constant to the verifier, which removes the tracing code entirely
/// when it is 0: the normal path does not pay for it.
pub const TRACE_GLOBAL: &str = "NATPMP_TRACE_ON";
/// Name of the XDP program in the object file.
pub const PROGRAM_NAME: &str = "nat_pmp";
/// The version of the pinned layout: which maps an instance pins, their
/// types and their key and value layouts. Raised with any change to them.
/// Every pinned instance carries the one it was pinned with in
/// [`MAP_LAYOUT`]; one pinned before layouts were versioned has no such
/// map.
///
/// Versions: 1, the first versioned layout; 2 added [`MAP_CARRIED`] (the
/// class counters an in-place upgrade carries over).
pub const LAYOUT_VERSION: u32 = 2;
/// Name of the array of class counters carried over from the programs an
/// in-place upgrade replaced: entry `c` adds to class `c` of
/// [`MAP_STATS`], entry [`Class::COUNT`]` + c` to class `c` of
/// [`MAP_ANSWERED`]. Written by the agent that swapped the program in; the
/// program never reads it. Since layout 2.
///
/// [`Class::COUNT`]: crate::Class::COUNT
pub const MAP_CARRIED: &str = "NATPMP_CARRIED";
/// Entries of [`MAP_CARRIED`]: the XDP classes, then the answered ones.
#[expect(clippy::cast_possible_truncation, reason = "23 classes")]
pub const CARRIED_ENTRIES: u32 = 2 * crate::Class::COUNT as u32;
/// Name of the one-entry array holding the instance's [`Layout`], written
/// by the agent that loaded the program (the program never reads it).
pub const MAP_LAYOUT: &str = "NATPMP_LAYOUT";
/// Bytes of [`Layout::agent`].
pub const AGENT_VERSION_LEN: usize = 28;

/// Which layout an instance was pinned with, and by which agent version:
/// entry 0 of [`MAP_LAYOUT`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// [`LAYOUT_VERSION`] of the agent that loaded the program.
    pub version: u32,
    /// That agent's version (`CARGO_PKG_VERSION`), UTF-8, NUL-padded (cut
    /// at [`AGENT_VERSION_LEN`] bytes).
    pub agent: [u8; AGENT_VERSION_LEN],
}

impl Layout {
    /// The layout `version` written by agent version `agent`.
    pub const fn new(version: u32, agent: &str) -> Self {
        let bytes = agent.as_bytes();
        let mut out = [0u8; AGENT_VERSION_LEN];
        let mut i = 0;
        while i < bytes.len() && i < AGENT_VERSION_LEN {
            out[i] = bytes[i];
            i += 1;
        }
        Self {
            version,
            agent: out,
        }
    }

    /// The agent version, up to the first NUL (`?` when not UTF-8).
    pub fn agent_version(&self) -> &str {
        let end = self
            .agent
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(AGENT_VERSION_LEN);
        core::str::from_utf8(&self.agent[..end]).unwrap_or("?")
    }
}

/// Name of the tc egress program in the object file: it counts the answers
/// the router sends from port 5351 (exposure, RFC 6886 §3 forbids answering
/// on the WAN).
pub const EGRESS_PROGRAM_NAME: &str = "nat_pmp_egress";
/// Name of the per-CPU array of [`ClassCounters`] of answers leaving the
/// interface (from port 5351), indexed by [`Class`](crate::Class), counted
/// with the XDP path's [`ClassCounters::count`].
pub const MAP_ANSWERED: &str = "NATPMP_ANSWERED";
/// Name of the LRU hash of who got an answer: destination address (16 bytes,
/// IPv4-mapped for IPv4) to [`AnsweredTo`].
pub const MAP_ANSWERED_TO: &str = "NATPMP_ANSWERED_TO";
/// Entries of [`MAP_ANSWERED_TO`]: bounded memory however many peers are
/// answered (the least recently answered age out).
pub const ANSWERED_TO_MAX_ENTRIES: u32 = 1024;
/// Name of the one-entry array of [`AnswerLast`]: the last answer's
/// destination and time.
pub const MAP_ANSWER_LAST: &str = "NATPMP_ANSWER_LAST";

/// Answers sent to one destination ([`MAP_ANSWERED_TO`]). Shared by every
/// CPU: the counts are atomic adds, the time a plain store.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AnsweredTo {
    /// Answers sent to this destination.
    pub packets: u64,
    /// Their frame bytes.
    pub bytes: u64,
    /// When the last one left (`CLOCK_MONOTONIC`, ns: `bpf_ktime_get_ns`).
    pub last_ns: u64,
}

/// The last answer that left ([`MAP_ANSWER_LAST`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AnswerLast {
    /// Its destination (16 bytes, IPv4-mapped for IPv4).
    pub addr: [u8; 16],
    /// When it left (`CLOCK_MONOTONIC`, ns); 0: no answer yet.
    pub at_ns: u64,
    /// Its class ([`Class::index`](crate::Class::index)).
    pub class: u32,
    pub pad: u32,
}

/// Filter policy, written by the agent into [`MAP_CONFIG`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Count and pass everything.
    Monitor = 0,
    /// Drop every UDP datagram to port 5351; count everything.
    Drop = 1,
}

impl Mode {
    /// The stable name used in JSON and reports.
    pub const fn name(self) -> &'static str {
        match self {
            Mode::Monitor => "monitor",
            Mode::Drop => "drop",
        }
    }
}

/// Where the network header starts: what link layer the interface has.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    /// An Ethernet header (with up to two VLAN tags and PPPoE) comes first.
    Ethernet = 0,
    /// The frame starts with the IP header (PPP, tun, WireGuard); its
    /// version nibble tells IPv4 from IPv6.
    RawIp = 1,
}

impl Link {
    /// The stable name used on the command line and in reports.
    pub const fn name(self) -> &'static str {
        match self {
            Link::Ethernet => "ethernet",
            Link::RawIp => "raw-ip",
        }
    }
}

/// The program's configuration: entry 0 of [`MAP_CONFIG`], read once per
/// frame in place (a global in its own section, [`CONFIG_SECTION`]: no
/// lookup) for the policy, the link type and the source table.
///
/// Plain integer fields rather than enums, so that any bit pattern a map can
/// hold is a valid value on both sides.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// [`Mode`] as `u32`; unknown values act as [`Mode::Monitor`].
    pub mode: u32,
    /// [`Link`] as `u32`; unknown values act as [`Link::Ethernet`].
    pub link: u32,
    /// Nonzero: per-source tracking ([`MAP_SOURCES`]) is off, and counted
    /// datagrams cost no source-map update. Zero (the default) tracks.
    pub sources_off: u32,
    /// How many prefixes the allowlist ([`MAP_ALLOW`]) holds, kept by the
    /// agent after every change; 0 skips the trie lookup, so an empty
    /// allowlist costs drop mode nothing.
    pub allow_prefixes: u32,
    pub pad: [u32; 2],
    /// The key of [`source_set`], drawn at random when the program is
    /// loaded.
    pub hash_key: [u64; 2],
}

impl Config {
    /// A configuration for `mode` on an Ethernet interface (hash key 0:
    /// the agent draws one at load time).
    pub const fn new(mode: Mode) -> Self {
        Config {
            mode: mode as u32,
            link: Link::Ethernet as u32,
            sources_off: 0,
            allow_prefixes: 0,
            pad: [0; 2],
            hash_key: [0; 2],
        }
    }

    /// Whether counted datagrams update the per-source map.
    pub const fn tracks_sources(&self) -> bool {
        self.sources_off == 0
    }

    /// This configuration with `link` instead.
    #[must_use]
    pub const fn with_link(self, link: Link) -> Self {
        Config {
            link: link as u32,
            ..self
        }
    }

    /// Whether datagrams to port 5351 are dropped.
    pub const fn drops(&self) -> bool {
        self.mode == Mode::Drop as u32
    }

    /// The link type the program parses.
    pub const fn link(&self) -> Link {
        if self.link == Link::RawIp as u32 {
            Link::RawIp
        } else {
            Link::Ethernet
        }
    }

    /// The mode the program applies.
    pub const fn mode(&self) -> Mode {
        if self.drops() {
            Mode::Drop
        } else {
            Mode::Monitor
        }
    }
}

/// Per-class counters: one entry of [`MAP_STATS`] on one CPU, counted by
/// [`ClassCounters::count`].
///
/// `bytes` are frame bytes as XDP sees them (from the start of the link-layer
/// header to the end of the frame).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClassCounters {
    /// Datagrams of this class that were passed.
    pub passed_packets: u64,
    /// Frame bytes of the passed datagrams.
    pub passed_bytes: u64,
    /// Datagrams of this class that were dropped.
    pub dropped_packets: u64,
    /// Frame bytes of the dropped datagrams.
    pub dropped_bytes: u64,
    /// Datagrams longer than their opcode needs (a subset of the above).
    pub oversized_packets: u64,
}

impl ClassCounters {
    /// All datagrams of this class, passed or dropped.
    pub const fn packets(&self) -> u64 {
        self.passed_packets + self.dropped_packets
    }

    /// All frame bytes of this class, passed or dropped.
    pub const fn bytes(&self) -> u64 {
        self.passed_bytes + self.dropped_bytes
    }

    /// Field-wise wrapping sum (adds up per-CPU values).
    #[must_use]
    pub const fn add(&self, o: &ClassCounters) -> ClassCounters {
        ClassCounters {
            passed_packets: self.passed_packets.wrapping_add(o.passed_packets),
            passed_bytes: self.passed_bytes.wrapping_add(o.passed_bytes),
            dropped_packets: self.dropped_packets.wrapping_add(o.dropped_packets),
            dropped_bytes: self.dropped_bytes.wrapping_add(o.dropped_bytes),
            oversized_packets: self.oversized_packets.wrapping_add(o.oversized_packets),
        }
    }

    /// Field-wise wrapping difference (`self` minus an earlier reading).
    #[must_use]
    pub const fn since(&self, earlier: &ClassCounters) -> ClassCounters {
        ClassCounters {
            passed_packets: self.passed_packets.wrapping_sub(earlier.passed_packets),
            passed_bytes: self.passed_bytes.wrapping_sub(earlier.passed_bytes),
            dropped_packets: self.dropped_packets.wrapping_sub(earlier.dropped_packets),
            dropped_bytes: self.dropped_bytes.wrapping_sub(earlier.dropped_bytes),
            oversized_packets: self
                .oversized_packets
                .wrapping_sub(earlier.oversized_packets),
        }
    }
}

/// What the program decided for one frame: written to [`MAP_TRACE`] when
/// tracing is on, so tests compare the kernel with the host reference frame
/// by frame.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Trace {
    /// Incremented on every traced run: tells a fresh record from a stale one.
    pub seq: u32,
    /// The XDP action returned.
    pub action: u32,
    /// The [`Class`](crate::Class) index counted, or [`Trace::UNCOUNTED`].
    pub class: u32,
    /// 1 when the oversized counter moved.
    pub oversized: u32,
    /// Frame bytes counted (0 when uncounted).
    pub bytes: u64,
    /// The sender, as [`Outcome::src`](crate::Outcome::src).
    pub src: [u8; 16],
    /// 1 when the allowlist let a datagram through that drop mode drops.
    pub allowed: u32,
    pub pad: u32,
}

impl Trace {
    /// [`Trace::class`] of a frame no counter moved for.
    pub const UNCOUNTED: u32 = u32::MAX;
}

/// One sender's totals as the agent keeps them, from the [`SourceSlot`]s of
/// every CPU and epoch it read (`first_seen_ns` the least, `last_seen_ns`
/// the greatest).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceStats {
    /// Counted datagrams from this source.
    pub packets: u64,
    /// Their frame bytes.
    pub bytes: u64,
    /// `CLOCK_MONOTONIC` of the agent's read that first and last found
    /// this source (a report interval's resolution: the kernel keeps no
    /// time).
    pub first_seen_ns: u64,
    pub last_seen_ns: u64,
    /// Bit `Class::index()` is set for every class this source sent.
    pub classes: u32,
    pub pad: u32,
}

impl SourceStats {
    /// Two CPUs' entries (or two readings) as one.
    #[must_use]
    pub const fn merge(&self, o: &SourceStats) -> SourceStats {
        let first = if self.packets == 0 {
            o.first_seen_ns
        } else if o.packets == 0 || self.first_seen_ns < o.first_seen_ns {
            self.first_seen_ns
        } else {
            o.first_seen_ns
        };
        SourceStats {
            packets: self.packets + o.packets,
            bytes: self.bytes + o.bytes,
            first_seen_ns: first,
            last_seen_ns: if self.last_seen_ns > o.last_seen_ns {
                self.last_seen_ns
            } else {
                o.last_seen_ns
            },
            classes: self.classes | o.classes,
            pad: 0,
        }
    }
}

/// One slot of [`MAP_SOURCES`] on one CPU: a sender and what it sent in
/// one epoch.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceSlot {
    /// The address as two native-endian words of its 16 bytes (IPv4-mapped
    /// for IPv4): compared with two loads, never byte by byte.
    pub addr: [u64; 2],
    /// Counted datagrams from this source.
    pub packets: u64,
    /// Their frame bytes.
    pub bytes: u64,
    /// [`AgentClock::source_stamp`] of the epoch the slot was filled in; any
    /// other value marks the slot free.
    pub stamp: u32,
    /// Bit `Class::index()` is set for every class this source sent.
    pub classes: u32,
}

impl SourceSlot {
    /// The address's 16 bytes.
    pub fn address(&self) -> [u8; 16] {
        let mut a = [0u8; 16];
        a[..8].copy_from_slice(&self.addr[0].to_ne_bytes());
        a[8..].copy_from_slice(&self.addr[1].to_ne_bytes());
        a
    }
}

/// One set of [`MAP_SOURCES`]: its ways, filled in order within an epoch
/// (so the first free way ends the search).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceSet {
    pub slots: [SourceSlot; SOURCE_WAYS],
}

/// An address's 16 bytes as the two words [`SourceSlot::addr`] holds.
#[inline(always)]
pub const fn addr_words(a: &[u8; 16]) -> [u64; 2] {
    [
        u64::from_ne_bytes([a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]]),
        u64::from_ne_bytes([a[8], a[9], a[10], a[11], a[12], a[13], a[14], a[15]]),
    ]
}

/// [`addr_words`] backwards: the 16 bytes of two words.
#[inline(always)]
pub const fn words_addr(w: [u64; 2]) -> [u8; 16] {
    // SAFETY: two `u64`s and sixteen bytes have the same size, and every
    // bit pattern is a valid byte array.
    unsafe { core::mem::transmute::<[u64; 2], [u8; 16]>(w) }
}

/// `a.b.c.d` as the words of its IPv4-mapped address `::ffff:a.b.c.d`
/// ([`v4_mapped`](crate::v4_mapped) without a byte-by-byte array).
#[inline(always)]
pub const fn v4_mapped_words(a: [u8; 4]) -> [u64; 2] {
    [
        0,
        u64::from_ne_bytes([0, 0, 0xff, 0xff, a[0], a[1], a[2], a[3]]),
    ]
}

/// The set of [`MAP_SOURCES`] an address falls in: each word of the address,
/// exclusive-or its half of the key, multiplied by an odd constant (the two
/// products are independent, so their latencies overlap), the two products
/// combined by exclusive or, the top bits taken. The top bits of a product depend on every bit
/// of its factor, and the key's bits decide the carries, so without the key
/// an attacker cannot tell which addresses share a set (what the table
/// needs); with many sources the sets fill evenly
/// (`the_source_hash_is_keyed_and_even`). Not a cryptographic MAC, which
/// would cost more than the rest of the frame's work.
#[inline(always)]
pub const fn source_set(addr: [u64; 2], key: [u64; 2]) -> u32 {
    let a = (addr[0] ^ key[0]).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let b = (addr[1] ^ key[1]).wrapping_mul(0xc2b2_ae3d_27d4_eb4f);
    #[expect(clippy::cast_possible_truncation, reason = "the top 9 bits")]
    let set = ((a ^ b) >> (64 - SOURCE_SETS.trailing_zeros())) as u32;
    set
}

/// One CPU's datagrams that found no free slot in [`MAP_SOURCES`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Unattributed {
    pub packets: u64,
    pub bytes: u64,
}

impl Unattributed {
    /// Field-wise wrapping sum (adds up CPUs, interfaces, or the agent's
    /// own share).
    #[must_use]
    pub const fn add(&self, o: &Unattributed) -> Unattributed {
        Unattributed {
            packets: self.packets.wrapping_add(o.packets),
            bytes: self.bytes.wrapping_add(o.bytes),
        }
    }
}

/// The agent's clock: entry 0 of [`MAP_CLOCK`], a global the program reads
/// in place ([`CLOCK_SECTION`]). The kernel reads no clock of its own.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AgentClock {
    /// Dropped datagrams the program may still log this interval, on all
    /// CPUs together: it logs only while this is above zero and takes one
    /// with an atomic add of -1 (signed, so that CPUs racing for the last
    /// token leave it below zero, not wrapped: at most one line more per
    /// racing CPU). The agent sets it every interval.
    pub tokens: i64,
    /// Advanced by one every report interval. Its low bit is the
    /// generation of [`MAP_SOURCES`] the program fills; the program stamps
    /// the slots it fills with `epoch + 1` (so that zeroed slots are free).
    pub epoch: u32,
    pub pad: u32,
}

impl AgentClock {
    /// The slot stamp the program writes in this epoch.
    #[inline(always)]
    pub const fn source_stamp(&self) -> u32 {
        self.epoch.wrapping_add(1)
    }

    /// The first [`MAP_SOURCES`] key of the generation the program fills.
    #[inline(always)]
    pub const fn generation_base(&self) -> u32 {
        (self.epoch & 1) * SOURCE_SETS
    }
}

/// The reassembly key of a fragmented datagram: source, destination,
/// protocol and identification (RFC 791 §3.2; RFC 8200 §4.5 without the
/// protocol, which every fragment repeats). IPv4 addresses fill the first 4
/// bytes of `src`/`dst`; unused bytes are zero. The key of [`MAP_FRAGS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FragKey {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// Identification, big-endian; IPv4's 16 bits fill the last two bytes.
    pub id: [u8; 4],
    /// 4 or 6.
    pub ip_version: u8,
    /// The protocol the reassembled datagram carries (17, or 4 for IPv4 in
    /// IPv6).
    pub proto: u8,
    pub pad: [u8; 2],
}

/// What [`FragTable`](crate::FragTable) remembers of a first fragment:
/// which way it went and who sent it. The value of [`MAP_FRAGS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FragEntry {
    /// 1 when the datagram goes to port 5351
    /// ([`Direction::ToServer`](crate::Direction::ToServer)).
    pub to_server: u32,
    pub pad: u32,
    /// The first fragment's sender (the two words of
    /// [`addr_words`](crate::addr_words)): the datagram's later fragments
    /// are counted for it and the allowlist judges them by it. Only the
    /// first fragment can name it when the tunnel fragmented an IPv4
    /// datagram (IPv4 in IPv6: a later fragment carries no IPv4 header).
    pub src: [u64; 2],
}

// The layouts above are shared with the kernel: no padding may creep in.
const _: () = assert!(core::mem::size_of::<ClassCounters>() == 40);
const _: () = assert!(core::mem::size_of::<Config>() == 40);
const _: () = assert!(core::mem::size_of::<SourceSlot>() == 40);
const _: () = assert!(core::mem::size_of::<AgentClock>() == 16);
const _: () = assert!(core::mem::size_of::<SourceSet>() == 40 * SOURCE_WAYS);
const _: () = assert!(SOURCE_SETS.is_power_of_two());
const _: () = assert!(SOURCE_GENERATIONS == 2);
const _: () = assert!(core::mem::size_of::<Trace>() == 48);
const _: () = assert!(core::mem::size_of::<SourceStats>() == 40);
const _: () = assert!(core::mem::size_of::<FragKey>() == 40);
const _: () = assert!(core::mem::size_of::<FragEntry>() == 24);
const _: () = assert!(core::mem::size_of::<AnsweredTo>() == 24);
const _: () = assert!(core::mem::size_of::<AnswerLast>() == 32);
const _: () = assert!(core::mem::size_of::<Layout>() == 32);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: `#[repr(C)]`, `Copy`, only `u64` fields: no padding, every bit
    // pattern is valid.
    unsafe impl aya::Pod for super::ClassCounters {}
    // SAFETY: `#[repr(C)]`, `Copy`, only `u32` fields: no padding, every bit
    // pattern is valid.
    unsafe impl aya::Pod for super::Config {}
    // SAFETY: `#[repr(C)]`, `Copy`, `u32`/`u64` fields in an order that
    // leaves no padding (size asserted above).
    unsafe impl aya::Pod for super::Trace {}
    // SAFETY: `#[repr(C)]`, only byte arrays: no padding.
    unsafe impl aya::Pod for super::FragKey {}
    // SAFETY: `#[repr(C)]`, one `u32`.
    unsafe impl aya::Pod for super::FragEntry {}
    // SAFETY: `#[repr(C)]`, `u64`s then two `u32`s: no padding (size
    // asserted above).
    unsafe impl aya::Pod for super::SourceStats {}
    // SAFETY: as `SourceStats`.
    unsafe impl aya::Pod for super::SourceSlot {}
    // SAFETY: an array of `SourceSlot`s: no padding.
    unsafe impl aya::Pod for super::SourceSet {}
    // SAFETY: `#[repr(C)]`, two `u64`s.
    unsafe impl aya::Pod for super::Unattributed {}
    // SAFETY: `#[repr(C)]`, a `u64` then two `u32`s: no padding.
    unsafe impl aya::Pod for super::AgentClock {}
    // SAFETY: `#[repr(C)]`, three `u64`s.
    unsafe impl aya::Pod for super::AnsweredTo {}
    // SAFETY: `#[repr(C)]`, 16 bytes, a `u64`, two `u32`s: no padding (size
    // asserted above).
    unsafe impl aya::Pod for super::AnswerLast {}
    // SAFETY: `#[repr(C)]`, a `u32` then 28 bytes: no padding (size
    // asserted above), every bit pattern valid.
    unsafe impl aya::Pod for super::Layout {}
}
