//! What a NAT-PMP/PCP datagram is: the [`Class`] enum and [`CLASSES`], the
//! one table of everything known about each class (stable name, group,
//! short label, version/opcode, meaning, RFC section, what drop mode does).
//!
//! Every per-class list elsewhere (reports, docs/classes.md, the README's
//! list) is read or generated from [`CLASSES`]: to add a class, append a
//! variant to [`Class`], a row to [`CLASSES`] and raise [`Class::COUNT`];
//! the compile-time checks below and the unit tests say what else is
//! missing (`UPDATE_DOCS=1 cargo test -p nat-pmp-ebpf-common docs`
//! rewrites the generated docs).
//!
//! Depends on nothing else in the crate.

/// What a NAT-PMP/PCP datagram is, by its UDP payload (and, for the
/// [`Group::Headers`] classes, by the headers around it).
///
/// The discriminant is the index into [`MAP_STATS`](crate::MAP_STATS). The
/// names returned by [`Class::name`] are a public contract (JSON fields,
/// metric labels): add classes, never rename them. New classes are
/// appended, so indices of existing classes never move. Everything else
/// known about a class is its row of [`CLASSES`].
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

/// Which family of rows a class belongs to, in the order reports show them
/// ([`Class::DISPLAY`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Group {
    /// NAT-PMP requests (version 0, opcodes 0 to 2): what scanners send.
    NatpmpRequest,
    /// NAT-PMP responses (version 0, opcodes 128 to 130).
    NatpmpResponse,
    /// NAT-PMP with an opcode RFC 6886 does not define.
    NatpmpOther,
    /// Neither NAT-PMP nor PCP can be told: too short, or an unknown version.
    Malformed,
    /// PCP (version 2): the `pcp` aggregate and every `pcp_*` class.
    Pcp,
    /// Decided by the IP headers around the payload, not by the payload.
    Headers,
}

impl Group {
    /// Every group, in display order.
    pub const ALL: [Group; 6] = [
        Group::NatpmpRequest,
        Group::NatpmpResponse,
        Group::NatpmpOther,
        Group::Malformed,
        Group::Pcp,
        Group::Headers,
    ];

    /// The group's name, for docs and reports.
    pub const fn name(self) -> &'static str {
        match self {
            Group::NatpmpRequest => "NAT-PMP request",
            Group::NatpmpResponse => "NAT-PMP response",
            Group::NatpmpOther => "NAT-PMP other",
            Group::Malformed => "malformed",
            Group::Pcp => "PCP",
            Group::Headers => "headers",
        }
    }
}

/// Everything known about one class: a row of [`CLASSES`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClassInfo {
    /// The class this row describes (the row's index is its index).
    pub class: Class,
    /// The stable name (JSON keys, metric labels, `probe --class`): a
    /// public contract, never renamed.
    pub name: &'static str,
    /// The family of rows it is shown with.
    pub group: Group,
    /// A short label for narrow columns: at most 12 characters, unique.
    pub label: &'static str,
    /// The version and opcode bytes that make it (a response's opcode has
    /// the R bit, 128, set: PCP MAP response is `v2 op 129`), or `-` where
    /// no opcode decides it. No `|`: it goes into Markdown tables.
    pub opcode: &'static str,
    /// What it is, in one line.
    pub meaning: &'static str,
    /// The RFC section(s) that define it.
    pub rfc: &'static str,
    /// What drop mode does with it.
    pub drop_mode: &'static str,
}

/// Drop mode's answer for every datagram that is not an answer.
const DROPPED: &str = "Dropped (to 5351)";
/// Drop mode's answer for responses.
const ANSWER: &str = "Passed from 5351 (an answer); dropped to 5351";

/// The class table, in index order: the one place per-class facts are
/// written down.
pub const CLASSES: [ClassInfo; Class::COUNT] = [
    ClassInfo {
        class: Class::NatpmpExternalAddressRequest,
        name: "natpmp_external_address_request",
        group: Group::NatpmpRequest,
        label: "op0 req",
        opcode: "v0 op 0",
        meaning: "external address request",
        rfc: "RFC 6886 §3.2",
        drop_mode: DROPPED,
    },
    ClassInfo {
        class: Class::NatpmpMapUdpRequest,
        name: "natpmp_map_udp_request",
        group: Group::NatpmpRequest,
        label: "map udp req",
        opcode: "v0 op 1",
        meaning: "map UDP request",
        rfc: "RFC 6886 §3.3",
        drop_mode: DROPPED,
    },
    ClassInfo {
        class: Class::NatpmpMapTcpRequest,
        name: "natpmp_map_tcp_request",
        group: Group::NatpmpRequest,
        label: "map tcp req",
        opcode: "v0 op 2",
        meaning: "map TCP request",
        rfc: "RFC 6886 §3.3",
        drop_mode: DROPPED,
    },
    ClassInfo {
        class: Class::NatpmpExternalAddressResponse,
        name: "natpmp_external_address_response",
        group: Group::NatpmpResponse,
        label: "op0 rsp",
        opcode: "v0 op 128",
        meaning: "external address response",
        rfc: "RFC 6886 §3.2",
        drop_mode: ANSWER,
    },
    ClassInfo {
        class: Class::NatpmpMapUdpResponse,
        name: "natpmp_map_udp_response",
        group: Group::NatpmpResponse,
        label: "map udp rsp",
        opcode: "v0 op 129",
        meaning: "map UDP response",
        rfc: "RFC 6886 §3.3",
        drop_mode: ANSWER,
    },
    ClassInfo {
        class: Class::NatpmpMapTcpResponse,
        name: "natpmp_map_tcp_response",
        group: Group::NatpmpResponse,
        label: "map tcp rsp",
        opcode: "v0 op 130",
        meaning: "map TCP response",
        rfc: "RFC 6886 §3.3",
        drop_mode: ANSWER,
    },
    ClassInfo {
        class: Class::NatpmpUnsupportedOpcode,
        name: "natpmp_unsupported_opcode",
        group: Group::NatpmpOther,
        label: "op unsupp",
        opcode: "v0 other op",
        meaning: "unsupported NAT-PMP opcode",
        rfc: "RFC 6886 §3.5",
        drop_mode: DROPPED,
    },
    ClassInfo {
        class: Class::Pcp,
        name: "pcp",
        group: Group::Pcp,
        label: "pcp all",
        opcode: "v2",
        meaning: "PCP (version 2), all of the pcp_* rows",
        rfc: "RFC 6887 §7",
        drop_mode: "As its parts",
    },
    ClassInfo {
        class: Class::MalformedTruncated,
        name: "malformed_truncated",
        group: Group::Malformed,
        label: "truncated",
        opcode: "-",
        meaning: "malformed: truncated",
        rfc: "RFC 768; RFC 6886 §3",
        drop_mode: DROPPED,
    },
    ClassInfo {
        class: Class::MalformedVersion,
        name: "malformed_version",
        group: Group::Malformed,
        label: "bad version",
        opcode: "-",
        meaning: "malformed: unknown version",
        rfc: "RFC 6887 §9",
        drop_mode: DROPPED,
    },
    ClassInfo {
        class: Class::PcpAnnounceRequest,
        name: "pcp_announce_request",
        group: Group::Pcp,
        label: "pcp ann req",
        opcode: "v2 op 0",
        meaning: "PCP ANNOUNCE request",
        rfc: "RFC 6887 §14.1",
        drop_mode: DROPPED,
    },
    ClassInfo {
        class: Class::PcpAnnounceResponse,
        name: "pcp_announce_response",
        group: Group::Pcp,
        label: "pcp ann rsp",
        opcode: "v2 op 128",
        meaning: "PCP ANNOUNCE response",
        rfc: "RFC 6887 §14.1, §7.2",
        drop_mode: ANSWER,
    },
    ClassInfo {
        class: Class::PcpMapRequest,
        name: "pcp_map_request",
        group: Group::Pcp,
        label: "pcp map req",
        opcode: "v2 op 1",
        meaning: "PCP MAP request",
        rfc: "RFC 6887 §11.1",
        drop_mode: DROPPED,
    },
    ClassInfo {
        class: Class::PcpMapResponse,
        name: "pcp_map_response",
        group: Group::Pcp,
        label: "pcp map rsp",
        opcode: "v2 op 129",
        meaning: "PCP MAP response",
        rfc: "RFC 6887 §11.1",
        drop_mode: ANSWER,
    },
    ClassInfo {
        class: Class::PcpPeerRequest,
        name: "pcp_peer_request",
        group: Group::Pcp,
        label: "pcp peer req",
        opcode: "v2 op 2",
        meaning: "PCP PEER request",
        rfc: "RFC 6887 §12.1",
        drop_mode: DROPPED,
    },
    ClassInfo {
        class: Class::PcpPeerResponse,
        name: "pcp_peer_response",
        group: Group::Pcp,
        label: "pcp peer rsp",
        opcode: "v2 op 130",
        meaning: "PCP PEER response",
        rfc: "RFC 6887 §12.1",
        drop_mode: ANSWER,
    },
    ClassInfo {
        class: Class::PcpUnsupportedOpcode,
        name: "pcp_unsupported_opcode",
        group: Group::Pcp,
        label: "pcp unsupp",
        opcode: "v2 other op",
        meaning: "unsupported PCP opcode",
        rfc: "RFC 6887 §7.4 (UNSUPP_OPCODE)",
        drop_mode: DROPPED,
    },
    ClassInfo {
        class: Class::PcpMalformedShortHeader,
        name: "pcp_malformed_short_header",
        group: Group::Pcp,
        label: "pcp short hd",
        opcode: "v2",
        meaning: "malformed PCP: shorter than its header",
        rfc: "RFC 6887 §7.1, §7.2, §8.3",
        drop_mode: DROPPED,
    },
    ClassInfo {
        class: Class::PcpMalformedShortOpcode,
        name: "pcp_malformed_short_opcode",
        group: Group::Pcp,
        label: "pcp short op",
        opcode: "v2 op 1, 2",
        meaning: "malformed PCP: shorter than its opcode",
        rfc: "RFC 6887 §11.1, §12.1",
        drop_mode: DROPPED,
    },
    ClassInfo {
        class: Class::PcpMalformedTooLong,
        name: "pcp_malformed_too_long",
        group: Group::Pcp,
        label: "pcp too long",
        opcode: "v2",
        meaning: "malformed PCP: over 1,100 bytes",
        rfc: "RFC 6887 §7, §8.3",
        drop_mode: DROPPED,
    },
    ClassInfo {
        class: Class::PcpMalformedNotMultipleOf4,
        name: "pcp_malformed_not_multiple_of_4",
        group: Group::Pcp,
        label: "pcp len % 4",
        opcode: "v2",
        meaning: "malformed PCP: length not a multiple of 4",
        rfc: "RFC 6887 §7, §8.3",
        drop_mode: DROPPED,
    },
    ClassInfo {
        class: Class::FragmentNonfirst,
        name: "fragment_nonfirst",
        group: Group::Headers,
        label: "later frag",
        opcode: "-",
        meaning: "later fragment of a datagram to 5351",
        rfc: "RFC 791 §3.2; RFC 8200 §4.5",
        drop_mode: "Dropped when the first fragment went to 5351 (the datagram never \
                    reassembles); passed when it came from 5351",
    },
    ClassInfo {
        class: Class::Ipv6ExtChainTooLong,
        name: "ipv6_ext_chain_too_long",
        group: Group::Headers,
        label: "v6 ext chain",
        opcode: "-",
        meaning: "IPv6 extension chain beyond the bound",
        rfc: "RFC 8200 §4.1",
        drop_mode: "Passed (a filter must not drop what it cannot see into); the counter \
                    shows the evasion attempt",
    },
];

/// [`CLASSES`] behind a reference: a `'static` row for [`Class::info`].
const TABLE: &[ClassInfo; Class::COUNT] = &CLASSES;

/// Longest [`ClassInfo::label`].
pub const LABEL_MAX: usize = 12;

// The table is in index order (so every class has exactly one row, as the
// indices 0..COUNT are distinct), and its labels fit their columns (ASCII:
// bytes are characters).
const _: () = {
    let mut i = 0;
    while i < Class::COUNT {
        assert!(TABLE[i].class as usize == i);
        assert!(TABLE[i].label.len() <= LABEL_MAX);
        i += 1;
    }
};

// Every class has a bit in `SourceStats::classes` and `SourceSlot::classes`.
const _: () = assert!(Class::COUNT <= 32);
const _: () = assert!(Class::ALL.len() == Class::COUNT);

impl Class {
    /// Number of classes: the size of [`MAP_STATS`](crate::MAP_STATS).
    pub const COUNT: usize = 23;

    /// Every class, in index order.
    pub const ALL: [Class; Class::COUNT] = {
        let mut all = [Class::Pcp; Class::COUNT];
        let mut i = 0;
        while i < Class::COUNT {
            all[i] = TABLE[i].class;
            i += 1;
        }
        all
    };

    /// Every class in the order reports and docs show them: by [`Group`]
    /// ([`Group::ALL`]), then by index. So: the NAT-PMP requests, responses
    /// and unsupported opcodes, `malformed_*`, then `pcp` followed directly
    /// by every `pcp_*` class, then the classes the headers decide.
    pub const DISPLAY: [Class; Class::COUNT] = {
        let mut order = [Class::Pcp; Class::COUNT];
        let mut n = 0;
        let mut g = 0;
        while g < Group::ALL.len() {
            let mut i = 0;
            while i < Class::COUNT {
                if TABLE[i].group as u8 == Group::ALL[g] as u8 {
                    order[n] = TABLE[i].class;
                    n += 1;
                }
                i += 1;
            }
            g += 1;
        }
        assert!(
            n == Class::COUNT,
            "a class's group is missing from Group::ALL"
        );
        order
    };

    /// This class's row of [`CLASSES`].
    pub const fn info(self) -> &'static ClassInfo {
        &TABLE[self as usize]
    }

    /// The stable name used in JSON, metrics and reports.
    pub const fn name(self) -> &'static str {
        self.info().name
    }

    /// The short label for narrow columns ([`ClassInfo::label`]).
    pub const fn label(self) -> &'static str {
        self.info().label
    }

    /// The class's [`Group`].
    pub const fn group(self) -> Group {
        self.info().group
    }

    /// Whether a report shows this class even when it counted nothing: the
    /// three NAT-PMP requests (a honeypot's report always has their rows).
    pub const fn always_shown(self) -> bool {
        matches!(self.group(), Group::NatpmpRequest)
    }

    /// The aggregate this class is part of: [`Class::Pcp`] for every
    /// `pcp_*` class, `None` otherwise.
    pub const fn parent(self) -> Option<Class> {
        if matches!(self.group(), Group::Pcp) && !self.is_aggregate() {
            Some(Class::Pcp)
        } else {
            None
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
        matches!(self.group(), Group::Headers)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_labels_are_unique() {
        for (i, a) in CLASSES.iter().enumerate() {
            for b in &CLASSES[i + 1..] {
                assert_ne!(a.name, b.name);
                assert_ne!(a.label, b.label, "{} and {}", a.name, b.name);
            }
        }
    }

    #[test]
    fn labels_fit_their_columns() {
        for c in &CLASSES {
            let n = c.label.chars().count();
            assert!(
                (1..=LABEL_MAX).contains(&n),
                "{}: label {:?} has {n} characters",
                c.name,
                c.label
            );
        }
    }

    #[test]
    fn every_row_is_one_line() {
        for c in &CLASSES {
            for field in [c.name, c.label, c.opcode, c.meaning, c.rfc, c.drop_mode] {
                assert!(!field.is_empty() && !field.contains('\n'), "{}", c.name);
            }
        }
    }

    #[test]
    fn the_table_is_in_index_order() {
        for (i, c) in CLASSES.iter().enumerate() {
            assert_eq!(c.class.index() as usize, i);
            assert_eq!(Class::ALL[i], c.class);
            assert_eq!(c.class.info(), c);
            assert_eq!(c.class.name(), c.name);
            assert_eq!(c.class.label(), c.label);
        }
    }

    #[test]
    fn display_is_a_permutation_of_all_with_pcp_classes_after_pcp() {
        let mut sorted = Class::DISPLAY;
        sorted.sort();
        assert_eq!(sorted, Class::ALL);
        let at = |c: Class| Class::DISPLAY.iter().position(|&d| d == c).unwrap();
        let pcp = at(Class::Pcp);
        let parts: Vec<Class> = Class::ALL
            .into_iter()
            .filter(|c| c.parent() == Some(Class::Pcp))
            .collect();
        assert_eq!(parts.len(), 11);
        assert_eq!(&Class::DISPLAY[pcp + 1..=pcp + parts.len()], &parts[..]);
        for c in Class::ALL {
            assert_eq!(
                c.parent() == Some(Class::Pcp),
                c.name().starts_with("pcp_"),
                "{}",
                c.name()
            );
        }
        // Requests first, the classes the headers decide last.
        assert_eq!(
            &Class::DISPLAY[..3],
            &[
                Class::NatpmpExternalAddressRequest,
                Class::NatpmpMapUdpRequest,
                Class::NatpmpMapTcpRequest
            ]
        );
        assert_eq!(
            &Class::DISPLAY[Class::COUNT - 2..],
            &[Class::FragmentNonfirst, Class::Ipv6ExtChainTooLong]
        );
        // Groups are contiguous and in `Group::ALL` order.
        let groups: Vec<Group> = Class::DISPLAY.iter().map(|c| c.group()).collect();
        assert!(groups.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn the_three_requests_are_always_shown() {
        let shown: Vec<Class> = Class::ALL
            .into_iter()
            .filter(|c| c.always_shown())
            .collect();
        assert_eq!(
            shown,
            [
                Class::NatpmpExternalAddressRequest,
                Class::NatpmpMapUdpRequest,
                Class::NatpmpMapTcpRequest
            ]
        );
    }

    #[test]
    fn groups_agree_with_the_predicates() {
        for c in Class::ALL {
            assert_eq!(
                c.decided_by_headers(),
                matches!(c, Class::FragmentNonfirst | Class::Ipv6ExtChainTooLong)
            );
            let response = c.name().ends_with("_response");
            assert_eq!(
                c.info().drop_mode == ANSWER,
                response,
                "{}: responses, and only they, pass from 5351",
                c.name()
            );
        }
    }
}
