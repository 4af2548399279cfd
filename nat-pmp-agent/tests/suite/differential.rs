//! The differential test: at least a million generated and mutated frames
//! (every encapsulation, random truncations, bit flips, random lengths, both
//! link types, both modes) run through the XDP program in the kernel
//! (BPF_PROG_TEST_RUN, traced) and through the host reference
//! (`nat_pmp_ebpf_common::reference`, the same walk over a byte slice). The
//! class, the action, the oversized flag and the counted bytes must agree on
//! every frame; the first disagreement is printed in hex with the seed that
//! reproduces it. At the end the kernel's counters must equal the sum of the
//! host's outcomes.
//!
//! `NATPMP_DIFF_SEED` (default fixed) and `NATPMP_DIFF_FRAMES` (default
//! 1,000,000) override the run.

use std::time::Instant;

use fastrand::Rng;
use nat_pmp_agent::{bpf::Filter, probe::sample_payload, stats::counters::Snapshot};
use nat_pmp_ebpf_common::{
    frames::{ethernet, ext, frag6, ipv4, ipv6, pppoe, udp, V4Frag, FRAGMENT},
    frames::{V4_SRC, V6_SRC},
    headers::{
        ETH_P_8021AD, ETH_P_8021Q, ETH_P_IP, ETH_P_IPV6, ETH_P_PPP_SES, IPPROTO_DSTOPTS,
        IPPROTO_HOPOPTS, IPPROTO_IPIP, IPPROTO_ROUTING, IPPROTO_UDP, PPP_IP, PPP_IPV6,
    },
    reference::Reference,
    Class, Config, Link, Mode, Outcome, Prefix, Trace, FRAGS_MAX_ENTRIES, MAX_IPV6_EXT_HEADERS,
    MAX_VLAN_TAGS, NATPMP_PORT,
};

const DEFAULT_SEED: u64 = 0x5351_6886_6887;
const DEFAULT_FRAMES: u64 = 1_000_000;
/// BPF_PROG_TEST_RUN takes XDP frames of at least ETH_HLEN bytes and at
/// most about a page minus headroom and skb_shared_info.
const MIN_FRAME: usize = 14;
const MAX_FRAME: usize = 3000;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).map_or(default, |v| {
        let v = v.trim();
        v.strip_prefix("0x")
            .map_or_else(|| v.parse(), |h| u64::from_str_radix(h, 16))
            .unwrap_or_else(|e| panic!("{name}={v:?}: {e}"))
    })
}

/// What the generator meant a frame to be, from its own construction (the
/// sample it chose, the ports it wrote, the headers it stacked), never from
/// the classifier: the class counted (`None`: passed uncounted), whether
/// the datagram goes to port 5351, and the sender. `None` where the
/// construction alone does not say (random payloads, fragments, lying
/// length fields): those frames are held to the host reference only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Intent {
    class: Option<Class>,
    to_5351: bool,
    src: [u8; 16],
}

/// The class a sample payload is: [`sample_payload`]'s contract, stated
/// again (the classes headers decide get an opcode-0 request, the aggregate
/// `pcp` an ANNOUNCE request).
fn sample_class(class: Class) -> Class {
    match class {
        Class::FragmentNonfirst | Class::Ipv6ExtChainTooLong => Class::NatpmpExternalAddressRequest,
        Class::Pcp => Class::PcpAnnounceRequest,
        c => c,
    }
}

/// A UDP payload: a sample of a class (whose class it returns), a PCP
/// message of a random length, or random bytes behind a chosen version byte.
fn payload(rng: &mut Rng) -> (Vec<u8>, Option<Class>) {
    match rng.u8(0..10) {
        0..=3 => {
            let classes: Vec<Class> = Class::ALL.into_iter().collect();
            let class = classes[rng.usize(..classes.len())];
            (sample_payload(class), Some(sample_class(class)))
        }
        4..=5 => {
            let len = if rng.bool() {
                rng.usize(0..=1200) & !3
            } else {
                rng.usize(0..=1200)
            };
            let mut p = vec![2, rng.u8(..)];
            p.resize(len.max(2), 0);
            p.truncate(len);
            (p, None)
        }
        _ => {
            let len = rng.usize(0..=40);
            let mut p: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
            if let Some(v) = p.first_mut() {
                *v = [0, 0, 1, 2, rng.u8(..)][rng.usize(..5)];
            }
            (p, None)
        }
    }
}

/// What a datagram is meant to be, before its IP header says who sent it:
/// `Some((class, to 5351))` when known.
type DatagramIntent = Option<(Option<Class>, bool)>;

/// A UDP datagram (sometimes to other ports, sometimes with a wrong length
/// field) and what it is meant to be.
fn datagram(rng: &mut Rng) -> (Vec<u8>, DatagramIntent) {
    let (sport, dport) = match rng.u8(0..10) {
        0..=6 => (rng.u16(1024..), NATPMP_PORT),
        7 => (NATPMP_PORT, rng.u16(1024..)),
        8 => (NATPMP_PORT, NATPMP_PORT),
        _ => (rng.u16(..), rng.u16(..)),
    };
    let (p, class) = payload(rng);
    let mut d = udp(sport, dport, &p);
    let nat_pmp = sport == NATPMP_PORT || dport == NATPMP_PORT;
    let mut intent = if nat_pmp {
        class.map(|c| (Some(c), dport == NATPMP_PORT))
    } else {
        // Neither port is 5351: passed uncounted, whatever the payload.
        Some((None, false))
    };
    if rng.u8(0..10) == 0 {
        d[4..6].copy_from_slice(&rng.u16(..).to_be_bytes());
        intent = None;
    }
    (d, intent)
}

/// The IPv4-mapped form of an IPv4 address, as the program reports senders.
fn mapped(v4: [u8; 4]) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[10] = 0xff;
    a[11] = 0xff;
    a[12..].copy_from_slice(&v4);
    a
}

/// The IPv4 fragments of a datagram share these ids, so later fragments
/// often meet their first.
fn frag_id(rng: &mut Rng) -> u16 {
    rng.u16(0..4)
}

/// An IPv4 packet around `body` (options, fragments, other protocols), and
/// `intent` (that of `body`) with the sender: unknown for fragments, not
/// counted for another protocol than UDP.
fn v4_packet(rng: &mut Rng, body: &[u8], intent: DatagramIntent) -> (Vec<u8>, Option<Intent>) {
    let options: Vec<u8> = vec![1; [0, 0, 0, 4, 12, 40][rng.usize(..6)]];
    let proto = if rng.u8(0..20) == 0 { 6 } else { IPPROTO_UDP };
    let src = mapped(V4_SRC);
    match rng.u8(0..10) {
        0 => {
            // First fragment: a prefix of the datagram, 8-byte aligned.
            let cut = (rng.usize(0..=body.len()) & !7).max(8).min(body.len());
            let f = V4Frag::first(frag_id(rng));
            (ipv4(proto, f, &options, &body[..cut]), None)
        }
        1 => {
            let f = V4Frag {
                id: frag_id(rng),
                offset: rng.u16(1..200),
                more: rng.bool(),
            };
            (ipv4(proto, f, &options, body), None)
        }
        _ => {
            let intent = if proto == IPPROTO_UDP {
                intent.map(|(class, to_5351)| Intent {
                    class,
                    to_5351,
                    src,
                })
            } else {
                Some(Intent {
                    class: None,
                    to_5351: false,
                    src,
                })
            };
            (ipv4(proto, V4Frag::default(), &options, body), intent)
        }
    }
}

/// An IPv6 packet: a random extension-header chain (around the bound),
/// fragments, UDP or IPv4 in IPv6; and what it is meant to be (a chain
/// longer than the bound is counted as such, whatever it carries).
fn v6_packet(rng: &mut Rng) -> (Vec<u8>, Option<Intent>) {
    let (mut next, mut body, mut intent) = if rng.u8(0..5) == 0 {
        let (d, di) = datagram(rng);
        let (p, i) = v4_packet(rng, &d, di);
        (IPPROTO_IPIP, p, i)
    } else {
        let (d, di) = datagram(rng);
        let i = di.map(|(class, to_5351)| Intent {
            class,
            to_5351,
            src: V6_SRC,
        });
        (IPPROTO_UDP, d, i)
    };
    let headers = [0, 0, 0, 1, 2, 3, 5, 6, 7, 8][rng.usize(..10)];
    let mut fragmented = false;
    for _ in 0..headers {
        let kind = [IPPROTO_HOPOPTS, IPPROTO_ROUTING, IPPROTO_DSTOPTS, FRAGMENT][rng.usize(..4)];
        body = if kind == FRAGMENT {
            fragmented = true;
            let offset = if rng.bool() { 0 } else { rng.u16(1..100) };
            frag6(next, offset, rng.bool(), u32::from(frag_id(rng)), &body)
        } else {
            ext(next, [0, 0, 1, 3, 40][rng.usize(..5)], &body)
        };
        next = kind;
    }
    if fragmented {
        intent = None;
    } else if headers > MAX_IPV6_EXT_HEADERS {
        // docs/classes.md: a chain longer than the bound is counted as
        // ipv6_ext_chain_too_long and never dropped (its ports are unknown).
        intent = Some(Intent {
            class: Some(Class::Ipv6ExtChainTooLong),
            to_5351: false,
            src: V6_SRC,
        });
    }
    (ipv6(next, &body), intent)
}

/// A frame for `link`, and what it is meant to be: more VLAN tags than the
/// walk takes pass uncounted (docs: "no WAN stacks three").
fn frame(rng: &mut Rng, link: Link) -> (Vec<u8>, Option<Intent>) {
    let (ip, intent) = if rng.bool() {
        let (d, di) = datagram(rng);
        v4_packet(rng, &d, di)
    } else {
        v6_packet(rng)
    };
    let v6 = ip.first().is_some_and(|b| b >> 4 == 6);
    match link {
        Link::RawIp => (ip, intent),
        Link::Ethernet => {
            let tags: Vec<u16> = (0..[0, 0, 1, 2, 3][rng.usize(..5)])
                .map(|_| {
                    if rng.bool() {
                        ETH_P_8021Q
                    } else {
                        ETH_P_8021AD
                    }
                })
                .collect();
            let intent = if tags.len() > MAX_VLAN_TAGS {
                intent.map(|i| Intent {
                    class: None,
                    to_5351: false,
                    ..i
                })
            } else {
                intent
            };
            let f = if rng.u8(0..5) == 0 {
                ethernet(
                    &tags,
                    ETH_P_PPP_SES,
                    &pppoe(if v6 { PPP_IPV6 } else { PPP_IP }, &ip),
                )
            } else {
                ethernet(&tags, if v6 { ETH_P_IPV6 } else { ETH_P_IP }, &ip)
            };
            (f, intent)
        }
    }
}

/// Truncations, bit flips, random bytes, random lengths.
fn mutate(rng: &mut Rng, mut f: Vec<u8>) -> Vec<u8> {
    match rng.u8(0..20) {
        0..=3 => f.truncate(rng.usize(MIN_FRAME..=f.len().max(MIN_FRAME))),
        4..=8 => {
            for _ in 0..rng.usize(1..=4) {
                let bit = rng.usize(..f.len() * 8);
                f[bit / 8] ^= 1 << (bit % 8);
            }
        }
        9 => f = (0..rng.usize(MIN_FRAME..200)).map(|_| rng.u8(..)).collect(),
        10 => f.resize(f.len() + rng.usize(0..64), 0),
        11 => {
            // Overwrite one byte anywhere with a random value.
            let i = rng.usize(..f.len());
            f[i] = rng.u8(..);
        }
        _ => {}
    }
    f.truncate(MAX_FRAME);
    if f.len() < MIN_FRAME {
        f.resize(MIN_FRAME, 0);
    }
    f
}

fn hex(f: &[u8]) -> String {
    use std::fmt::Write as _;
    f.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn describe(o: &Outcome) -> String {
    format!(
        "class {} action {} oversized {} bytes {}",
        o.class.map_or("(uncounted)", Class::name),
        if o.drop { "drop" } else { "pass" },
        o.oversized,
        o.bytes
    )
}

fn kernel_outcome(t: &Trace) -> Outcome {
    Outcome {
        class: (t.class != Trace::UNCOUNTED).then(|| {
            Class::from_index(t.class).unwrap_or_else(|| panic!("kernel traced class {}", t.class))
        }),
        oversized: t.oversized != 0,
        drop: t.action == 1,
        bytes: t.bytes,
        src: nat_pmp_ebpf_common::addr_words(&t.src),
        allowed: t.allowed != 0,
    }
}

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one run: the phases, both oracles and the summary"
)]
fn kernel_and_host_reference_agree_on_every_frame() {
    crate::support::require_root();
    let seed = env_u64("NATPMP_DIFF_SEED", DEFAULT_SEED);
    let total = env_u64("NATPMP_DIFF_FRAMES", DEFAULT_FRAMES);
    println!(
        "differential: seed {seed:#x} (NATPMP_DIFF_SEED), {total} frames (NATPMP_DIFF_FRAMES)"
    );
    let mut rng = Rng::with_seed(seed);
    let mut filter = Filter::load_traced().expect("loading the XDP program with tracing");
    let mut seq = filter.last_trace().expect("reading the trace map").seq;
    let mut host_counts = Snapshot::default();
    let start = Instant::now();
    let phases = [
        (Mode::Monitor, Link::Ethernet),
        (Mode::Drop, Link::Ethernet),
        (Mode::Monitor, Link::RawIp),
        (Mode::Drop, Link::RawIp),
    ];
    let mut reference = Reference::default();
    // The allowlist holds the IPv6 sender of the generated frames: drop
    // mode then drops IPv4 datagrams to 5351 and lets the IPv6 ones
    // through, so both branches of the policy are compared.
    let allowed = Prefix::new(nat_pmp_ebpf_common::frames::V6_SRC, 128);
    filter
        .maps_mut()
        .allow(allowed)
        .expect("adding to the allowlist");
    reference.allow.0.push(allowed);
    let mut counted = 0u64;
    let mut allowed_seen = 0u64;
    // Unmutated frames held to what they were built to be, per class.
    let mut intended: std::collections::BTreeMap<Option<Class>, u64> =
        std::collections::BTreeMap::new();
    for (phase, (mode, link)) in phases.into_iter().enumerate() {
        filter.set_mode(mode).expect("setting the mode");
        filter.set_link(link).expect("setting the link type");
        reference.config = Config::new(mode).with_link(link);
        let n = total / 4 + u64::from((phase as u64) < total % 4);
        for i in 0..n {
            let (built, intent) = frame(&mut rng, link);
            let f = mutate(&mut rng, built.clone());
            let want = reference.run(&f);
            let action = filter.run_frame(&f).expect("BPF_PROG_TEST_RUN");
            let t = filter.last_trace().expect("reading the trace map");
            seq = seq.wrapping_add(1);
            assert_eq!(t.seq, seq, "the program did not trace frame {i}");
            assert_eq!(t.action, action);
            let got = kernel_outcome(&t);
            assert!(
                got == want,
                "kernel and host reference disagree (seed {seed:#x}, {} mode, {} link, frame {i} \
                 of the phase):\n  frame  {}\n  kernel {}\n  host   {}",
                mode.name(),
                link.name(),
                hex(&f),
                describe(&got),
                describe(&want)
            );
            // The independent oracle: an unmutated frame is what its
            // generator built it to be, in the kernel.
            if let (true, Some(intent)) = (f == built, intent) {
                let allowlisted = intent.src == allowed.addr;
                let meant = (
                    intent.class,
                    mode == Mode::Drop && intent.to_5351 && !allowlisted && intent.class.is_some(),
                    intent.class.map_or(0, |_| f.len() as u64),
                );
                assert_eq!(
                    (got.class, got.drop, got.bytes),
                    meant,
                    "the kernel counts a frame as other than it was built (seed {seed:#x}, {} \
                     mode, {} link, frame {i} of the phase, meant {intent:?}):\n  frame {}",
                    mode.name(),
                    link.name(),
                    hex(&f)
                );
                if intent.class.is_some() {
                    assert_eq!(
                        got.source(),
                        intent.src,
                        "the sender (frame {i}, {})",
                        hex(&f)
                    );
                }
                *intended.entry(intent.class).or_default() += 1;
            }
            allowed_seen += u64::from(want.allowed);
            if let Some(class) = want.class {
                counted += 1;
                host_counts.classes[class.index() as usize].count(&want);
            }
            // The host table never evicts; keep the kernel's LRU far from
            // full so it does not either, then forget on both sides.
            if reference.frags.0.len() >= (FRAGS_MAX_ENTRIES / 4) as usize {
                reference.clear_fragments();
                filter.clear_fragments().expect("clearing the fragment map");
            }
        }
    }
    host_counts.fill_aggregates();
    let kernel_counts = filter.snapshot().expect("reading counters");
    assert_eq!(
        kernel_counts, host_counts,
        "the kernel's counters differ from the host's sum"
    );
    let per_class: Vec<String> = Class::ALL
        .iter()
        .filter(|c| host_counts.get(**c).packets() > 0)
        .map(|c| format!("{} {}", c.name(), host_counts.get(*c).packets()))
        .collect();
    println!(
        "differential: {total} frames agree ({counted} counted) in {:.1} s; per class: {}",
        start.elapsed().as_secs_f64(),
        per_class.join(", ")
    );
    println!("differential: {allowed_seen} datagrams let through by the allowlist");
    let checked: u64 = intended.values().sum();
    println!(
        "differential: {checked} unmutated frames are the class, verdict, bytes and sender \
         their generator meant; per class: {intended:?}"
    );
    // The oracle must have judged every class a payload or the header
    // chain decides, and uncounted frames, or it proves little.
    for class in Class::ALL
        .into_iter()
        .filter(|c| !c.is_aggregate() && *c != Class::FragmentNonfirst)
    {
        assert!(
            intended.get(&Some(class)).copied().unwrap_or(0) > 0,
            "no unmutated frame of class {} was built",
            class.name()
        );
    }
    assert!(intended.get(&None).copied().unwrap_or(0) > 0);
    assert!(allowed_seen > 0, "no frame reached the allowlist");
    // The generator must reach every class, or the comparison proves little.
    for class in Class::ALL {
        assert!(
            host_counts.get(class).packets() > 0,
            "no frame of class {}",
            class.name()
        );
    }
}
