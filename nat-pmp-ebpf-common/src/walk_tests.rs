//! Host tests of the frame walk and the per-frame decision: every
//! encapsulation, every fragment case, the extension-header bound. The
//! kernel tests run the same kinds of frames through the XDP program.

use super::frames::*;
use super::headers::*;
use super::reference::Reference;
use super::*;

use core::cell::RefCell;

const PORT: u16 = NATPMP_PORT;

fn pcp_map() -> Vec<u8> {
    let mut p = vec![2, 1];
    p.resize(60, 0);
    p
}

/// An untagged Ethernet frame with IPv4 (`frag`, `options`) and UDP.
fn eth_udp4(frag: V4Frag, options: &[u8], sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    ethernet(
        &[],
        ETH_P_IP,
        &ipv4(IPPROTO_UDP, frag, options, &udp(sport, dport, payload)),
    )
}

/// Runs `frame` through a fresh reference in drop mode.
fn outcome(link: Link, frame: &[u8]) -> Outcome {
    Reference::new(Config::new(Mode::Drop).with_link(link)).run(frame)
}

fn class_of(link: Link, frame: &[u8]) -> Option<Class> {
    outcome(link, frame).class
}

#[test]
#[expect(clippy::too_many_lines, reason = "a table: one entry per case")]
fn encapsulations() {
    use Class::*;
    let nat = [0u8, 0];
    let e = Link::Ethernet;
    let rows: Vec<(&str, Link, Vec<u8>, Option<Class>)> = vec![
        (
            "plain IPv4",
            e,
            ethernet(&[], ETH_P_IP, &v4(&nat)),
            Some(NatpmpExternalAddressRequest),
        ),
        (
            "plain IPv6",
            e,
            ethernet(&[], ETH_P_IPV6, &v6(&pcp_map())),
            Some(PcpMapRequest),
        ),
        (
            "802.1Q",
            e,
            ethernet(&[ETH_P_8021Q], ETH_P_IP, &v4(&nat)),
            Some(NatpmpExternalAddressRequest),
        ),
        (
            "802.1ad",
            e,
            ethernet(&[ETH_P_8021AD], ETH_P_IPV6, &v6(&nat)),
            Some(NatpmpExternalAddressRequest),
        ),
        (
            "QinQ 88a8+8100",
            e,
            ethernet(&[ETH_P_8021AD, ETH_P_8021Q], ETH_P_IP, &v4(&nat)),
            Some(NatpmpExternalAddressRequest),
        ),
        (
            "QinQ 8100+88a8",
            e,
            ethernet(&[ETH_P_8021Q, ETH_P_8021AD], ETH_P_IP, &v4(&nat)),
            Some(NatpmpExternalAddressRequest),
        ),
        (
            "QinQ 8100+8100",
            e,
            ethernet(&[ETH_P_8021Q, ETH_P_8021Q], ETH_P_IPV6, &v6(&nat)),
            Some(NatpmpExternalAddressRequest),
        ),
        (
            "three tags pass",
            e,
            ethernet(&[ETH_P_8021Q; 3], ETH_P_IP, &v4(&nat)),
            None,
        ),
        (
            "PPPoE IPv4",
            e,
            ethernet_pppoe(PPP_IP, &v4(&nat)),
            Some(NatpmpExternalAddressRequest),
        ),
        (
            "PPPoE IPv6",
            e,
            ethernet_pppoe(PPP_IPV6, &v6(&pcp_map())),
            Some(PcpMapRequest),
        ),
        (
            "VLAN + PPPoE",
            e,
            ethernet(&[ETH_P_8021Q], ETH_P_PPP_SES, &pppoe(PPP_IP, &v4(&nat))),
            Some(NatpmpExternalAddressRequest),
        ),
        (
            "PPPoE IPv4, protocol field compressed (RFC 1661 6.5)",
            e,
            ethernet(&[], ETH_P_PPP_SES, &pppoe_compressed(0x21, &v4(&nat))),
            Some(NatpmpExternalAddressRequest),
        ),
        (
            "PPPoE IPv6, protocol field compressed",
            e,
            ethernet(&[], ETH_P_PPP_SES, &pppoe_compressed(0x57, &v6(&pcp_map()))),
            Some(PcpMapRequest),
        ),
        (
            "VLAN + PPPoE, protocol field compressed",
            e,
            ethernet(
                &[ETH_P_8021Q],
                ETH_P_PPP_SES,
                &pppoe_compressed(0x21, &v4(&nat)),
            ),
            Some(NatpmpExternalAddressRequest),
        ),
        (
            "PPPoE compressed LCP-range protocol passes",
            e,
            ethernet(&[], ETH_P_PPP_SES, &pppoe_compressed(0x23, &v4(&nat))),
            None,
        ),
        (
            "PPPoE LCP passes",
            e,
            ethernet_pppoe(0xc021, &v4(&nat)),
            None,
        ),
        (
            "PPPoE discovery passes",
            e,
            ethernet(&[], 0x8863, &pppoe(PPP_IP, &v4(&nat))),
            None,
        ),
        (
            "PPPoE code != 0 passes",
            e,
            {
                let mut f = ethernet_pppoe(PPP_IP, &v4(&nat));
                f[15] = 9;
                f
            },
            None,
        ),
        (
            "raw IPv4",
            Link::RawIp,
            v4(&nat),
            Some(NatpmpExternalAddressRequest),
        ),
        (
            "raw IPv6",
            Link::RawIp,
            v6(&nat),
            Some(NatpmpExternalAddressRequest),
        ),
        (
            "raw version 5 passes",
            Link::RawIp,
            {
                let mut f = v4(&nat);
                f[0] = 0x55;
                f
            },
            None,
        ),
        (
            "raw link, Ethernet frame passes",
            Link::RawIp,
            ethernet(&[], ETH_P_IP, &v4(&nat)),
            None,
        ),
        (
            "IPv4 header says version 6",
            e,
            {
                let mut f = ethernet(&[], ETH_P_IP, &v4(&nat));
                f[14] = 0x65;
                f
            },
            None,
        ),
        (
            "IHL 15",
            e,
            ethernet(
                &[],
                ETH_P_IP,
                &ipv4(
                    IPPROTO_UDP,
                    V4Frag::default(),
                    &[1; 40],
                    &udp(1, PORT, &nat),
                ),
            ),
            Some(NatpmpExternalAddressRequest),
        ),
        (
            "IPv4 in IPv6",
            e,
            ethernet(&[], ETH_P_IPV6, &ipv6(IPPROTO_IPIP, &v4(&nat))),
            Some(NatpmpExternalAddressRequest),
        ),
        (
            "IPv4 in IPv6 over PPPoE",
            e,
            ethernet_pppoe(PPP_IPV6, &ipv6(IPPROTO_IPIP, &v4(&pcp_map()))),
            Some(PcpMapRequest),
        ),
        (
            "IPv4 in IPv6 after a dest-opts header",
            e,
            ethernet(
                &[],
                ETH_P_IPV6,
                &ipv6(IPPROTO_DSTOPTS, &ext(IPPROTO_IPIP, 0, &v4(&nat))),
            ),
            Some(NatpmpExternalAddressRequest),
        ),
        (
            "IPv6 in IPv6 passes",
            e,
            ethernet(&[], ETH_P_IPV6, &ipv6(41, &v6(&nat))),
            None,
        ),
        (
            "IPv4 in IPv4 passes",
            e,
            ethernet(
                &[],
                ETH_P_IP,
                &ipv4(IPPROTO_IPIP, V4Frag::default(), &[], &v4(&nat)),
            ),
            None,
        ),
        (
            "HBH + routing + dest opts",
            e,
            ethernet(
                &[],
                ETH_P_IPV6,
                &ipv6(
                    IPPROTO_HOPOPTS,
                    &ext(
                        IPPROTO_ROUTING,
                        1,
                        &ext(
                            IPPROTO_DSTOPTS,
                            0,
                            &ext(IPPROTO_UDP, 0, &udp(1, PORT, &nat)),
                        ),
                    ),
                ),
            ),
            Some(NatpmpExternalAddressRequest),
        ),
        (
            "big extension header (2048 bytes)",
            e,
            ethernet(
                &[],
                ETH_P_IPV6,
                &ipv6(IPPROTO_DSTOPTS, &ext(IPPROTO_UDP, 255, &udp(1, PORT, &nat))),
            ),
            Some(NatpmpExternalAddressRequest),
        ),
        (
            "answer through QinQ PPPoE",
            e,
            ethernet(
                &[ETH_P_8021AD, ETH_P_8021Q],
                ETH_P_PPP_SES,
                &pppoe(
                    PPP_IPV6,
                    &ipv6(
                        IPPROTO_UDP,
                        &udp(PORT, 40000, &[0, 128, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4]),
                    ),
                ),
            ),
            Some(NatpmpExternalAddressResponse),
        ),
    ];
    for (what, link, frame, want) in rows {
        assert_eq!(class_of(link, &frame), want, "{what}: {frame:02x?}");
    }
}

/// A chain of `n` destination-options headers before UDP.
fn chain(n: usize) -> Vec<u8> {
    let mut body = udp(40000, PORT, &[0, 0]);
    let mut next = IPPROTO_UDP;
    for _ in 0..n {
        body = ext(next, 0, &body);
        next = IPPROTO_DSTOPTS;
    }
    ethernet(&[], ETH_P_IPV6, &ipv6(next, &body))
}

#[test]
fn extension_header_bound() {
    for n in 0..=MAX_IPV6_EXT_HEADERS {
        let o = outcome(Link::Ethernet, &chain(n));
        assert_eq!(
            o.class,
            Some(Class::NatpmpExternalAddressRequest),
            "{n} headers"
        );
        assert!(o.drop);
    }
    for n in MAX_IPV6_EXT_HEADERS + 1..MAX_IPV6_EXT_HEADERS + 4 {
        let o = outcome(Link::Ethernet, &chain(n));
        assert_eq!(o.class, Some(Class::Ipv6ExtChainTooLong), "{n} headers");
        assert!(
            !o.drop,
            "a chain too long to see through is counted, not dropped"
        );
    }
}

#[test]
fn ipv4_fragments() {
    let mut r = Reference::new(Config::new(Mode::Drop));
    // A 1400-byte MAP request split in two: the first fragment holds the
    // UDP header and the start of the payload.
    let mut payload = vec![0u8, 1];
    payload.resize(1400, 0);
    let datagram = udp(40000, PORT, &payload);
    let first = ipv4(IPPROTO_UDP, V4Frag::first(7), &[], &datagram[..800]);
    let second = ipv4(IPPROTO_UDP, V4Frag::later(7, 100), &[], &datagram[800..]);
    let other_id = ipv4(IPPROTO_UDP, V4Frag::later(8, 100), &[], &datagram[800..]);
    // The later fragment before its first is unknown: it passes uncounted.
    assert_eq!(r.run(&ethernet(&[], ETH_P_IP, &second)).class, None);
    let o = r.run(&ethernet(&[], ETH_P_IP, &first));
    assert_eq!(
        (o.class, o.oversized, o.drop),
        (Some(Class::NatpmpMapUdpRequest), true, true)
    );
    let o = r.run(&ethernet(&[], ETH_P_IP, &second));
    assert_eq!((o.class, o.drop), (Some(Class::FragmentNonfirst), true));
    assert_eq!(r.run(&ethernet(&[], ETH_P_IP, &other_id)).class, None);
    // A later fragment whose payload looks like a UDP header to 5351 is
    // never read as one.
    let fake = ipv4(
        IPPROTO_UDP,
        V4Frag {
            id: 9,
            offset: 3,
            more: true,
        },
        &[],
        &udp(1, PORT, &[0, 0]),
    );
    assert_eq!(r.run(&ethernet(&[], ETH_P_IP, &fake)).class, None);
    // Answers from 5351 are remembered as answers: counted, never dropped.
    let answer = udp(PORT, 40000, &payload);
    let a1 = ipv4(IPPROTO_UDP, V4Frag::first(10), &[], &answer[..800]);
    let a2 = ipv4(IPPROTO_UDP, V4Frag::later(10, 100), &[], &answer[800..]);
    assert!(!r.run(&ethernet(&[], ETH_P_IP, &a1)).drop);
    let o = r.run(&ethernet(&[], ETH_P_IP, &a2));
    assert_eq!((o.class, o.drop), (Some(Class::FragmentNonfirst), false));
}

#[test]
fn ipv6_fragments() {
    let mut r = Reference::new(Config::new(Mode::Drop));
    let mut payload = vec![2u8, 1];
    payload.resize(1100, 0);
    let datagram = udp(40000, PORT, &payload);
    let first = ipv6(
        FRAGMENT,
        &frag6(IPPROTO_UDP, 0, true, 0xdead, &datagram[..512]),
    );
    let second = ipv6(
        FRAGMENT,
        &frag6(IPPROTO_UDP, 64, false, 0xdead, &datagram[512..]),
    );
    let o = r.run(&ethernet(&[], ETH_P_IPV6, &first));
    assert_eq!((o.class, o.drop), (Some(Class::PcpMapRequest), true));
    let o = r.run(&ethernet(&[], ETH_P_IPV6, &second));
    assert_eq!((o.class, o.drop), (Some(Class::FragmentNonfirst), true));
    // An atomic fragment (offset 0, M clear) is a whole datagram.
    let atomic = ipv6(
        FRAGMENT,
        &frag6(IPPROTO_UDP, 0, false, 1, &udp(1, PORT, &[0, 0])),
    );
    assert_eq!(
        r.run(&ethernet(&[], ETH_P_IPV6, &atomic)).class,
        Some(Class::NatpmpExternalAddressRequest)
    );
    // Fragmented IPv4 in IPv6 (DS-Lite): the outer fragments carry the key.
    let inner = v4(&payload);
    let f1 = ipv6(FRAGMENT, &frag6(IPPROTO_IPIP, 0, true, 5, &inner[..600]));
    let f2 = ipv6(FRAGMENT, &frag6(IPPROTO_IPIP, 75, false, 5, &inner[600..]));
    assert_eq!(
        r.run(&ethernet(&[], ETH_P_IPV6, &f1)).class,
        Some(Class::PcpMapRequest)
    );
    assert_eq!(
        r.run(&ethernet(&[], ETH_P_IPV6, &f2)).class,
        Some(Class::FragmentNonfirst)
    );
}

/// A PCP MAP request's payload of 1,100 bytes, zeros after its version and
/// opcode: long enough to be fragmented, and zero wherever a misplaced read
/// of the fragment key's addresses could land.
fn long_pcp_payload() -> Vec<u8> {
    let mut payload = vec![2u8, 1];
    payload.resize(1100, 0);
    payload
}

/// [`long_pcp_payload`] in a UDP datagram to port 5351.
fn long_pcp_datagram() -> Vec<u8> {
    udp(40000, PORT, &long_pcp_payload())
}

/// An IPv6 address other than [`V6_SRC`] and [`V6_DST`]: `2001:db8::9`.
const V6_OTHER: [u8; 16] = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9];

/// An Ethernet frame holding an IPv6 fragment from `src` to `dst` of
/// datagram `id` whose fragmentable part starts with `next`.
fn eth_frag6(src: [u8; 16], dst: [u8; 16], frag: (u8, u16, bool, u32), body: &[u8]) -> Vec<u8> {
    let (next, offset, more, id) = frag;
    ethernet(
        &[],
        ETH_P_IPV6,
        &ipv6_between(src, dst, FRAGMENT, &frag6(next, offset, more, id, body)),
    )
}

/// RFC 8200 §4.5: the fragments of one IPv6 datagram share source,
/// destination and identification. A later fragment with the identification
/// of a datagram whose first fragment went to 5351, but from another source
/// or to another destination, is not that datagram's: it passes uncounted
/// and does not take the first fragment's class, verdict or sender.
#[test]
fn ipv6_fragments_of_other_addresses_are_not_joined() {
    let datagram = long_pcp_datagram();
    let first = eth_frag6(
        V6_SRC,
        V6_DST,
        (IPPROTO_UDP, 0, true, 0xdead),
        &datagram[..512],
    );
    let later = |src, dst| eth_frag6(src, dst, (IPPROTO_UDP, 64, false, 0xdead), &datagram[512..]);
    for (what, src, dst) in [
        ("from another source", V6_OTHER, V6_DST),
        ("to another destination", V6_SRC, V6_OTHER),
    ] {
        let mut r = Reference::new(Config::new(Mode::Drop));
        let o = r.run(&first);
        assert_eq!((o.class, o.drop), (Some(Class::PcpMapRequest), true));
        assert_eq!(
            r.run(&later(src, dst)),
            Outcome::PASS,
            "a later fragment {what}"
        );
        let own = r.run(&later(V6_SRC, V6_DST));
        assert_eq!(
            (own.class, own.drop, own.source()),
            (Some(Class::FragmentNonfirst), true, V6_SRC),
            "the datagram's own later fragment, after one {what}"
        );
    }
}

/// IPv4 in IPv6 (DS-Lite, MAP-E) fragmented by the tunnel: a later fragment
/// holds no IPv4 header, so it is keyed by its IPv6 header like any IPv6
/// fragment, with protocol 4. It counts as a later fragment of the datagram
/// whose first fragment went to 5351, for that datagram's sender: the inner
/// IPv4 one the first fragment named (the later fragment carries only the
/// tunnel's IPv6 source). Another tunnel endpoint's fragment with the same
/// identification, and UDP or TCP fragments with it, are not that
/// datagram's.
#[test]
fn later_fragments_of_ipv4_in_ipv6() {
    let inner = v4(&long_pcp_payload());
    let mut r = Reference::new(Config::new(Mode::Drop));
    let o = r.run(&eth_frag6(
        V6_SRC,
        V6_DST,
        (IPPROTO_IPIP, 0, true, 5),
        &inner[..600],
    ));
    assert_eq!(
        (o.class, o.drop, o.source()),
        (Some(Class::PcpMapRequest), true, v4_mapped(V4_SRC))
    );
    let later = |src, next| eth_frag6(src, V6_DST, (next, 75, false, 5), &inner[600..]);
    for (what, frame) in [
        ("another endpoint's", later(V6_OTHER, IPPROTO_IPIP)),
        ("a UDP fragment's", later(V6_SRC, IPPROTO_UDP)),
        ("a TCP fragment's", later(V6_SRC, IPPROTO_TCP)),
    ] {
        assert_eq!(r.run(&frame), Outcome::PASS, "{what}");
    }
    let own = r.run(&later(V6_SRC, IPPROTO_IPIP));
    assert_eq!(
        (own.class, own.drop, own.source()),
        (Some(Class::FragmentNonfirst), true, v4_mapped(V4_SRC))
    );
}

/// The allowlist judges a datagram's later fragments by the sender its
/// first fragment named: an allowlisted DS-Lite client's fragmented
/// request passes whole in drop mode (its later fragments carry only the
/// tunnel's IPv6 source, which is not allowlisted), and the same request
/// from a client that is not allowlisted is dropped whole.
#[test]
fn an_allowlisted_senders_later_fragments_pass_with_its_first() {
    let inner = v4(&long_pcp_payload());
    let first = eth_frag6(V6_SRC, V6_DST, (IPPROTO_IPIP, 0, true, 5), &inner[..600]);
    let later = eth_frag6(V6_SRC, V6_DST, (IPPROTO_IPIP, 75, false, 5), &inner[600..]);
    let mut config = Config::new(Mode::Drop);
    config.allow_prefixes = 1;
    for (allowed, prefix) in [
        (true, v4_mapped(V4_SRC)),
        (false, v4_mapped([203, 0, 113, 9])),
    ] {
        let mut r = Reference::new(config);
        r.allow.0 = vec![Prefix::new(prefix, 128)];
        let o = [r.run(&first), r.run(&later)];
        for (what, o) in ["first", "later"].iter().zip(o) {
            assert_eq!(
                (o.drop, o.allowed, o.source()),
                (!allowed, allowed, v4_mapped(V4_SRC)),
                "the {what} fragment, sender allowlisted: {allowed}"
            );
        }
        assert_eq!(o[1].class, Some(Class::FragmentNonfirst));
    }
}

/// RFC 8200 §4.5: the fragmentable part may start with extension headers
/// (destination options). A first fragment's walk goes on through them to
/// its UDP header, and the key names the protocol found there.
#[test]
fn a_first_fragment_is_walked_past_its_fragment_header() {
    let datagram = long_pcp_datagram();
    let first = eth_frag6(
        V6_SRC,
        V6_DST,
        (IPPROTO_DSTOPTS, 0, true, 3),
        &ext(IPPROTO_UDP, 0, &datagram[..504]),
    );
    let w = walk(first.as_slice(), Link::Ethernet);
    assert_eq!((w.found, w.key.proto), (Found::FirstFragment, IPPROTO_UDP));
    let o = outcome(Link::Ethernet, &first);
    assert_eq!((o.class, o.drop), (Some(Class::PcpMapRequest), true));
}

/// The fragment table's key as the walk builds it, field by field: the key
/// of the kernel's fragment map (which the agent lists), documented in
/// `maps.rs` (RFC 791 §3.2, RFC 8200 §4.5): addresses, identification,
/// family (4 or 6) and the protocol the datagram carries (17, or 4 for
/// IPv4 in IPv6). First and later fragments of a datagram share it.
#[test]
fn fragment_keys_hold_addresses_id_family_and_protocol() {
    let first16 = |a: &[u8]| {
        let mut k = [0u8; 16];
        k[..a.len()].copy_from_slice(a);
        k
    };
    let key = |src: &[u8], dst: &[u8], id: [u8; 4], ip_version, proto| FragKey {
        src: first16(src),
        dst: first16(dst),
        id,
        ip_version,
        proto,
        pad: [0; 2],
    };
    let datagram = long_pcp_datagram();
    let v4_key = key(&V4_SRC, &V4_DST, [0, 0, 0, 7], 4, IPPROTO_UDP);
    let v6_key = key(&V6_SRC, &V6_DST, [0, 0, 0xde, 0xad], 6, IPPROTO_UDP);
    let tunnel_key = key(&V6_SRC, &V6_DST, [0, 0, 0, 5], 6, IPPROTO_IPIP);
    let inner = v4(&long_pcp_payload());
    let v4_frag = |frag, body: &[u8]| ethernet(&[], ETH_P_IP, &ipv4(IPPROTO_UDP, frag, &[], body));
    let rows = [
        (
            v4_frag(V4Frag::first(7), &datagram[..512]),
            Found::FirstFragment,
            v4_key,
        ),
        (
            v4_frag(V4Frag::later(7, 64), &datagram[512..]),
            Found::LaterFragment,
            v4_key,
        ),
        (
            eth_frag6(
                V6_SRC,
                V6_DST,
                (IPPROTO_UDP, 0, true, 0xdead),
                &datagram[..512],
            ),
            Found::FirstFragment,
            v6_key,
        ),
        (
            eth_frag6(
                V6_SRC,
                V6_DST,
                (IPPROTO_UDP, 64, false, 0xdead),
                &datagram[512..],
            ),
            Found::LaterFragment,
            v6_key,
        ),
        (
            eth_frag6(V6_SRC, V6_DST, (IPPROTO_IPIP, 0, true, 5), &inner[..600]),
            Found::FirstFragment,
            tunnel_key,
        ),
        (
            eth_frag6(V6_SRC, V6_DST, (IPPROTO_IPIP, 75, false, 5), &inner[600..]),
            Found::LaterFragment,
            tunnel_key,
        ),
    ];
    for (i, (frame, found, key)) in rows.iter().enumerate() {
        let w = walk(frame.as_slice(), Link::Ethernet);
        assert_eq!((w.found, w.key), (*found, *key), "row {i}");
    }
}

#[test]
fn first_fragment_too_short_for_the_opcode() {
    let datagram = udp(40000, PORT, &[0u8; 100]);
    let first = ipv4(IPPROTO_UDP, V4Frag::first(1), &[], &datagram[..8]);
    assert_eq!(
        class_of(Link::Ethernet, &ethernet(&[], ETH_P_IP, &first)),
        Some(Class::MalformedTruncated)
    );
}

/// The payload bytes a well-formed message of `class` needs: RFC 6886 §3.2,
/// §3.3 and RFC 6887 §7, §11.1, §12.1, §14.1, written out again here rather
/// than taken from the classifier, so that they judge it.
fn rfc_min_payload(class: Class) -> Option<usize> {
    use Class::*;
    match class {
        NatpmpExternalAddressRequest => Some(2),
        NatpmpMapUdpRequest | NatpmpMapTcpRequest | NatpmpExternalAddressResponse => Some(12),
        NatpmpMapUdpResponse | NatpmpMapTcpResponse => Some(16),
        PcpAnnounceRequest | PcpAnnounceResponse => Some(24),
        PcpMapRequest | PcpMapResponse => Some(24 + 36),
        PcpPeerRequest | PcpPeerResponse => Some(24 + 56),
        _ => None,
    }
}

/// Every prefix of every kind of frame: the walk never reads past the end
/// (the slice reader would panic) and a cut frame is never counted as more
/// than what its bytes show: a well-formed class only when the payload
/// bytes actually present (known from how the frame was built: the payload
/// is its tail) are as many as the RFCs require, and never the class of the
/// whole frame once a byte of its payload is gone. (`bytes == cut` alone
/// held by construction: the reference counts the frame's length.)
#[test]
fn every_truncation_is_safe() {
    let nat_map = [0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    let frames = [
        (
            ethernet(
                &[ETH_P_8021AD, ETH_P_8021Q],
                ETH_P_PPP_SES,
                &pppoe(
                    PPP_IPV6,
                    &ipv6(IPPROTO_HOPOPTS, &ext(IPPROTO_IPIP, 1, &v4(&pcp_map()))),
                ),
            ),
            pcp_map().len(),
            Some(Class::PcpMapRequest),
        ),
        (
            chain(MAX_IPV6_EXT_HEADERS),
            2,
            Some(Class::NatpmpExternalAddressRequest),
        ),
        (
            eth_udp4(V4Frag::default(), &[1; 12], 1, PORT, &nat_map),
            nat_map.len(),
            Some(Class::NatpmpMapUdpRequest),
        ),
    ];
    for (f, payload_len, whole) in &frames {
        assert_eq!(outcome(Link::Ethernet, f).class, *whole, "the uncut frame");
        let payload_at = f.len() - payload_len;
        for cut in 0..=f.len() {
            let o = outcome(Link::Ethernet, &f[..cut]);
            assert_eq!(o.bytes, if o.class.is_some() { cut as u64 } else { 0 });
            let shown = cut.saturating_sub(payload_at);
            if let Some(min) = o.class.and_then(rfc_min_payload) {
                assert!(
                    shown >= min,
                    "cut at {cut}: {:?} with {shown} payload bytes shown, {min} needed",
                    o.class
                );
            }
            if cut < f.len() && whole.is_some() {
                assert_ne!(o.class, *whole, "cut at {cut} of {}", f.len());
            }
        }
    }
}

/// An example frame (or frames: the class is that of the last) per class.
fn doc_example(class: Class) -> Vec<Vec<u8>> {
    let eth4 = |p: &[u8]| ethernet(&[], ETH_P_IP, &v4(p));
    let payload = |c: Class| -> Vec<u8> {
        match c {
            Class::NatpmpExternalAddressRequest => vec![0, 0],
            Class::NatpmpMapUdpRequest => {
                vec![0, 1, 0, 0, 0x13, 0x88, 0x13, 0x88, 0, 0, 0x1c, 0x20]
            }
            Class::NatpmpMapTcpRequest => {
                vec![0, 2, 0, 0, 0x13, 0x88, 0x13, 0x88, 0, 0, 0x1c, 0x20]
            }
            Class::NatpmpExternalAddressResponse => vec![0, 128, 0, 0, 0, 0, 0, 60, 198, 18, 0, 1],
            Class::NatpmpMapUdpResponse => vec![
                0, 129, 0, 0, 0, 0, 0, 60, 0x13, 0x88, 0x13, 0x88, 0, 0, 0x1c, 0x20,
            ],
            Class::NatpmpMapTcpResponse => vec![
                0, 130, 0, 0, 0, 0, 0, 60, 0x13, 0x88, 0x13, 0x88, 0, 0, 0x1c, 0x20,
            ],
            Class::NatpmpUnsupportedOpcode => vec![0, 3],
            Class::MalformedTruncated => vec![0, 1, 0, 0],
            Class::MalformedVersion => vec![1, 0],
            Class::Pcp | Class::PcpAnnounceRequest => pcp(0, 24),
            Class::PcpAnnounceResponse => pcp(0x80, 24),
            Class::PcpMapRequest => pcp(1, 60),
            Class::PcpMapResponse => pcp(0x81, 60),
            Class::PcpPeerRequest => pcp(2, 80),
            Class::PcpPeerResponse => pcp(0x82, 80),
            Class::PcpUnsupportedOpcode => pcp(3, 24),
            Class::PcpMalformedShortHeader => vec![2, 1, 0, 0],
            Class::PcpMalformedShortOpcode => pcp(1, 24),
            Class::PcpMalformedTooLong => pcp(0, 1104),
            Class::PcpMalformedNotMultipleOf4 => pcp(0, 26),
            Class::FragmentNonfirst | Class::Ipv6ExtChainTooLong => vec![],
        }
    };
    match class {
        Class::FragmentNonfirst => {
            let d = udp(40000, PORT, &payload(Class::NatpmpMapUdpRequest));
            let mut big = d.clone();
            big.resize(24, 0);
            big[4..6].copy_from_slice(&24u16.to_be_bytes());
            vec![
                ethernet(
                    &[],
                    ETH_P_IP,
                    &ipv4(IPPROTO_UDP, V4Frag::first(0x1234), &[], &big[..16]),
                ),
                ethernet(
                    &[],
                    ETH_P_IP,
                    &ipv4(IPPROTO_UDP, V4Frag::later(0x1234, 2), &[], &big[16..]),
                ),
            ]
        }
        Class::Ipv6ExtChainTooLong => {
            let mut body = udp(40000, PORT, &[0, 0]);
            let mut next = IPPROTO_UDP;
            for _ in 0..=MAX_IPV6_EXT_HEADERS {
                body = ext(next, 0, &body);
                next = IPPROTO_DSTOPTS;
            }
            vec![ethernet(&[], ETH_P_IPV6, &ipv6(next, &body))]
        }
        Class::NatpmpExternalAddressResponse
        | Class::NatpmpMapUdpResponse
        | Class::NatpmpMapTcpResponse
        | Class::PcpAnnounceResponse
        | Class::PcpMapResponse
        | Class::PcpPeerResponse => vec![ethernet(&[], ETH_P_IP, &v4_answer(&payload(class)))],
        _ => vec![eth4(&payload(class))],
    }
}

fn pcp(opcode: u8, len: usize) -> Vec<u8> {
    let mut p = vec![2, opcode];
    p.resize(len, 0);
    p
}

fn hex_lines(f: &[u8]) -> String {
    f.chunks(16)
        .map(|c| {
            c.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Prints the examples of docs/classes.md (`cargo test -p
/// nat-pmp-ebpf-common print_doc_examples -- --ignored --nocapture`).
#[test]
#[ignore = "prints the docs' example frames"]
fn print_doc_examples() {
    for class in Class::ALL {
        println!("### {}", class.name());
        for f in doc_example(class) {
            println!("```text\n{}\n```", hex_lines(&f));
        }
    }
}

/// Every example frame in docs/classes.md is what its heading says.
#[test]
fn docs_classes_examples_are_their_class() {
    let doc = include_str!("../../docs/classes.md");
    let mut seen = Vec::new();
    for (name, frames) in crate::fuzzing::doc_examples(doc) {
        let name = name.as_str();
        let class = Class::from_name(name).unwrap_or_else(|| panic!("unknown class {name}"));
        let mut r = Reference::new(Config::new(Mode::Drop));
        let mut last = None;
        for frame in &frames {
            last = Some(r.run(frame));
        }
        let got = last
            .unwrap_or_else(|| panic!("{name}: no example frame"))
            .class;
        if class.is_aggregate() {
            assert_eq!(got.and_then(Class::parent), Some(class), "{name}");
        } else {
            assert_eq!(got, Some(class), "{name}");
        }
        seen.push(class);
    }
    for class in Class::ALL {
        assert!(
            seen.contains(&class),
            "docs/classes.md lacks {}",
            class.name()
        );
    }
}

/// The fast path (inlined in the XDP program for untagged IPv4 and plainly
/// non-NAT-PMP frames) must answer exactly as the staged walk alone: every
/// class's example frame, IPv4 with options and from port 5351, fragments,
/// IPv6, tags, and a few hundred thousand cut and mutated copies of them,
/// in monitor and drop mode, with and without the sender allowlisted.
#[test]
fn fast_path_agrees_with_the_staged_walk() {
    let mut seeds: Vec<Vec<u8>> = Class::ALL.iter().flat_map(|&c| doc_example(c)).collect();
    let map = [0u8, 1, 0, 0, 0x13, 0x88, 0x13, 0x88, 0, 0, 0x1c, 0x20];
    let first = V4Frag::first(7);
    seeds.extend([
        eth_udp4(V4Frag::default(), &[1; 12], 1, PORT, &map),
        eth_udp4(V4Frag::default(), &[], PORT, 40000, &map),
        eth_udp4(V4Frag::default(), &[], 53, 40000, &map),
        eth_udp4(first, &[], 1, PORT, &map),
        ethernet(&[], ETH_P_IPV6, &v6(&pcp_map())),
        ethernet(&[ETH_P_8021Q], ETH_P_IP, &v4(&[0, 0])),
        ethernet(&[ETH_P_8021AD, ETH_P_8021Q], ETH_P_IPV6, &v6(&[0, 1])),
        ethernet(
            &[ETH_P_8021Q, ETH_P_8021Q, ETH_P_8021Q],
            ETH_P_IP,
            &v4(&[0, 0]),
        ),
        ethernet_pppoe(PPP_IP, &v4(&[0, 0])),
        ethernet_pppoe(PPP_IPV6, &v6(&[0, 0])),
        ethernet(&[], ETH_P_PPP_SES, &pppoe_compressed(0x21, &v4(&[0, 0]))),
        ethernet(&[], ETH_P_PPP_SES, &pppoe_compressed(0x57, &v6(&map))),
        ethernet(
            &[ETH_P_8021Q],
            ETH_P_PPP_SES,
            &pppoe_compressed(0x21, &v4(&map)),
        ),
        v4(&[0, 0]),
        v6(&pcp_map()),
    ]);
    let mut allowed = Config::new(Mode::Drop);
    allowed.allow_prefixes = 1;
    let configs = [
        Config::new(Mode::Monitor),
        Config::new(Mode::Drop),
        allowed,
        Config::new(Mode::Drop).with_link(Link::RawIp),
    ];
    let mut checked = 0u64;
    let check = |frame: &[u8]| {
        for config in &configs {
            let allow = if config.allow_prefixes == 0 {
                Vec::new()
            } else {
                vec![Prefix::new(v4_mapped(V4_SRC), 128)]
            };
            let fast = decide(
                frame,
                config,
                &mut reference::HostFrags::default(),
                &mut reference::HostAllow(allow.clone()),
            );
            let staged = decide_slow(
                frame,
                config,
                &mut reference::HostFrags::default(),
                &mut reference::HostAllow(allow),
            );
            assert_eq!(fast, staged, "config {config:?}, frame {frame:02x?}");
            checked += 1;
        }
    };
    mutations(&seeds, 0x9e37_79b9_7f4a_7c15, &[], check);
    assert!(checked > 1_000_000, "{checked} comparisons");
}

/// A frame that records where the walk looked: each window and each read,
/// as (offset, length).
struct Recorder<'a> {
    frame: &'a [u8],
    windows: RefCell<Vec<(usize, usize)>>,
    reads: RefCell<Vec<(usize, usize)>>,
}

impl<'a> Recorder<'a> {
    fn new(frame: &'a [u8]) -> Self {
        Recorder {
            frame,
            windows: RefCell::default(),
            reads: RefCell::default(),
        }
    }

    /// The windows asked for at `off`.
    fn windows_at(&self, off: usize) -> Vec<(usize, usize)> {
        self.windows
            .borrow()
            .iter()
            .copied()
            .filter(|w| w.0 == off)
            .collect()
    }
}

impl Bytes for Recorder<'_> {
    type Win<'b>
        = walk::SliceWindow<'b>
    where
        Self: 'b;

    fn frame_len(&self) -> usize {
        self.frame.len()
    }

    fn read<T: walk::Plain>(&self, off: usize) -> Option<T> {
        self.reads
            .borrow_mut()
            .push((off, core::mem::size_of::<T>()));
        self.frame.read(off)
    }

    fn window(&self, off: usize, len: usize) -> Option<walk::SliceWindow<'_>> {
        self.windows.borrow_mut().push((off, len));
        self.frame.window(off, len)
    }
}

/// What the fast path is for: an IPv4 datagram without options is checked
/// with one window over its IP and UDP headers (20 + 8 bytes at the IP
/// offset) and decided without the staged walk (no read). The two paths
/// answer alike (`fast_path_agrees_with_the_staged_walk`), so only where
/// the walk looked tells that the fast one was taken; with options, the
/// fixed header and the UDP header are checked apart.
#[test]
fn an_ipv4_datagram_without_options_is_checked_with_one_window() {
    let config = Config::new(Mode::Drop);
    for (options, at_ip) in [
        (&[][..], vec![(14, 28)]),
        (&[1; 4][..], vec![(14, 28), (14, 20)]),
    ] {
        let frame = eth_udp4(V4Frag::default(), options, 40000, PORT, &[0, 0]);
        let r = Recorder::new(&frame);
        let o = decide(
            &r,
            &config,
            &mut reference::HostFrags::default(),
            &mut reference::HostAllow::default(),
        );
        let what = format!("{} bytes of options", options.len());
        assert_eq!(
            (o.class, o.drop),
            (Some(Class::NatpmpExternalAddressRequest), true),
            "{what}"
        );
        assert_eq!(r.windows_at(14), at_ip, "{what}");
        assert_eq!(
            r.reads.borrow().as_slice(),
            &[],
            "{what}: the staged walk ran"
        );
    }
}

/// `ClassCounters::count`, the one counter update (the XDP program's and
/// the host's): passed or dropped packets and frame bytes, and oversized.
#[test]
fn counters_count_an_outcome() {
    let outcome = |drop, oversized, bytes| Outcome {
        class: Some(Class::NatpmpExternalAddressRequest),
        drop,
        oversized,
        bytes,
        ..Outcome::PASS
    };
    let mut c = ClassCounters::default();
    c.count(&outcome(false, false, 60));
    c.count(&outcome(true, true, 64));
    c.count(&outcome(true, false, 100));
    assert_eq!(
        c,
        ClassCounters {
            passed_packets: 1,
            passed_bytes: 60,
            dropped_packets: 2,
            dropped_bytes: 164,
            oversized_packets: 1,
        }
    );
    assert_eq!((c.packets(), c.bytes()), (3, 224));
}

/// The egress program's answers-only mode: datagrams from 5351 count with
/// the XDP path's class and their destination; requests to 5351, other UDP
/// and what the fast path hands on (fragments) do not.
#[test]
fn answers_only_mode() {
    let e = Link::Ethernet;
    for &class in Class::ALL.iter().filter(|c| !c.is_aggregate()) {
        let payload = samples::sample_payload(class);
        if payload.is_empty() {
            continue;
        }
        let v4frame = eth_udp4(V4Frag::default(), &[], PORT, 40000, payload);
        let from_xdp = class_of(e, &v4frame);
        let a = decide_answer(v4frame.as_slice(), e);
        assert_eq!(a.map(|a| a.class), from_xdp, "{class:?} over IPv4");
        if let Some(a) = a {
            assert_eq!(a.destination(), v4_mapped(V4_DST), "{class:?}");
            assert_eq!(a.bytes, v4frame.len() as u64);
            assert!(!a.outcome().drop);
        }
        let v6frame = ethernet(
            &[],
            ETH_P_IPV6,
            &ipv6(IPPROTO_UDP, &udp(PORT, 40000, payload)),
        );
        let a6 = decide_answer(v6frame.as_slice(), e);
        assert_eq!(
            a6.map(|a| a.class),
            class_of(e, &v6frame),
            "{class:?} over IPv6"
        );
        if let Some(a) = a6 {
            assert_eq!(a.destination(), V6_DST);
        }
    }
    let not_answers: Vec<(&str, Vec<u8>)> = vec![
        (
            "a request to 5351",
            eth_udp4(V4Frag::default(), &[], 40000, PORT, &[0, 0]),
        ),
        (
            "DNS",
            eth_udp4(V4Frag::default(), &[], 53, 40000, &[0, 128]),
        ),
        (
            "a first fragment from 5351",
            eth_udp4(
                V4Frag::first(7),
                &[],
                PORT,
                40000,
                &[0, 128, 0, 0, 0, 0, 0, 60, 198, 18, 0, 1],
            ),
        ),
        ("ARP", ethernet(&[], 0x0806, &[0; 28])),
    ];
    for (what, frame) in not_answers {
        assert_eq!(decide_answer(frame.as_slice(), e), None, "{what}");
    }
}

/// Runs `check` on every seed cut at every length, and on 20,000 copies of
/// each with one to three of its first 64 bytes mutated (mostly the
/// headers, where two paths could disagree): a random byte, or (half of
/// the time, if `values` is not empty) one of `values` written big-endian
/// there. A fixed xorshift from `state`: the same mutations on every run.
fn mutations(seeds: &[Vec<u8>], mut state: u64, values: &[u16], mut check: impl FnMut(&[u8])) {
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for seed in seeds {
        for cut in 0..=seed.len() {
            check(&seed[..cut]);
        }
        for _ in 0..20_000 {
            let mut f = seed.clone();
            for _ in 0..=next() % 3 {
                let at = usize::try_from(next() % 64).unwrap_or(0) % f.len().min(64);
                let r = next();
                if !values.is_empty() && r % 2 == 0 && at + 1 < f.len() {
                    let v = values[usize::try_from(r >> 8).unwrap_or(0) % values.len()];
                    f[at..at + 2].copy_from_slice(&v.to_be_bytes());
                } else {
                    f[at] = r.to_le_bytes()[0];
                }
            }
            check(&f);
        }
    }
}

/// The egress program's quick look (`answers_quick`: untagged and
/// single-tagged IPv4 and IPv6 at constant offsets, the source port first)
/// changes no answer: on answers from 5351 in every encapsulation, cut at
/// every length and mutated in their headers, on Ethernet and raw IP links,
/// `decide_answer` gives what the answers-only fast path alone gives.
#[test]
fn answers_quick_agrees_with_the_fast_path() {
    // Values the walk compares fields with, for the mutations.
    const INTERESTING: [u16; 10] = [
        PORT,
        ETH_P_IP,
        ETH_P_IPV6,
        ETH_P_8021Q,
        ETH_P_8021AD,
        ETH_P_PPP_SES,
        0x4500,
        0x4600,
        0x6000,
        0x1140,
    ];
    let reply = samples::sample_payload(Class::NatpmpExternalAddressResponse);
    let answer = |sport| udp(sport, 40000, reply);
    let v4 = |sport| ipv4(IPPROTO_UDP, V4Frag::default(), &[], &answer(sport));
    let v6 = |sport| ipv6(IPPROTO_UDP, &answer(sport));
    let seeds: Vec<Vec<u8>> = vec![
        ethernet(&[], ETH_P_IP, &v4(PORT)),
        ethernet(&[], ETH_P_IP, &v4(53)),
        ethernet(&[], ETH_P_IPV6, &v6(PORT)),
        ethernet(&[], ETH_P_IPV6, &v6(53)),
        ethernet(
            &[],
            ETH_P_IP,
            &ipv4(IPPROTO_UDP, V4Frag::default(), &[1; 4], &answer(PORT)),
        ),
        ethernet(
            &[],
            ETH_P_IP,
            &ipv4(IPPROTO_UDP, V4Frag::first(7), &[], &answer(PORT)),
        ),
        ethernet(
            &[],
            ETH_P_IP,
            &ipv4(IPPROTO_TCP, V4Frag::default(), &[], &answer(PORT)),
        ),
        ethernet(&[ETH_P_8021Q], ETH_P_IP, &v4(PORT)),
        ethernet(&[ETH_P_8021Q], ETH_P_IPV6, &v6(PORT)),
        ethernet(&[ETH_P_8021AD, ETH_P_8021Q], ETH_P_IP, &v4(PORT)),
        ethernet(&[ETH_P_8021Q, ETH_P_8021Q], ETH_P_IPV6, &v6(PORT)),
        ethernet_pppoe(PPP_IP, &v4(PORT)),
        ethernet_pppoe(PPP_IPV6, &v6(PORT)),
        ethernet(&[], ETH_P_PPP_SES, &pppoe_compressed(0x21, &v4(PORT))),
        ethernet(&[], ETH_P_IPV6, &ipv6(IPPROTO_IPIP, &v4(PORT))),
        v4(PORT),
        v6(PORT),
    ];
    let mut checked = 0u64;
    let mut answers = 0u64;
    let check = |frame: &[u8]| {
        for link in [Link::Ethernet, Link::RawIp] {
            let quick = decide_answer(frame, link);
            assert_eq!(
                quick,
                walk::decide_answer_by_the_fast_path(frame, link),
                "{link:?}, frame {frame:02x?}"
            );
            checked += 1;
            answers += u64::from(quick.is_some());
        }
    };
    mutations(&seeds, 0x2545_f491_4f6c_dd1d, &INTERESTING, check);
    assert!(checked > 500_000, "{checked} comparisons");
    assert!(
        answers > 50_000,
        "only {answers} of the frames were answers"
    );
}

/// RFC 791 §3.2: a fragment belongs to a datagram by source, destination,
/// protocol and identification. A later fragment of another protocol that
/// shares the UDP datagram's id is not its.
#[test]
fn a_later_fragment_of_another_protocol_is_not_the_udp_datagrams() {
    let dgram = udp(40000, PORT, &[0, 0, 0, 0, 0, 0, 0, 0]);
    let first = V4Frag::first(7);
    let later = V4Frag::later(7, 1);
    let mut r = Reference::new(Config::new(Mode::Drop));
    let o = r.run(&ethernet(
        &[],
        ETH_P_IP,
        &ipv4(IPPROTO_UDP, first, &[], &dgram[..8]),
    ));
    assert!(o.drop, "the first fragment goes to 5351: {o:?}");
    let tcp = r.run(&ethernet(&[], ETH_P_IP, &ipv4(6, later, &[], &dgram[8..])));
    assert_eq!(tcp.class, None, "another protocol's fragment: {tcp:?}");
    let own = r.run(&ethernet(
        &[],
        ETH_P_IP,
        &ipv4(IPPROTO_UDP, later, &[], &dgram[8..]),
    ));
    assert_eq!(own.class, Some(Class::FragmentNonfirst), "{own:?}");
    assert!(own.drop);
}

/// Frames counted without reaching a UDP header still name their sender:
/// a later fragment (from its fragment key) and an over-long extension
/// chain (a mutant that dropped the sender there survived the other tests).
#[test]
fn later_fragments_and_overlong_chains_name_their_sender() {
    let v4_mapped_src = v4_mapped(V4_SRC);
    let dgram = udp(40000, PORT, &[0, 0, 0, 0, 0, 0, 0, 0]);
    let first = V4Frag::first(9);
    let later = V4Frag::later(9, 1);
    let mut r = Reference::new(Config::new(Mode::Drop));
    r.run(&ethernet(
        &[],
        ETH_P_IP,
        &ipv4(IPPROTO_UDP, first, &[], &dgram[..8]),
    ));
    let o = r.run(&ethernet(
        &[],
        ETH_P_IP,
        &ipv4(IPPROTO_UDP, later, &[], &dgram[8..]),
    ));
    assert_eq!(o.class, Some(Class::FragmentNonfirst));
    assert_eq!(o.source(), v4_mapped_src, "the later fragment's sender");
    let o = outcome(Link::Ethernet, &chain(MAX_IPV6_EXT_HEADERS + 1));
    assert_eq!(o.class, Some(Class::Ipv6ExtChainTooLong));
    assert_eq!(o.source(), V6_SRC, "the over-long chain's sender");
}

/// The walk reads no further than [`crate::walk::MAX_OFFSET`] (the bound
/// the verifier sees): a window or a read may start there, not a byte later.
#[test]
fn reads_start_at_most_at_max_offset() {
    use crate::walk::{at, MAX_OFFSET};
    let frame = vec![0xab_u8; MAX_OFFSET + 64];
    let b: &[u8] = &frame;
    assert!(b.window(0, 2).is_some());
    assert!(b.window(MAX_OFFSET, 2).is_some());
    assert!(b.window(MAX_OFFSET + 1, 2).is_none());
    assert!(b.window(MAX_OFFSET + 60, 8).is_none());
    assert_eq!(at::<[u8], [u8; 2]>(b, 0), Some([0xab, 0xab]));
    assert_eq!(at::<[u8], [u8; 2]>(b, MAX_OFFSET), Some([0xab, 0xab]));
    assert_eq!(at::<[u8], [u8; 2]>(b, MAX_OFFSET + 1), None);
    assert_eq!(at::<[u8], [u8; 2]>(b, MAX_OFFSET + 60), None);
}

/// An allowlist prefix holds exactly its addresses: every bit of the
/// prefix compared, in every byte.
#[test]
fn prefixes_contain_exactly_their_addresses() {
    let p = Prefix::new(v4_mapped([198, 18, 0, 0]), 96 + 15);
    assert!(p.contains(&v4_mapped([198, 18, 0, 1])));
    assert!(p.contains(&v4_mapped([198, 19, 255, 255])));
    assert!(!p.contains(&v4_mapped([198, 20, 0, 0])));
    assert!(!p.contains(&v4_mapped([198, 17, 255, 255])));
    assert!(!p.contains(&v4_mapped([10, 18, 0, 1])));
    let host = Prefix::new(v4_mapped([198, 18, 0, 1]), 128);
    assert!(host.contains(&v4_mapped([198, 18, 0, 1])));
    assert!(!host.contains(&v4_mapped([198, 18, 0, 2])));
    assert!(!host.contains(&[0; 16]));
    assert!(Prefix::new([0; 16], 0).contains(&[0xff; 16]));
}

/// What the answers-only quick look is for: a frame leaving an interface
/// that is not an answer is decided from two windows over the frame's start
/// (the shortest answer, 42 bytes, then the headers up to the UDP source
/// port at the IP header's constant offset), untagged or 802.1Q, IPv4 or
/// IPv6, without the fast path's per-header windows or the staged walk.
/// `decide_answer` answers alike without it
/// (`answers_quick_agrees_with_the_fast_path`), so only where it looked
/// tells that the quick look decided.
#[test]
fn the_answers_quick_look_decides_a_non_answer_with_two_windows() {
    let tcp = |sport| {
        let mut seg = udp(sport, 443, &[0; 12]);
        seg[4..6].copy_from_slice(&[0x50, 0x02]);
        seg
    };
    let v4 = |proto, sport| ipv4(proto, V4Frag::default(), &[], &tcp(sport));
    let v6 = |proto, sport| ipv6(proto, &tcp(sport));
    for (what, frame, second) in [
        (
            "IPv4 TCP",
            ethernet(&[], ETH_P_IP, &v4(IPPROTO_TCP, 40000)),
            42,
        ),
        (
            "IPv4 DNS",
            ethernet(&[], ETH_P_IP, &v4(IPPROTO_UDP, 53)),
            42,
        ),
        (
            "IPv4 TCP from 5351",
            ethernet(&[], ETH_P_IP, &v4(IPPROTO_TCP, PORT)),
            42,
        ),
        (
            "IPv6 TCP",
            ethernet(&[], ETH_P_IPV6, &v6(IPPROTO_TCP, 40000)),
            62,
        ),
        (
            "IPv6 DNS",
            ethernet(&[], ETH_P_IPV6, &v6(IPPROTO_UDP, 53)),
            62,
        ),
        (
            "802.1Q IPv4 TCP",
            ethernet(&[ETH_P_8021Q], ETH_P_IP, &v4(IPPROTO_TCP, 40000)),
            46,
        ),
        (
            "802.1Q IPv6 DNS",
            ethernet(&[ETH_P_8021Q], ETH_P_IPV6, &v6(IPPROTO_UDP, 53)),
            66,
        ),
    ] {
        let r = Recorder::new(&frame);
        assert_eq!(decide_answer(&r, Link::Ethernet), None, "{what}");
        assert_eq!(
            r.windows.borrow().as_slice(),
            &[(0, 42), (0, second)],
            "{what}: the windows asked for"
        );
        assert_eq!(r.reads.borrow().as_slice(), &[], "{what}: reads");
    }
}

/// A slice's window reads the byte and the big-endian 16-bit field at `L +
/// I` (the quick look uses `I` 0 only; the kernel's window its own loads).
#[test]
fn a_windows_fields_at_a_constant_offset() {
    use walk::Window as _;
    let frame: Vec<u8> = (0u8..32).collect();
    let w = frame[..].window(0, 32).expect("a window");
    assert_eq!(w.byte_at::<3, 4>(), 7);
    assert_eq!(w.byte_at::<0, 0>(), 0);
    assert_eq!(w.be16_at::<3, 4>(), 0x0708);
}
