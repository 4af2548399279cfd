//! What a NAT-PMP/PCP datagram is: the [`Class`] enum, its stable names
//! and map indices.
//!
//! Depends on nothing else in the crate.

/// What a NAT-PMP/PCP datagram is, by its UDP payload (and, for the last
/// three, by the headers around it).
///
/// The discriminant is the index into [`MAP_STATS`](crate::MAP_STATS). The
/// names returned by [`Class::name`] are a public contract (JSON fields,
/// metric labels): add classes, never rename them. New classes are
/// appended, so indices of existing classes never move.
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
    /// by [`classify`](fn@crate::classify) and never counted by the kernel. The
    /// host fills it in as the sum of the `pcp_*` classes (see
    /// [`Class::parent`]), so the `pcp` name and JSON key keep meaning "all
    /// PCP".
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
    /// [`MAX_IPV6_EXT_HEADERS`](crate::MAX_IPV6_EXT_HEADERS): where it leads
    /// (maybe port 5351) is not known, so it is counted (whatever its port)
    /// and passed.
    Ipv6ExtChainTooLong = 22,
}

impl Class {
    /// Number of classes: the size of [`MAP_STATS`](crate::MAP_STATS).
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

// Every class has a bit in `SourceStats::classes` and `SourceSlot::classes`.
const _: () = assert!(Class::COUNT <= 32);
const _: () = assert!(Class::ALL.len() == Class::COUNT);
