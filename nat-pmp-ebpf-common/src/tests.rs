//! Host unit tests of the shared classifier: every class, every boundary
//! length, the oversized rule and the UDP length rule.

use super::*;

struct Row {
    what: &'static str,
    len: u32,
    version: u8,
    opcode: u8,
    class: Class,
    oversized: bool,
}

const fn row(
    what: &'static str,
    len: u32,
    version: u8,
    opcode: u8,
    class: Class,
    oversized: bool,
) -> Row {
    Row {
        what,
        len,
        version,
        opcode,
        class,
        oversized,
    }
}

use Class::*;

const ROWS: &[Row] = &[
    row("empty payload", 0, 0, 0, MalformedTruncated, false),
    row("one byte, version 0", 1, 0, 0, MalformedTruncated, false),
    row("one byte, version 2", 1, 2, 0, MalformedTruncated, false),
    row("one byte, version 7", 1, 7, 0, MalformedTruncated, false),
    row(
        "opcode 0 exact (RFC 6886 3.2)",
        2,
        0,
        0,
        NatpmpExternalAddressRequest,
        false,
    ),
    row(
        "opcode 0, 4-byte scanner probe",
        4,
        0,
        0,
        NatpmpExternalAddressRequest,
        true,
    ),
    row("opcode 1, 11 bytes", 11, 0, 1, MalformedTruncated, false),
    row(
        "opcode 1 exact (RFC 6886 3.3)",
        12,
        0,
        1,
        NatpmpMapUdpRequest,
        false,
    ),
    row("opcode 1, 13 bytes", 13, 0, 1, NatpmpMapUdpRequest, true),
    row("opcode 2, 2 bytes", 2, 0, 2, MalformedTruncated, false),
    row("opcode 2, 11 bytes", 11, 0, 2, MalformedTruncated, false),
    row("opcode 2 exact", 12, 0, 2, NatpmpMapTcpRequest, false),
    row("opcode 2, 100 bytes", 100, 0, 2, NatpmpMapTcpRequest, true),
    row(
        "opcode 128, 11 bytes",
        11,
        0,
        128,
        MalformedTruncated,
        false,
    ),
    row(
        "opcode 128 exact",
        12,
        0,
        128,
        NatpmpExternalAddressResponse,
        false,
    ),
    row(
        "opcode 128, 16 bytes",
        16,
        0,
        128,
        NatpmpExternalAddressResponse,
        true,
    ),
    row(
        "opcode 129, 15 bytes",
        15,
        0,
        129,
        MalformedTruncated,
        false,
    ),
    row("opcode 129 exact", 16, 0, 129, NatpmpMapUdpResponse, false),
    row(
        "opcode 129, 17 bytes",
        17,
        0,
        129,
        NatpmpMapUdpResponse,
        true,
    ),
    row(
        "opcode 130, 12 bytes",
        12,
        0,
        130,
        MalformedTruncated,
        false,
    ),
    row("opcode 130 exact", 16, 0, 130, NatpmpMapTcpResponse, false),
    row(
        "opcode 130, 20 bytes",
        20,
        0,
        130,
        NatpmpMapTcpResponse,
        true,
    ),
    row(
        "opcode 3 unsupported",
        2,
        0,
        3,
        NatpmpUnsupportedOpcode,
        false,
    ),
    row(
        "opcode 127 unsupported",
        12,
        0,
        127,
        NatpmpUnsupportedOpcode,
        false,
    ),
    row(
        "opcode 131 unsupported",
        16,
        0,
        131,
        NatpmpUnsupportedOpcode,
        false,
    ),
    row(
        "opcode 255 unsupported, long",
        1000,
        0,
        255,
        NatpmpUnsupportedOpcode,
        false,
    ),
    // PCP (RFC 6887): the length checks come first (§8.3), then the opcode.
    row("PCP, 2 bytes", 2, 2, 1, PcpMalformedShortHeader, false),
    row("PCP, 20 bytes", 20, 2, 0, PcpMalformedShortHeader, false),
    row("PCP, 23 bytes", 23, 2, 0, PcpMalformedShortHeader, false),
    row(
        "PCP ANNOUNCE, 24 bytes",
        24,
        2,
        0,
        PcpAnnounceRequest,
        false,
    ),
    row(
        "PCP ANNOUNCE response",
        24,
        2,
        0x80,
        PcpAnnounceResponse,
        false,
    ),
    row(
        "PCP ANNOUNCE with an option",
        28,
        2,
        0,
        PcpAnnounceRequest,
        false,
    ),
    row(
        "PCP MAP, 56 bytes",
        56,
        2,
        1,
        PcpMalformedShortOpcode,
        false,
    ),
    row("PCP MAP, 60 bytes", 60, 2, 1, PcpMapRequest, false),
    row(
        "PCP MAP response, 60 bytes",
        60,
        2,
        0x81,
        PcpMapResponse,
        false,
    ),
    row(
        "PCP MAP response, 56 bytes",
        56,
        2,
        0x81,
        PcpMalformedShortOpcode,
        false,
    ),
    row("PCP MAP with options", 84, 2, 1, PcpMapRequest, false),
    row(
        "PCP PEER, 76 bytes",
        76,
        2,
        2,
        PcpMalformedShortOpcode,
        false,
    ),
    row("PCP PEER, 80 bytes", 80, 2, 2, PcpPeerRequest, false),
    row("PCP PEER response", 80, 2, 0x82, PcpPeerResponse, false),
    row(
        "PCP PEER response, 60 bytes",
        60,
        2,
        0x82,
        PcpMalformedShortOpcode,
        false,
    ),
    row("PCP opcode 3", 24, 2, 3, PcpUnsupportedOpcode, false),
    row(
        "PCP opcode 127 response",
        24,
        2,
        0xff,
        PcpUnsupportedOpcode,
        false,
    ),
    row(
        "PCP unknown opcode, 1100",
        1100,
        2,
        9,
        PcpUnsupportedOpcode,
        false,
    ),
    row("PCP, 1100 bytes", 1100, 2, 1, PcpMapRequest, false),
    row("PCP, 1101 bytes", 1101, 2, 1, PcpMalformedTooLong, false),
    row("PCP, 1104 bytes", 1104, 2, 1, PcpMalformedTooLong, false),
    row("PCP, 61 bytes", 61, 2, 1, PcpMalformedNotMultipleOf4, false),
    row(
        "PCP, 26 bytes, opcode 7",
        26,
        2,
        7,
        PcpMalformedNotMultipleOf4,
        false,
    ),
    row("version 1 (pre-standard)", 2, 1, 0, MalformedVersion, false),
    row("version 3", 24, 3, 0, MalformedVersion, false),
    row("version 255", 2, 255, 128, MalformedVersion, false),
];

#[test]
fn classify_table() {
    for r in ROWS {
        let got = classify(r.len, r.version, r.opcode);
        assert_eq!(
            got,
            Classification {
                class: r.class,
                oversized: r.oversized
            },
            "{}: classify(len={}, version={}, opcode={})",
            r.what,
            r.len,
            r.version,
            r.opcode
        );
    }
}

#[test]
fn every_class_is_covered_by_the_table() {
    let counted = [FragmentNonfirst, Ipv6ExtChainTooLong, Pcp];
    for class in Class::ALL.into_iter().filter(|c| !counted.contains(c)) {
        assert!(
            ROWS.iter().any(|r| r.class == class),
            "no row for {class:?}"
        );
    }
}

/// Every length from 0 to 64 for every defined opcode: below the opcode's
/// size is truncated, at it exact, above it oversized.
#[test]
fn every_boundary_length() {
    for opcode in [0u8, 1, 2, 128, 129, 130] {
        let needed = natpmp_needed_len(opcode).unwrap();
        for len in 0..64 {
            let got = classify(len, 0, opcode);
            if len < needed {
                assert_eq!(got.class, MalformedTruncated, "opcode {opcode} len {len}");
                assert!(!got.oversized);
            } else {
                assert_ne!(got.class, MalformedTruncated, "opcode {opcode} len {len}");
                assert_eq!(got.oversized, len > needed, "opcode {opcode} len {len}");
            }
        }
    }
}

#[test]
fn udp_length_rule() {
    // Below the UDP header.
    for udp_len in 0..8 {
        assert_eq!(
            classify_udp(udp_len, 100, 0, 0).class,
            MalformedTruncated,
            "udp_len {udp_len}"
        );
    }
    // Claims more than the frame holds (a first fragment does).
    assert_eq!(classify_udp(20, 19, 0, 0).class, MalformedTruncated);
    // Exactly what the frame holds.
    assert_eq!(
        classify_udp(10, 10, 0, 0).class,
        NatpmpExternalAddressRequest
    );
    // Ethernet padding after the datagram does not count.
    assert_eq!(
        classify_udp(10, 46, 0, 0),
        Classification {
            class: NatpmpExternalAddressRequest,
            oversized: false
        }
    );
    // 8-byte datagram: empty payload.
    assert_eq!(classify_udp(8, 8, 0, 0).class, MalformedTruncated);
}

#[test]
fn names_are_unique_and_round_trip() {
    for (i, class) in Class::ALL.iter().enumerate() {
        assert_eq!(class.index() as usize, i);
        assert_eq!(Class::from_index(class.index()), Some(*class));
        assert_eq!(Class::from_name(class.name()), Some(*class));
    }
    assert_eq!(
        Class::from_index(u32::try_from(Class::COUNT).unwrap()),
        None
    );
}

#[test]
fn direction_and_policy() {
    let drop = Config::new(Mode::Drop);
    let monitor = Config::new(Mode::Monitor);
    assert_eq!(direction(40000, 5351), Some(Direction::ToServer));
    assert_eq!(direction(5351, 5351), Some(Direction::ToServer));
    assert_eq!(direction(5351, 40000), Some(Direction::FromServer));
    assert_eq!(direction(53, 40000), None);
    assert!(drops(&drop, Direction::ToServer));
    assert!(!drops(&drop, Direction::FromServer));
    assert!(!drops(&monitor, Direction::ToServer));
    assert!(!drops(
        &Config {
            mode: 77,
            ..Config::default()
        },
        Direction::ToServer
    ));
}

/// Every PCP length from 0 to 1200 for every opcode byte: exactly one
/// reason per length, in RFC 6887 §8.3's order.
#[test]
fn every_pcp_boundary() {
    for opcode in 0..=255u8 {
        for len in 2..1200u32 {
            let got = classify(len, PCP_VERSION, opcode);
            assert!(!got.oversized);
            assert_eq!(got.class.parent(), Some(Pcp), "len {len} opcode {opcode}");
            let want = if len < 24 {
                PcpMalformedShortHeader
            } else if len > 1100 {
                PcpMalformedTooLong
            } else if len % 4 != 0 {
                PcpMalformedNotMultipleOf4
            } else {
                match (opcode & 0x7f, opcode >= 0x80) {
                    (1, _) if len < 60 => PcpMalformedShortOpcode,
                    (2, _) if len < 80 => PcpMalformedShortOpcode,
                    (0, false) => PcpAnnounceRequest,
                    (0, true) => PcpAnnounceResponse,
                    (1, false) => PcpMapRequest,
                    (1, true) => PcpMapResponse,
                    (2, false) => PcpPeerRequest,
                    (2, true) => PcpPeerResponse,
                    _ => PcpUnsupportedOpcode,
                }
            };
            assert_eq!(got.class, want, "len {len} opcode {opcode:#x}");
        }
    }
}

#[test]
fn first_fragment_rule() {
    // The datagram is longer than the fragment: classified by its length.
    assert_eq!(
        classify_first_fragment(8 + 60, 16, 2, 1).class,
        PcpMapRequest
    );
    assert_eq!(
        classify_first_fragment(1400, 16, 0, 1),
        Classification {
            class: NatpmpMapUdpRequest,
            oversized: true
        }
    );
    // The fragment lacks the version/opcode bytes.
    assert_eq!(
        classify_first_fragment(1400, 8, 0, 0).class,
        MalformedTruncated
    );
    assert_eq!(
        classify_first_fragment(1400, 9, 0, 0).class,
        MalformedTruncated
    );
    assert_eq!(
        classify_first_fragment(1400, 10, 0, 0).class,
        NatpmpExternalAddressRequest
    );
    // A length below the UDP header stays malformed.
    for udp_len in 0..8 {
        assert_eq!(
            classify_first_fragment(udp_len, 100, 0, 0).class,
            MalformedTruncated
        );
    }
}

#[test]
fn pcp_is_the_aggregate_of_the_pcp_classes() {
    let parts: Vec<Class> = Class::ALL
        .into_iter()
        .filter(|c| c.parent() == Some(Pcp))
        .collect();
    assert_eq!(parts.len(), 11);
    assert!(parts.iter().all(|c| c.name().starts_with("pcp_")));
    assert!(Pcp.is_aggregate());
    assert_eq!(Class::ALL.iter().filter(|c| c.is_aggregate()).count(), 1);
    // No classification ever yields the aggregate itself.
    for len in 0..1200 {
        for opcode in 0..=255u8 {
            assert_ne!(classify(len, PCP_VERSION, opcode).class, Pcp);
        }
    }
}

#[test]
fn link_round_trips_through_config() {
    let c = Config::new(Mode::Drop).with_link(Link::RawIp);
    assert_eq!((c.mode(), c.link()), (Mode::Drop, Link::RawIp));
    assert_eq!(
        Config {
            link: 9,
            ..Config::default()
        }
        .link(),
        Link::Ethernet
    );
    assert_eq!(Config::default().link(), Link::Ethernet);
}

/// The arithmetic NAT-PMP classification says what RFC 6886's table says
/// (`natpmp_needed_len` and the opcode names), for every opcode, version
/// and length.
#[test]
fn natpmp_arithmetic_matches_the_rfc_table() {
    for version in 0..=3u8 {
        for opcode in 0..=255u8 {
            for len in 0..=1200u32 {
                let want = if len < 2 {
                    Class::MalformedTruncated
                } else if version == 2 {
                    classify(len, version, opcode).class
                } else if version != 0 {
                    Class::MalformedVersion
                } else {
                    match natpmp_needed_len(opcode) {
                        None => Class::NatpmpUnsupportedOpcode,
                        Some(n) if len < n => Class::MalformedTruncated,
                        Some(_) => match opcode {
                            0 => Class::NatpmpExternalAddressRequest,
                            1 => Class::NatpmpMapUdpRequest,
                            2 => Class::NatpmpMapTcpRequest,
                            128 => Class::NatpmpExternalAddressResponse,
                            129 => Class::NatpmpMapUdpResponse,
                            130 => Class::NatpmpMapTcpResponse,
                            _ => unreachable!("natpmp_needed_len knows only these"),
                        },
                    }
                };
                let got = classify_inline(len, version, opcode);
                assert_eq!(
                    got.class, want,
                    "version {version} opcode {opcode} len {len}"
                );
                let over =
                    version == 0 && natpmp_needed_len(opcode).is_some_and(|n| len >= 2 && len > n);
                assert_eq!(
                    got.oversized, over,
                    "version {version} opcode {opcode} len {len}"
                );
            }
        }
    }
}
