//! The payload classifier: what class a UDP payload on port 5351 is
//! ([`classify`] and its variants for a UDP header and for first
//! fragments), which way a datagram travels ([`direction`]) and whether the
//! policy drops it ([`drops`]).
//!
//! Depends on [`crate::class`], [`crate::headers`] (the UDP header's size)
//! and [`crate::maps`] ([`Config`], for the policy).

use crate::{class::Class, headers, maps::Config};

/// UDP port of NAT-PMP (RFC 6886 §3.1) and of PCP (RFC 6887 §19.1).
pub const NATPMP_PORT: u16 = 5351;

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
