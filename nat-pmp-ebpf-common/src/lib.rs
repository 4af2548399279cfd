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
#![cfg_attr(not(test), no_std)]

pub mod headers;
pub mod samples;

/// UDP port of NAT-PMP (RFC 6886 §3.1) and of PCP (RFC 6887 §19.1).
pub const NATPMP_PORT: u16 = 5351;

/// Name of the per-CPU array of [`ClassCounters`], indexed by [`Class`].
pub const MAP_STATS: &str = "NATPMP_STATS";
/// Name of the one-entry array holding the [`Config`] the agent writes.
pub const MAP_CONFIG: &str = "NATPMP_CONFIG";
/// Name of the XDP program in the object file.
pub const PROGRAM_NAME: &str = "nat_pmp";

/// What a NAT-PMP/PCP datagram is, by its UDP payload.
///
/// The discriminant is the index into [`MAP_STATS`]. The names returned by
/// [`Class::name`] are a public contract (JSON fields, metric labels): add
/// classes, never rename them.
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
    /// Version 2: PCP (RFC 6887 §7). Finer PCP classes come later.
    Pcp = 7,
    /// Fewer bytes than the version/opcode needs, a 0 or 1 byte payload, or
    /// a UDP length field that is below 8 or beyond the frame.
    MalformedTruncated = 8,
    /// A version byte other than 0 and 2 (version 1 was pre-standard and
    /// must not be used, RFC 6887 §9).
    MalformedVersion = 9,
}

impl Class {
    /// Number of classes: the size of [`MAP_STATS`].
    pub const COUNT: usize = 10;

    /// Number of classes as the map's `max_entries`.
    #[expect(clippy::cast_possible_truncation, reason = "a handful of classes")]
    pub const MAP_ENTRIES: u32 = Class::COUNT as u32;

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
        }
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
    pub oversized: bool,
}

/// NAT-PMP version byte (RFC 6886 §3).
pub const NATPMP_VERSION: u8 = 0;
/// PCP version byte (RFC 6887 §7).
pub const PCP_VERSION: u8 = 2;

/// Bytes a NAT-PMP (version 0) message with `opcode` needs, or `None` for an
/// opcode RFC 6886 does not define.
///
/// Requests: §3.2 (2 bytes) and §3.3 (12 bytes). Responses: §3.2 (12 bytes)
/// and §3.3 (16 bytes); a response is the request opcode plus 128.
pub const fn natpmp_needed_len(opcode: u8) -> Option<u32> {
    match opcode {
        0 => Some(2),
        1 | 2 | 128 => Some(12),
        129 | 130 => Some(16),
        _ => None,
    }
}

/// Classifies a UDP payload sent to or from port 5351.
///
/// `payload_len` is the payload length from the UDP length field (not the
/// frame length: Ethernet pads short frames). `version` and `opcode` are the
/// payload's first two bytes; pass 0 for bytes the payload does not have (they
/// are ignored when `payload_len` says they are absent).
pub const fn classify(payload_len: u32, version: u8, opcode: u8) -> Classification {
    let class = if payload_len < 2 {
        // Not even a version and an opcode: nothing to tell apart.
        Class::MalformedTruncated
    } else if version == PCP_VERSION {
        Class::Pcp
    } else if version != NATPMP_VERSION {
        Class::MalformedVersion
    } else {
        match natpmp_needed_len(opcode) {
            None => Class::NatpmpUnsupportedOpcode,
            Some(needed) if payload_len < needed => Class::MalformedTruncated,
            Some(needed) => {
                let class = match opcode {
                    0 => Class::NatpmpExternalAddressRequest,
                    1 => Class::NatpmpMapUdpRequest,
                    2 => Class::NatpmpMapTcpRequest,
                    128 => Class::NatpmpExternalAddressResponse,
                    129 => Class::NatpmpMapUdpResponse,
                    _ => Class::NatpmpMapTcpResponse,
                };
                return Classification {
                    class,
                    oversized: payload_len > needed,
                };
            }
        }
    };
    Classification {
        class,
        oversized: false,
    }
}

/// Classifies a UDP datagram from its header's length field and the bytes
/// the frame really holds from the start of the UDP header.
///
/// A length field below the UDP header's 8 bytes, or one that claims more
/// bytes than the frame holds, makes the datagram `malformed_truncated`
/// (RFC 768; a first IPv4 fragment looks like this too).
pub const fn classify_udp(udp_len: u16, available: u32, version: u8, opcode: u8) -> Classification {
    #[expect(clippy::cast_possible_truncation, reason = "8 fits in u32")]
    const HEADER: u32 = headers::UdpHdr::LEN as u32;
    let udp_len = udp_len as u32;
    if udp_len < HEADER || udp_len > available {
        return Classification {
            class: Class::MalformedTruncated,
            oversized: false,
        };
    }
    classify(udp_len - HEADER, version, opcode)
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

/// The program's configuration: entry 0 of [`MAP_CONFIG`].
///
/// Plain `u32` fields rather than enums, so that any bit pattern a map can
/// hold is a valid value on both sides.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// [`Mode`] as `u32`; unknown values act as [`Mode::Monitor`].
    pub mode: u32,
    /// Reserved, zero. Keeps the layout explicit and room to grow.
    pub reserved: u32,
}

impl Config {
    /// A configuration for `mode`.
    pub const fn new(mode: Mode) -> Self {
        Config {
            mode: mode as u32,
            reserved: 0,
        }
    }

    /// Whether datagrams to port 5351 are dropped.
    pub const fn drops(&self) -> bool {
        self.mode == Mode::Drop as u32
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

// The layouts above are shared with the kernel: no padding may creep in.
const _: () = assert!(core::mem::size_of::<ClassCounters>() == 40);
const _: () = assert!(core::mem::size_of::<Config>() == 8);
const _: () = assert!(Class::ALL.len() == Class::COUNT);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: `#[repr(C)]`, `Copy`, only `u64` fields: no padding, every bit
    // pattern is valid.
    unsafe impl aya::Pod for super::ClassCounters {}
    // SAFETY: `#[repr(C)]`, `Copy`, only `u32` fields: no padding, every bit
    // pattern is valid.
    unsafe impl aya::Pod for super::Config {}
}

#[cfg(test)]
mod tests;
