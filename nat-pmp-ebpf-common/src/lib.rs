//! Types, constants and the classifier shared by the XDP program and the host.
//!
//! Contract: everything here is `no_std`, allocation-free and pure. The kernel
//! program bounds-checks packet memory, copies the few bytes it needs into
//! plain values and calls [`classify`]; the host (unit tests, the agent, the
//! capture replay) calls the very same function, so the two worlds cannot
//! disagree about what a datagram is.
//!
//! Every type that crosses the kernel/user boundary through a map is defined
//! here once, `#[repr(C)]`, `Copy`, without implicit padding.
// `no_std` for the XDP program; the host-only capture generator needs std.
#![cfg_attr(not(any(test, feature = "capgen")), no_std)]
// The XDP program must get these small functions inlined: a BPF-to-BPF call
// costs a stack frame (512 bytes in all) and re-verification per call site.
#![expect(
    clippy::inline_always,
    reason = "the XDP program needs its hot helpers inlined"
)]

#[cfg(any(test, feature = "host"))]
pub mod frames;
pub mod headers;
pub mod parse;
#[cfg(any(test, feature = "host"))]
pub mod reference;

pub use parse::{
    apply, decide, decide_fast, decide_slow, v4_mapped, walk, Allowlist, Bytes, FastDecision,
    Found, FragEntry, FragKey, FragTable, Outcome, Prefix, Walk, MAX_IPV6_EXT_HEADERS,
    MAX_VLAN_TAGS,
};
#[cfg(feature = "capgen")]
pub mod capgen;
pub mod samples;

/// UDP port of NAT-PMP (RFC 6886 §3.1) and of PCP (RFC 6887 §19.1).
pub const NATPMP_PORT: u16 = 5351;

/// Name of the per-CPU array of [`ClassCounters`], indexed by [`Class`].
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

/// What a NAT-PMP/PCP datagram is, by its UDP payload (and, for the last
/// three, by the headers around it).
///
/// The discriminant is the index into [`MAP_STATS`]. The names returned by
/// [`Class::name`] are a public contract (JSON fields, metric labels): add
/// classes, never rename them. New classes are appended, so indices of
/// existing classes never move.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Class {
    /// Version 0, opcode 0 (RFC 6886 §3.2), at least 2 bytes.
    NatpmpExternalAddressRequest = 0,
    /// Version 0, opcode 1 (RFC 6886 §3.3), at least 12 bytes.
    NatpmpMapUdpRequest = 1,
    /// Version 0, opcode 2 (RFC 6886 §3.3), at least 12 bytes.
    NatpmpMapTcpRequest = 2,
    /// Version 0, opcode 128 (RFC 6886 §3.2), at least 12 bytes.
    NatpmpExternalAddressResponse = 3,
    /// Version 0, opcode 129 (RFC 6886 §3.3), at least 16 bytes.
    NatpmpMapUdpResponse = 4,
    /// Version 0, opcode 130 (RFC 6886 §3.3), at least 16 bytes.
    NatpmpMapTcpResponse = 5,
    /// Version 0 with an opcode RFC 6886 does not define (§3.5: result 5).
    NatpmpUnsupportedOpcode = 6,
    /// Every PCP (version 2, RFC 6887) datagram: an aggregate, never produced
    /// by [`classify`] and never counted by the kernel. The host fills it in
    /// as the sum of the `pcp_*` classes (see [`Class::parent`]), so the
    /// `pcp` name and JSON key keep meaning "all PCP".
    Pcp = 7,
    /// Fewer bytes than the version/opcode needs, a 0 or 1 byte payload, or
    /// a UDP length field that is below 8 or beyond the frame.
    MalformedTruncated = 8,
    /// A version byte other than 0 and 2 (version 1 was pre-standard and
    /// must not be used, RFC 6887 §9).
    MalformedVersion = 9,
    /// PCP ANNOUNCE request (RFC 6887 §14.1): opcode 0, R bit clear.
    PcpAnnounceRequest = 10,
    /// PCP ANNOUNCE response (RFC 6887 §14.1): opcode 0, R bit set.
    PcpAnnounceResponse = 11,
    /// PCP MAP request (RFC 6887 §11.1): opcode 1, at least 60 bytes.
    PcpMapRequest = 12,
    /// PCP MAP response (RFC 6887 §11.1): opcode 1 | R, at least 60 bytes.
    PcpMapResponse = 13,
    /// PCP PEER request (RFC 6887 §12.1): opcode 2, at least 80 bytes.
    PcpPeerRequest = 14,
    /// PCP PEER response (RFC 6887 §12.1): opcode 2 | R, at least 80 bytes.
    PcpPeerResponse = 15,
    /// A well-formed PCP message with an opcode RFC 6887 does not define,
    /// request or response (a server answers `UNSUPP_OPCODE`, §7.4).
    PcpUnsupportedOpcode = 16,
    /// PCP shorter than its 24-byte common header (RFC 6887 §7.1, §7.2).
    PcpMalformedShortHeader = 17,
    /// PCP MAP or PEER shorter than the header plus the opcode's fixed part
    /// (MAP 24 + 36 = 60 bytes, §11.1; PEER 24 + 56 = 80 bytes, §12.1).
    PcpMalformedShortOpcode = 18,
    /// PCP longer than 1100 bytes (RFC 6887 §7: "MUST NOT exceed 1100").
    PcpMalformedTooLong = 19,
    /// PCP whose length is not a multiple of 4 (RFC 6887 §7, §8.3).
    PcpMalformedNotMultipleOf4 = 20,
    /// An IPv4 or IPv6 fragment after the first, of a datagram whose first
    /// fragment was UDP on port 5351 (RFC 791 §3.2, RFC 8200 §4.5). It
    /// carries no UDP header; it is recognised by its reassembly key.
    FragmentNonfirst = 21,
    /// An IPv6 packet whose extension-header chain is longer than
    /// [`MAX_IPV6_EXT_HEADERS`]: where it leads (maybe port 5351) is not
    /// known, so it is counted (whatever its port) and passed.
    Ipv6ExtChainTooLong = 22,
}

impl Class {
    /// Number of classes: the size of [`MAP_STATS`].
    pub const COUNT: usize = 23;

    /// Every class, in index order.
    pub const ALL: [Class; Class::COUNT] = [
        Class::NatpmpExternalAddressRequest,
        Class::NatpmpMapUdpRequest,
        Class::NatpmpMapTcpRequest,
        Class::NatpmpExternalAddressResponse,
        Class::NatpmpMapUdpResponse,
        Class::NatpmpMapTcpResponse,
        Class::NatpmpUnsupportedOpcode,
        Class::Pcp,
        Class::MalformedTruncated,
        Class::MalformedVersion,
        Class::PcpAnnounceRequest,
        Class::PcpAnnounceResponse,
        Class::PcpMapRequest,
        Class::PcpMapResponse,
        Class::PcpPeerRequest,
        Class::PcpPeerResponse,
        Class::PcpUnsupportedOpcode,
        Class::PcpMalformedShortHeader,
        Class::PcpMalformedShortOpcode,
        Class::PcpMalformedTooLong,
        Class::PcpMalformedNotMultipleOf4,
        Class::FragmentNonfirst,
        Class::Ipv6ExtChainTooLong,
    ];

    /// The stable name used in JSON, metrics and reports.
    pub const fn name(self) -> &'static str {
        match self {
            Class::NatpmpExternalAddressRequest => "natpmp_external_address_request",
            Class::NatpmpMapUdpRequest => "natpmp_map_udp_request",
            Class::NatpmpMapTcpRequest => "natpmp_map_tcp_request",
            Class::NatpmpExternalAddressResponse => "natpmp_external_address_response",
            Class::NatpmpMapUdpResponse => "natpmp_map_udp_response",
            Class::NatpmpMapTcpResponse => "natpmp_map_tcp_response",
            Class::NatpmpUnsupportedOpcode => "natpmp_unsupported_opcode",
            Class::Pcp => "pcp",
            Class::MalformedTruncated => "malformed_truncated",
            Class::MalformedVersion => "malformed_version",
            Class::PcpAnnounceRequest => "pcp_announce_request",
            Class::PcpAnnounceResponse => "pcp_announce_response",
            Class::PcpMapRequest => "pcp_map_request",
            Class::PcpMapResponse => "pcp_map_response",
            Class::PcpPeerRequest => "pcp_peer_request",
            Class::PcpPeerResponse => "pcp_peer_response",
            Class::PcpUnsupportedOpcode => "pcp_unsupported_opcode",
            Class::PcpMalformedShortHeader => "pcp_malformed_short_header",
            Class::PcpMalformedShortOpcode => "pcp_malformed_short_opcode",
            Class::PcpMalformedTooLong => "pcp_malformed_too_long",
            Class::PcpMalformedNotMultipleOf4 => "pcp_malformed_not_multiple_of_4",
            Class::FragmentNonfirst => "fragment_nonfirst",
            Class::Ipv6ExtChainTooLong => "ipv6_ext_chain_too_long",
        }
    }

    /// The aggregate this class is part of: [`Class::Pcp`] for every
    /// `pcp_*` class, `None` otherwise.
    pub const fn parent(self) -> Option<Class> {
        match self {
            Class::PcpAnnounceRequest
            | Class::PcpAnnounceResponse
            | Class::PcpMapRequest
            | Class::PcpMapResponse
            | Class::PcpPeerRequest
            | Class::PcpPeerResponse
            | Class::PcpUnsupportedOpcode
            | Class::PcpMalformedShortHeader
            | Class::PcpMalformedShortOpcode
            | Class::PcpMalformedTooLong
            | Class::PcpMalformedNotMultipleOf4 => Some(Class::Pcp),
            _ => None,
        }
    }

    /// Whether this class is an aggregate of others (its map slot stays
    /// zero; the host computes it; totals must not add it again).
    pub const fn is_aggregate(self) -> bool {
        matches!(self, Class::Pcp)
    }

    /// Whether the headers around the UDP payload decide this class (a
    /// later fragment, an over-long IPv6 extension chain): no UDP payload
    /// sent from a socket can produce it.
    pub const fn decided_by_headers(self) -> bool {
        matches!(self, Class::FragmentNonfirst | Class::Ipv6ExtChainTooLong)
    }

    /// The map index of this class.
    pub const fn index(self) -> u32 {
        self as u32
    }

    /// The class with map index `index`, if there is one.
    pub const fn from_index(index: u32) -> Option<Class> {
        if (index as usize) < Class::COUNT {
            Some(Class::ALL[index as usize])
        } else {
            None
        }
    }

    /// The class whose stable name is `name`.
    pub fn from_name(name: &str) -> Option<Class> {
        Class::ALL.iter().copied().find(|c| c.name() == name)
    }
}

/// The outcome of [`classify`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Classification {
    /// The datagram's class.
    pub class: Class,
    /// The payload is longer than its opcode needs; it keeps its class (real
    /// scanners send 4-byte opcode-0 probes) and is also counted apart.
    /// NAT-PMP only: PCP messages carry options after the fixed part, so a
    /// longer PCP message is normal.
    pub oversized: bool,
}

/// Size of the UDP header (RFC 768), as the classifiers' `u32`.
const UDP_HEADER_LEN: u32 = 8;
const _: () = assert!(UDP_HEADER_LEN as usize == headers::UdpHdr::LEN);

/// NAT-PMP version byte (RFC 6886 §3).
pub const NATPMP_VERSION: u8 = 0;
/// PCP version byte (RFC 6887 §7).
pub const PCP_VERSION: u8 = 2;
/// Size of the PCP common request/response header (RFC 6887 §7.1, §7.2).
pub const PCP_HEADER_LEN: u32 = 24;
/// Longest PCP message (RFC 6887 §7).
pub const PCP_MAX_LEN: u32 = 1100;
/// The R bit of the PCP opcode byte: set in responses (RFC 6887 §7).
pub const PCP_R_BIT: u8 = 0x80;

/// Bytes a NAT-PMP (version 0) message with `opcode` needs, or `None` for an
/// opcode RFC 6886 does not define.
///
/// Requests: §3.2 (2 bytes) and §3.3 (12 bytes). Responses: §3.2 (12 bytes)
/// and §3.3 (16 bytes); a response is the request opcode plus 128.
#[inline(always)]
pub const fn natpmp_needed_len(opcode: u8) -> Option<u32> {
    match opcode {
        0 => Some(2),
        1 | 2 | 128 => Some(12),
        129 | 130 => Some(16),
        _ => None,
    }
}

/// Bytes a PCP message with `opcode` (R bit ignored) needs: the 24-byte
/// header plus the opcode's fixed part, or `None` for an undefined opcode.
/// ANNOUNCE has no fixed part (§14.1), MAP 36 bytes (§11.1), PEER 56
/// (§12.1); requests and responses are the same size.
#[inline(always)]
pub const fn pcp_needed_len(opcode: u8) -> Option<u32> {
    match opcode & !PCP_R_BIT {
        0 => Some(PCP_HEADER_LEN),
        1 => Some(PCP_HEADER_LEN + 36),
        2 => Some(PCP_HEADER_LEN + 56),
        _ => None,
    }
}

/// Classifies a PCP (version 2) payload of `len >= 2` bytes.
///
/// The checks run in the order a PCP server applies them (RFC 6887 §8.3:
/// length first, then version, then opcode), so each datagram has exactly
/// one reason.
#[inline(always)]
const fn classify_pcp(len: u32, opcode: u8) -> Class {
    if len < PCP_HEADER_LEN {
        return Class::PcpMalformedShortHeader;
    }
    if len > PCP_MAX_LEN {
        return Class::PcpMalformedTooLong;
    }
    if !len.is_multiple_of(4) {
        return Class::PcpMalformedNotMultipleOf4;
    }
    let Some(needed) = pcp_needed_len(opcode) else {
        return Class::PcpUnsupportedOpcode;
    };
    if len < needed {
        return Class::PcpMalformedShortOpcode;
    }
    let response = opcode & PCP_R_BIT != 0;
    match (opcode & !PCP_R_BIT, response) {
        (0, false) => Class::PcpAnnounceRequest,
        (0, true) => Class::PcpAnnounceResponse,
        (1, false) => Class::PcpMapRequest,
        (1, true) => Class::PcpMapResponse,
        (_, false) => Class::PcpPeerRequest,
        (_, true) => Class::PcpPeerResponse,
    }
}

/// Classifies a UDP payload sent to or from port 5351.
///
/// `payload_len` is the payload length from the UDP length field (not the
/// frame length: Ethernet pads short frames). `version` and `opcode` are the
/// payload's first two bytes; pass 0 for bytes the payload does not have (they
/// are ignored when `payload_len` says they are absent).
///
/// Not inlined on BPF (one copy serves the staged walk's first fragments);
/// the fast path inlines [`classify_inline`], the same function.
#[cfg_attr(target_arch = "bpf", inline(never))]
pub fn classify(payload_len: u32, version: u8, opcode: u8) -> Classification {
    classify_inline(payload_len, version, opcode)
}

/// What a NAT-PMP (version 0) opcode byte is: its class and the bytes the
/// message needs ([`natpmp_needed_len`]); `needed` 0 for an undefined
/// opcode (never truncated, never oversized).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NatpmpOpcode {
    pub class: Class,
    pub needed: u32,
}

/// [`NatpmpOpcode`] for every opcode byte, built at compile time from
/// [`natpmp_needed_len`] and the class layout: the classifier's NAT-PMP
/// branch is one load from it (in `.rodata` on BPF) instead of a chain of
/// branches.
pub static NATPMP_OPCODES: [NatpmpOpcode; 256] = natpmp_opcodes();

const fn natpmp_opcodes() -> [NatpmpOpcode; 256] {
    let mut t = [NatpmpOpcode {
        class: Class::NatpmpUnsupportedOpcode,
        needed: 0,
    }; 256];
    let mut op = 0;
    while op < 256 {
        #[expect(clippy::cast_possible_truncation, reason = "op < 256")]
        let byte = op as u8;
        if let Some(needed) = natpmp_needed_len(byte) {
            // The discriminants are laid out so: opcode + 3 × response.
            let class = match (byte & 0x7f) + 3 * (byte >> 7) {
                0 => Class::NatpmpExternalAddressRequest,
                1 => Class::NatpmpMapUdpRequest,
                2 => Class::NatpmpMapTcpRequest,
                3 => Class::NatpmpExternalAddressResponse,
                4 => Class::NatpmpMapUdpResponse,
                _ => Class::NatpmpMapTcpResponse,
            };
            t[op] = NatpmpOpcode { class, needed };
        }
        op += 1;
    }
    t
}

/// [`classify`], always inlined. NAT-PMP (version 0), what scanners send,
/// is one load from [`NATPMP_OPCODES`] and two compares.
#[inline(always)]
pub fn classify_inline(payload_len: u32, version: u8, opcode: u8) -> Classification {
    // 64-bit from here on: no truncation to 32 bits after each step (the
    // BPF registers are 64-bit).
    let len = u64::from(payload_len);
    if len < 2 {
        // Not even a version and an opcode: nothing to tell apart.
        return TRUNCATED;
    }
    if version == NATPMP_VERSION {
        let op = NATPMP_OPCODES[opcode as usize];
        let needed = u64::from(op.needed);
        if len < needed {
            return TRUNCATED;
        }
        return Classification {
            class: op.class,
            oversized: needed != 0 && len > needed,
        };
    }
    let class = if version == PCP_VERSION {
        classify_pcp(payload_len, opcode)
    } else {
        Class::MalformedVersion
    };
    Classification {
        class,
        oversized: false,
    }
}

const TRUNCATED: Classification = Classification {
    class: Class::MalformedTruncated,
    oversized: false,
};

/// Classifies a UDP datagram from its header's length field and the bytes
/// the frame really holds from the start of the UDP header.
///
/// A length field below the UDP header's 8 bytes, or one that claims more
/// bytes than the frame holds, makes the datagram `malformed_truncated`
/// (RFC 768). First fragments go to [`classify_first_fragment`] instead.
///
/// Not inlined on BPF (one copy serves the staged walk); the XDP fast
/// path inlines [`classify_udp_inline`], the same function.
#[cfg_attr(target_arch = "bpf", inline(never))]
pub fn classify_udp(udp_len: u16, available: u32, version: u8, opcode: u8) -> Classification {
    classify_udp_inline(udp_len, available, version, opcode)
}

/// [`classify_udp`], always inlined.
#[inline(always)]
pub fn classify_udp_inline(
    udp_len: u16,
    available: u32,
    version: u8,
    opcode: u8,
) -> Classification {
    // In 64 bits: `udp_len >= 8` is checked, so the subtraction needs no
    // wrapping (and no masking to 32 bits on BPF).
    let udp_len = u64::from(udp_len);
    if udp_len < u64::from(UDP_HEADER_LEN) || udp_len > u64::from(available) {
        return TRUNCATED;
    }
    #[expect(clippy::cast_possible_truncation, reason = "below 65,536")]
    classify_inline(
        (udp_len - u64::from(UDP_HEADER_LEN)) as u32,
        version,
        opcode,
    )
}

/// Classifies the UDP datagram that starts in a first IP fragment (offset
/// 0, more-fragments set).
///
/// The UDP length field describes the whole datagram, which the fragment
/// only begins (RFC 791 §3.2, RFC 8200 §4.5), so a length beyond the frame
/// is expected here and the datagram is classified by that length and by
/// its first two payload bytes. Only a length below 8, or a fragment too
/// short to hold the version and opcode bytes, is `malformed_truncated`.
pub fn classify_first_fragment(
    udp_len: u16,
    available: u32,
    version: u8,
    opcode: u8,
) -> Classification {
    let udp_len = u32::from(udp_len);
    let header = UDP_HEADER_LEN;
    if udp_len < header {
        return TRUNCATED;
    }
    let payload_len = udp_len - header;
    // The fragment must hold the bytes `classify` looks at.
    if payload_len >= 2 && available < header + 2 {
        return TRUNCATED;
    }
    classify(payload_len, version, opcode)
}

/// Which way a UDP datagram on port 5351 travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// To port 5351: a request to a gateway (what WAN-side scanners send).
    ToServer,
    /// From port 5351 only: an answer from a NAT-PMP/PCP server (an upstream
    /// PCP server answers from that port), never dropped.
    FromServer,
}

/// The direction of a UDP datagram with these ports, or `None` when neither
/// is 5351 (the datagram is not NAT-PMP/PCP and passes untouched).
#[inline(always)]
pub const fn direction(src_port: u16, dst_port: u16) -> Option<Direction> {
    if dst_port == NATPMP_PORT {
        Some(Direction::ToServer)
    } else if src_port == NATPMP_PORT {
        Some(Direction::FromServer)
    } else {
        None
    }
}

/// Whether `config` drops a datagram going `direction`: drop mode drops every
/// datagram to port 5351, whatever its payload, as the JVN/NPA advisories
/// recommend; answers from port 5351 are never dropped.
#[inline(always)]
pub const fn drops(config: &Config, direction: Direction) -> bool {
    matches!(direction, Direction::ToServer) && config.drops()
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

/// Per-class counters: one entry of [`MAP_STATS`] on one CPU.
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
    /// The [`Class`] index counted, or [`Trace::UNCOUNTED`].
    pub class: u32,
    /// 1 when the oversized counter moved.
    pub oversized: u32,
    /// Frame bytes counted (0 when uncounted).
    pub bytes: u64,
    /// The sender, as [`Outcome::src`].
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
/// ([`v4_mapped`] without a byte-by-byte array).
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

// Every class has a bit in `SourceStats::classes`.
const _: () = assert!(Class::COUNT <= 32);

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
const _: () = assert!(core::mem::size_of::<FragEntry>() == 4);
const _: () = assert!(Class::ALL.len() == Class::COUNT);

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
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod walk_tests;
