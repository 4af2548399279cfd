//! The fuzz target's input format, the invariants it checks and its seed
//! corpus (host only). `fuzz/fuzz_targets/walk.rs` is [`check`]; the unit
//! tests run [`check`] on every seed, and hold the committed corpus
//! (`fuzz/seeds/walk/`) to [`corpus`].
//!
//! # Input
//!
//! One knob byte, then frames, each a 2-byte little-endian length and that
//! many bytes (the last frame takes what is left when the length says more;
//! a lone trailing byte is a frame of its own). Knobs: bit 0 raw-IP link
//! (else Ethernet), bit 1 drop mode (else monitor), bit 2 the builders'
//! senders ([`V4_SRC`], [`V6_SRC`]) allowlisted. Every frame of an input
//! goes through one [`Reference`], so through one fragment table: a later
//! fragment can meet its first, as in the kernel.
//!
//! # Invariants ([`check`])
//!
//! - no panic (the slice reader panics on nothing; arithmetic must not
//!   overflow in debug builds, which cargo-fuzz uses);
//! - bytes counted are the frame length, or 0 when nothing is counted;
//! - the aggregate `pcp` is never counted, and `oversized` only comes with a
//!   NAT-PMP class;
//! - dropped exactly when drop mode, the datagram goes to port 5351 (for a
//!   later fragment: its first fragment, seen earlier in the input, did)
//!   and its sender is not allowlisted; an over-long IPv6 chain, whose ports
//!   are unknown, is never dropped;
//! - `walk` and `decide` agree on what the frame is;
//! - `decide` (with its fast path) and `decide_slow` (the staged walk alone)
//!   give the same outcome, each with its own fragment table.

extern crate std;

use std::{collections::HashMap, format, string::String, vec, vec::Vec};

use crate::{
    decide_slow,
    frames::{
        ethernet, ext, frag6, ipv4, ipv6, pppoe, pppoe_compressed, udp, v4, v4_answer, v6, V4Frag,
        FRAGMENT, V4_SRC, V6_SRC,
    },
    headers::{
        ETH_P_8021AD, ETH_P_8021Q, ETH_P_IP, ETH_P_IPV6, ETH_P_PPP_SES, IPPROTO_DSTOPTS,
        IPPROTO_HOPOPTS, IPPROTO_IPIP, IPPROTO_ROUTING, IPPROTO_UDP, PPP_IP, PPP_IPV6,
    },
    reference::Reference,
    samples::sample_payload,
    walk, Class, Config, Direction, Found, FragKey, Link, Mode, Prefix, MAX_IPV6_EXT_HEADERS,
    NATPMP_PORT,
};

/// What the knob byte selects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Knobs {
    pub link: Link,
    pub mode: Mode,
    /// [`V4_SRC`] and [`V6_SRC`] are in the allowlist.
    pub allow_builders: bool,
}

impl Knobs {
    pub fn from_byte(b: u8) -> Knobs {
        Knobs {
            link: if b & 1 == 0 {
                Link::Ethernet
            } else {
                Link::RawIp
            },
            mode: if b & 2 == 0 {
                Mode::Monitor
            } else {
                Mode::Drop
            },
            allow_builders: b & 4 != 0,
        }
    }

    pub fn byte(self) -> u8 {
        u8::from(self.link == Link::RawIp)
            | (u8::from(self.mode == Mode::Drop) << 1)
            | (u8::from(self.allow_builders) << 2)
    }
}

/// [`V4_SRC`] as the IPv4-mapped address the walk reports, written out.
const V4_SRC_MAPPED: [u8; 16] = [
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, V4_SRC[0], V4_SRC[1], V4_SRC[2], V4_SRC[3],
];

/// Splits an input into its knobs and frames (see the module's doc).
pub fn decode(data: &[u8]) -> Option<(Knobs, Vec<&[u8]>)> {
    let (&knobs, mut rest) = data.split_first()?;
    let mut frames = Vec::new();
    while !rest.is_empty() {
        let Some((len, body)) = rest.split_first_chunk::<2>() else {
            frames.push(rest);
            break;
        };
        let n = usize::from(u16::from_le_bytes(*len)).min(body.len());
        let (frame, tail) = body.split_at(n);
        frames.push(frame);
        rest = tail;
    }
    Some((Knobs::from_byte(knobs), frames))
}

/// The input of `frames` under `knobs`.
///
/// # Panics
///
/// When a frame is 64 KiB or longer (its length would not fit the prefix).
pub fn encode(knobs: Knobs, frames: &[Vec<u8>]) -> Vec<u8> {
    let mut out = vec![knobs.byte()];
    for f in frames {
        let len = u16::try_from(f.len()).expect("a frame under 64 KiB");
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(f);
    }
    out
}

/// Runs an input through the reference and checks every invariant of the
/// module's doc.
///
/// # Panics
///
/// On the first broken invariant: that is what the fuzz target reports.
pub fn check(data: &[u8]) {
    let Some((knobs, frames)) = decode(data) else {
        return;
    };
    let config = Config::new(knobs.mode).with_link(knobs.link);
    let mut r = Reference::new(config);
    let mut staged = Reference::new(config);
    if knobs.allow_builders {
        for p in [Prefix::new(V4_SRC_MAPPED, 128), Prefix::new(V6_SRC, 128)] {
            r.allow.0.push(p);
            staged.allow.0.push(p);
        }
    }
    // The first fragments seen so far, and whether they went to 5351: the
    // target's own record, not the reference's table.
    let mut firsts: HashMap<FragKey, bool> = HashMap::new();
    for (i, frame) in frames.iter().enumerate() {
        let o = r.run(frame);
        match o.class {
            None => {
                assert_eq!(o.bytes, 0, "frame {i}");
                assert!(!o.drop && !o.oversized, "frame {i}");
            }
            Some(class) => {
                assert_eq!(o.bytes, frame.len() as u64, "frame {i}");
                assert!(!class.is_aggregate(), "the aggregate class was counted");
                if o.oversized {
                    assert!(class.name().starts_with("natpmp_"), "{class:?} oversized");
                }
            }
        }
        let s = decide_slow(*frame, &staged.config, &mut staged.frags, &mut staged.allow);
        assert_eq!(
            o, s,
            "frame {i}: the fast path and the staged walk disagree"
        );
        let w = walk(*frame, knobs.link);
        let to_5351 = match w.found {
            Found::Datagram => {
                assert_eq!(o.class, Some(w.verdict.class), "frame {i}");
                assert_eq!(o.oversized, w.verdict.oversized, "frame {i}");
                w.dir == Direction::ToServer
            }
            Found::FirstFragment => {
                assert_eq!(o.class, Some(w.verdict.class), "frame {i}");
                assert_eq!(o.oversized, w.verdict.oversized, "frame {i}");
                let to = w.dir == Direction::ToServer;
                firsts.insert(w.key, to);
                to
            }
            Found::Pass => {
                assert_eq!(o.class, None, "frame {i}");
                false
            }
            Found::ChainTooLong => {
                assert_eq!(o.class, Some(Class::Ipv6ExtChainTooLong), "frame {i}");
                false
            }
            Found::LaterFragment => {
                if let Some(&to) = firsts.get(&w.key) {
                    assert_eq!(o.class, Some(Class::FragmentNonfirst), "frame {i}");
                    to
                } else {
                    assert_eq!(
                        o.class, None,
                        "frame {i}: a later fragment without its first"
                    );
                    false
                }
            }
        };
        let allowlisted = knobs.allow_builders && (w.src == V4_SRC_MAPPED || w.src == V6_SRC);
        assert_eq!(
            o.drop,
            knobs.mode == Mode::Drop && to_5351 && !allowlisted,
            "frame {i}: dropped exactly when drop mode, to 5351 and not allowlisted \
             ({knobs:?}, to 5351: {to_5351}, allowlisted: {allowlisted})"
        );
    }
}

/// The example frames of docs/classes.md (`doc`: its text), per class
/// heading: each section's `text` blocks in order (a block is hex bytes,
/// `00*N` for N zero bytes; the class is that of the last frame, the
/// earlier ones set it up, e.g. a first fragment).
///
/// # Panics
///
/// When the document is malformed: a heading or a block that does not
/// close, or a token that is not a hex byte.
pub fn doc_examples(doc: &str) -> Vec<(String, Vec<Vec<u8>>)> {
    let mut out = Vec::new();
    for section in doc.split("\n### `").skip(1) {
        let name = &section[..section.find('`').expect("heading closes")];
        let mut frames = Vec::new();
        for block in section.split("```text\n").skip(1) {
            let hex = &block[..block.find("```").expect("block closes")];
            let mut frame: Vec<u8> = Vec::new();
            for token in hex.split_whitespace() {
                if let Some(n) = token.strip_prefix("00*") {
                    frame.resize(frame.len() + n.parse::<usize>().expect("run length"), 0);
                } else {
                    frame.push(u8::from_str_radix(token, 16).expect("hex byte"));
                }
            }
            frames.push(frame);
        }
        out.push((String::from(name), frames));
    }
    out
}

/// Frames from the shared builders: every encapsulation, fragments as
/// first-then-later sequences, the extension-header bound, raw IP.
/// `(name, link, frames)`.
#[expect(clippy::too_many_lines, reason = "a table: one entry per shape")]
fn builder_seeds() -> Vec<(&'static str, Link, Vec<Vec<u8>>)> {
    let e = Link::Ethernet;
    let req = sample_payload(Class::NatpmpExternalAddressRequest);
    let map = sample_payload(Class::NatpmpMapUdpRequest);
    let pcp = sample_payload(Class::PcpMapRequest);
    let to = |p: &[u8]| udp(40000, NATPMP_PORT, p);
    let first4 = V4Frag::first(7);
    let later4 = V4Frag::later(7, 1);
    let dgram = to(map);
    let chain = |n: usize| {
        let mut body = to(req);
        let mut next = IPPROTO_UDP;
        for _ in 0..n {
            body = ext(next, 0, &body);
            next = IPPROTO_DSTOPTS;
        }
        ipv6(next, &body)
    };
    vec![
        ("ipv4", e, vec![ethernet(&[], ETH_P_IP, &v4(req))]),
        ("ipv6-pcp", e, vec![ethernet(&[], ETH_P_IPV6, &v6(pcp))]),
        (
            "vlan",
            e,
            vec![ethernet(&[ETH_P_8021Q], ETH_P_IP, &v4(map))],
        ),
        (
            "qinq",
            e,
            vec![ethernet(&[ETH_P_8021AD, ETH_P_8021Q], ETH_P_IPV6, &v6(pcp))],
        ),
        (
            "pppoe-v4",
            e,
            vec![ethernet(&[], ETH_P_PPP_SES, &pppoe(PPP_IP, &v4(req)))],
        ),
        (
            "pppoe-v6",
            e,
            vec![ethernet(
                &[ETH_P_8021Q],
                ETH_P_PPP_SES,
                &pppoe(PPP_IPV6, &v6(pcp)),
            )],
        ),
        (
            "pppoe-compressed",
            e,
            vec![ethernet(
                &[],
                ETH_P_PPP_SES,
                &pppoe_compressed(0x21, &v4(map)),
            )],
        ),
        (
            "ipv4-in-ipv6",
            e,
            vec![ethernet(&[], ETH_P_IPV6, &ipv6(IPPROTO_IPIP, &v4(req)))],
        ),
        (
            "ipv6-ext",
            e,
            vec![ethernet(
                &[],
                ETH_P_IPV6,
                &ipv6(
                    IPPROTO_HOPOPTS,
                    &ext(IPPROTO_ROUTING, 1, &ext(IPPROTO_UDP, 0, &to(pcp))),
                ),
            )],
        ),
        (
            "chain-at-bound",
            e,
            vec![ethernet(&[], ETH_P_IPV6, &chain(MAX_IPV6_EXT_HEADERS))],
        ),
        (
            "chain-too-long",
            e,
            vec![ethernet(&[], ETH_P_IPV6, &chain(MAX_IPV6_EXT_HEADERS + 1))],
        ),
        (
            "ipv4-fragments",
            e,
            vec![
                ethernet(&[], ETH_P_IP, &ipv4(IPPROTO_UDP, first4, &[], &dgram[..8])),
                ethernet(&[], ETH_P_IP, &ipv4(IPPROTO_UDP, later4, &[], &dgram[8..])),
            ],
        ),
        (
            "ipv4-later-fragment-alone",
            e,
            vec![ethernet(
                &[],
                ETH_P_IP,
                &ipv4(IPPROTO_UDP, later4, &[], &dgram[8..]),
            )],
        ),
        (
            "ipv6-fragments",
            e,
            vec![
                ethernet(
                    &[],
                    ETH_P_IPV6,
                    &ipv6(FRAGMENT, &frag6(IPPROTO_UDP, 0, true, 9, &dgram[..16])),
                ),
                ethernet(
                    &[],
                    ETH_P_IPV6,
                    &ipv6(FRAGMENT, &frag6(IPPROTO_UDP, 2, false, 9, &dgram[16..])),
                ),
            ],
        ),
        (
            "ipv4-options",
            e,
            vec![ethernet(
                &[],
                ETH_P_IP,
                &ipv4(IPPROTO_UDP, V4Frag::default(), &[1; 12], &to(map)),
            )],
        ),
        (
            "answer-from-5351",
            e,
            vec![ethernet(
                &[],
                ETH_P_IP,
                &v4_answer(sample_payload(Class::NatpmpExternalAddressResponse)),
            )],
        ),
        (
            "other-port",
            e,
            vec![ethernet(
                &[],
                ETH_P_IP,
                &ipv4(IPPROTO_UDP, V4Frag::default(), &[], &udp(40000, 53, map)),
            )],
        ),
        ("raw-ipv4", Link::RawIp, vec![v4(req)]),
        ("raw-ipv6", Link::RawIp, vec![v6(pcp)]),
    ]
}

/// The seed corpus: `(file name, input)`, from the documented examples
/// (`doc`: docs/classes.md) in drop mode, then drop mode with their sender
/// allowlisted, and from the builders in monitor and drop mode.
pub fn corpus(doc: &str) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let drop = |link, allow_builders| Knobs {
        link,
        mode: Mode::Drop,
        allow_builders,
    };
    for (class, frames) in doc_examples(doc) {
        out.push((
            format!("doc-{class}"),
            encode(drop(Link::Ethernet, false), &frames),
        ));
        out.push((
            format!("doc-{class}-allowlisted"),
            encode(drop(Link::Ethernet, true), &frames),
        ));
    }
    for (name, link, frames) in builder_seeds() {
        out.push((
            format!("built-{name}-drop"),
            encode(drop(link, false), &frames),
        ));
        let monitor = Knobs {
            link,
            mode: Mode::Monitor,
            allow_builders: false,
        };
        out.push((format!("built-{name}-monitor"), encode(monitor, &frames)));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::{fs, path::PathBuf};

    use super::*;

    const DOC: &str = include_str!("../../docs/classes.md");
    /// How to bring the committed corpus back in step.
    const REGENERATE: &str =
        "UPDATE_SEEDS=1 cargo test -p nat-pmp-ebpf-common fuzzing (or cargo xtask fuzz-seeds)";

    fn seeds_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/walk")
    }

    #[test]
    fn fuzzing_the_format_round_trips() {
        let knobs = Knobs::from_byte(7);
        assert_eq!(knobs.byte(), 7);
        let frames = vec![vec![1, 2, 3], vec![], vec![9; 300]];
        let input = encode(knobs, &frames);
        let (k, got) = decode(&input).unwrap();
        assert_eq!(k, knobs);
        assert_eq!(got, frames.iter().map(Vec::as_slice).collect::<Vec<_>>());
        // A length that says more than is left: the rest; a lone byte: a frame.
        assert_eq!(decode(&[0, 5, 0, 1, 2]).unwrap().1, vec![&[1u8, 2][..]]);
        assert_eq!(decode(&[0, 5]).unwrap().1, vec![&[5u8][..]]);
        assert!(decode(&[]).is_none());
    }

    /// Every seed passes the invariants, and the corpus reaches every class
    /// and both outcomes of the drop policy.
    #[test]
    fn fuzzing_every_seed_holds_the_invariants() {
        let mut classes = std::collections::BTreeSet::new();
        let (mut dropped, mut allowed) = (0, 0);
        for (name, input) in corpus(DOC) {
            check(&input);
            let (knobs, frames) = decode(&input).unwrap();
            let mut r = Reference::new(Config::new(knobs.mode).with_link(knobs.link));
            if knobs.allow_builders {
                r.allow.0.push(Prefix::new(V4_SRC_MAPPED, 128));
                r.allow.0.push(Prefix::new(V6_SRC, 128));
            }
            for f in frames {
                let o = r.run(f);
                classes.extend(o.class);
                dropped += u32::from(o.drop);
                allowed += u32::from(o.allowed);
            }
            assert!(input.len() > 1, "{name}: empty");
        }
        for class in Class::ALL.into_iter().filter(|c| !c.is_aggregate()) {
            assert!(classes.contains(&class), "no seed of {}", class.name());
        }
        assert!(
            dropped > 0 && allowed > 0,
            "dropped {dropped}, allowed {allowed}"
        );
    }

    /// The committed seed corpus is [`corpus`]: same files, same bytes.
    #[test]
    fn fuzzing_seed_corpus_is_current() {
        let dir = seeds_dir();
        let want = corpus(DOC);
        if std::env::var_os("UPDATE_SEEDS").is_some() {
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            for (name, input) in &want {
                fs::write(dir.join(name), input).unwrap();
            }
            return;
        }
        let mut have: Vec<String> = fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}; run {REGENERATE}", dir.display()))
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        have.sort();
        let mut names: Vec<String> = want.iter().map(|(n, _)| n.clone()).collect();
        names.sort();
        assert_eq!(have, names, "the seed files differ; run {REGENERATE}");
        for (name, input) in want {
            let got = fs::read(dir.join(&name)).unwrap();
            assert!(got == input, "{name} is stale; run {REGENERATE}");
        }
    }
}
