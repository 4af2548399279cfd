//! The per-source map and the allowlist, in the kernel: the compiled XDP
//! program run with BPF_PROG_TEST_RUN on frames from chosen source
//! addresses.

use std::net::IpAddr;

use nat_pmp_agent::{
    bpf::{sources, Filter},
    stats::{
        allow,
        sources::{addr_of, Sources, LEDGER_MAX},
    },
};
use nat_pmp_ebpf_common::{
    frames::{ethernet, ipv4_between, ipv6_between, udp, V4Frag, V4_DST, V6_DST},
    headers::{ETH_P_IP, ETH_P_IPV6, IPPROTO_UDP},
    reference::Reference,
    samples::sample_payload,
    v4_mapped, Class, Config, Mode, DROP_LOG_PER_SEC, NATPMP_PORT, SOURCES_MAX_ENTRIES,
};

use crate::support::{
    require_root,
    xdp::{XDP_DROP, XDP_PASS},
};

/// A NAT-PMP/PCP datagram of `class` to port 5351 from `src` (16 bytes,
/// IPv4-mapped for IPv4).
fn from(src: [u8; 16], class: Class) -> Vec<u8> {
    let body = udp(40000, NATPMP_PORT, sample_payload(class));
    if src[..12] == v4_mapped([0; 4])[..12] {
        let src = [src[12], src[13], src[14], src[15]];
        udp4_from(src, &body)
    } else {
        ethernet(
            &[],
            ETH_P_IPV6,
            &ipv6_between(src, V6_DST, IPPROTO_UDP, &body),
        )
    }
}

/// An Ethernet frame of the UDP datagram `body` from `src` over IPv4.
fn udp4_from(src: [u8; 4], body: &[u8]) -> Vec<u8> {
    let ip = ipv4_between(src, V4_DST, IPPROTO_UDP, V4Frag::default(), &[], body);
    ethernet(&[], ETH_P_IP, &ip)
}

fn v4(a: [u8; 4]) -> [u8; 16] {
    v4_mapped(a)
}

fn v6(s: &str) -> [u8; 16] {
    s.parse::<std::net::Ipv6Addr>()
        .expect("an IPv6 address")
        .octets()
}

#[test]
fn sources_are_counted_exactly_per_address() {
    require_root();
    let mut filter = Filter::load().expect("loading the XDP program");
    filter.set_mode(Mode::Monitor).expect("mode");
    let a = v4([198, 18, 7, 1]);
    let b = v6("2001:db8::77");
    let plan = [
        (a, Class::NatpmpExternalAddressRequest, 5),
        (a, Class::PcpMapRequest, 2),
        (b, Class::NatpmpMapUdpRequest, 3),
    ];
    let mut bytes = [0u64; 2];
    for (src, class, n) in plan {
        let f = from(src, class);
        for _ in 0..n {
            assert_eq!(filter.run_frame(&f).expect("test run"), XDP_PASS);
            bytes[usize::from(src != a)] += f.len() as u64;
        }
    }
    // A frame that is not NAT-PMP/PCP leaves no source behind.
    let other = udp4_from([198, 18, 9, 9], &udp(40000, 53, b"x"));
    assert_eq!(filter.run_frame(&other).expect("test run"), XDP_PASS);

    let s = sources::read(filter.maps(), 10).expect("reading the sources");
    assert_eq!(s.tracked, 2, "{s:?}");
    let first = &s.top[0];
    assert_eq!(first.addr, "198.18.7.1".parse::<IpAddr>().expect("addr"));
    assert_eq!(first.stats.packets, 7);
    assert_eq!(first.stats.bytes, bytes[0]);
    assert_eq!(
        first.classes(),
        ["natpmp_external_address_request", "pcp_map_request"]
    );
    assert!(first.stats.first_seen_ns > 0 && first.stats.first_seen_ns <= first.stats.last_seen_ns);
    let second = &s.top[1];
    assert_eq!(second.addr, "2001:db8::77".parse::<IpAddr>().expect("addr"));
    assert_eq!(second.stats.packets, 3);
    assert_eq!(second.stats.bytes, bytes[1]);
    assert_eq!(second.classes(), ["natpmp_map_udp_request"]);
    // The JSON shape the reports print.
    let j = nat_pmp_agent::output::report::sources_json(&s);
    assert_eq!(j[0]["address"], "198.18.7.1");
    assert_eq!(j[1]["classes"][0], "natpmp_map_udp_request");
}

/// The sum of every source's packets and bytes plus `unattributed`.
fn attributed_plus_unattributed(s: &Sources) -> (u64, u64) {
    let packets: u64 = s.top.iter().map(|x| x.stats.packets).sum();
    let bytes: u64 = s.top.iter().map(|x| x.stats.bytes).sum();
    (
        packets + s.unattributed.packets,
        bytes + s.unattributed.bytes,
    )
}

/// A spoofed scan: more distinct senders in one interval than the table
/// holds, over several intervals, and more in all than the agent keeps.
/// Nothing is lost silently: every source's packets plus `unattributed`
/// equal the counted packets, exactly, after every interval; the table
/// never attributes more senders per interval than its bound; and a sender
/// seen in several intervals is one source with all its packets.
#[test]
fn a_spoofed_source_flood_is_accounted_for_exactly() {
    require_root();
    let mut filter = Filter::load().expect("loading the XDP program");
    filter.set_mode(Mode::Drop).expect("mode");
    let cpus = aya::util::nr_cpus().expect("counting CPUs");
    let per_epoch = 3 * SOURCES_MAX_ENTRIES;
    // Five intervals: more senders in all than the agent keeps.
    let epochs = 5u32;
    let steady = v4([198, 18, 200, 1]);
    let mut sent = (0u64, 0u64);
    let mut unattributed = 0u64;
    for epoch in 0..epochs {
        let start = std::time::Instant::now();
        // One sender in every interval, first thing after the tick.
        let f = from(steady, Class::NatpmpMapUdpRequest);
        assert_eq!(filter.run_frame(&f).expect("test run"), XDP_DROP);
        sent.0 += 1;
        sent.1 += f.len() as u64;
        for i in 0..per_epoch {
            let n = epoch * per_epoch + i;
            let [_, b1, b2, b3] = n.to_be_bytes();
            // Alternate families: IPv4 from 198.18.0.0/15, IPv6 from 2001:db8::/32.
            let src = if n.is_multiple_of(2) {
                v4([198, 18 + (b1 & 1), b2, b3])
            } else {
                let mut a = v6("2001:db8::");
                a[12..].copy_from_slice(&n.to_be_bytes());
                a
            };
            let f = from(src, Class::NatpmpExternalAddressRequest);
            assert_eq!(filter.run_frame(&f).expect("test run"), XDP_DROP);
            sent.0 += 1;
            sent.1 += f.len() as u64;
        }
        let flood = start.elapsed();

        let before = sources::read(filter.maps(), usize::MAX).expect("reading");
        sources::tick(filter.maps_mut(), 0).expect("the end of an interval");
        let s = sources::read(filter.maps(), usize::MAX).expect("reading");
        let snap = filter.snapshot().expect("counters");
        let counted = (snap.total().packets(), snap.total().bytes());
        println!(
            "interval {epoch}: {per_epoch} new senders in {:.2} s; {} sources known, {} \
             datagrams unattributed; counted {counted:?}",
            flood.as_secs_f64(),
            s.tracked,
            s.unattributed.packets
        );
        assert_eq!(counted, sent, "class counters stay exact");
        assert_eq!(
            attributed_plus_unattributed(&before),
            sent,
            "before the tick"
        );
        assert_eq!(attributed_plus_unattributed(&s), sent, "after the tick");
        assert!(s.tracked <= LEDGER_MAX, "{} sources", s.tracked);
        // This interval's datagrams that found a slot (one sender each): at
        // most the table's bound on each CPU that ran frames, and more
        // senders than that leave some unattributed.
        let attributed = u64::from(per_epoch) + 1 - (s.unattributed.packets - unattributed);
        unattributed = s.unattributed.packets;
        assert!(
            attributed <= (cpus as u64) * u64::from(SOURCES_MAX_ENTRIES),
            "{attributed} attributed in one interval"
        );
        assert!(
            attributed < u64::from(per_epoch),
            "some must be unattributed"
        );
    }
    let s = sources::read(filter.maps(), usize::MAX).expect("reading");
    let steady = s
        .top
        .iter()
        .find(|x| x.addr == addr_of(steady))
        .expect("the steady sender is known");
    assert_eq!(steady.stats.packets, u64::from(epochs), "{steady:?}");
    assert!(
        steady.stats.first_seen_ns < steady.stats.last_seen_ns,
        "first and last seen a few intervals apart: {steady:?}"
    );
    assert_eq!(steady.classes(), ["natpmp_map_udp_request"]);
}

/// The source table's set of an address is a keyed hash: another load (a
/// new key) puts the same addresses in other sets, and addresses spread
/// evenly over the sets.
#[test]
fn the_source_hash_is_keyed_and_even() {
    use nat_pmp_ebpf_common::{addr_words, source_set, SOURCE_SETS};
    require_root();
    let a = Filter::load().expect("loading").config().expect("config");
    let b = Filter::load().expect("loading").config().expect("config");
    assert_ne!(a.hash_key, b.hash_key, "a key per load");
    assert_ne!(a.hash_key, [0, 0]);
    // IPv4 senders of a /16, and IPv6 senders of one /64 that differ only
    // in the last bits of their interface identifier (what a scanner picks).
    let mut addrs: Vec<[u64; 2]> = (0..32_768u32)
        .map(|i| {
            let [_, _, x, y] = i.to_be_bytes();
            addr_words(&v4([198, 18, x, y]))
        })
        .collect();
    addrs.extend((0..32_768u32).map(|i| {
        let mut a = v6("2001:db8:1:2::");
        a[12..].copy_from_slice(&i.to_be_bytes());
        addr_words(&a)
    }));
    let same = addrs
        .iter()
        .filter(|w| source_set(**w, a.hash_key) == source_set(**w, b.hash_key))
        .count();
    assert!(
        same < addrs.len() / 64,
        "{same} addresses in the same set under both keys"
    );
    let mut per_set = vec![0u32; SOURCE_SETS as usize];
    for w in &addrs {
        per_set[source_set(*w, a.hash_key) as usize] += 1;
    }
    let mean = 65_536.0 / f64::from(SOURCE_SETS);
    let (min, max) = (
        *per_set.iter().min().unwrap_or(&0),
        *per_set.iter().max().unwrap_or(&0),
    );
    assert!(
        f64::from(min) > mean * 0.6 && f64::from(max) < mean * 1.4,
        "sets hold {min}..{max} of a mean {mean}"
    );
}

/// `--no-sources`: the class counters count exactly as before, the source
/// map is left alone; switched back on, sources are tracked again.
#[test]
fn source_tracking_switches_off_and_on() {
    require_root();
    let mut filter = Filter::load().expect("loading the XDP program");
    filter.set_mode(Mode::Drop).expect("mode");
    filter.set_source_tracking(false).expect("tracking off");
    assert_eq!(filter.config().expect("config").sources_off, 1);
    let f = from(v4([198, 18, 7, 2]), Class::NatpmpExternalAddressRequest);
    for _ in 0..4 {
        assert_eq!(filter.run_frame(&f).expect("test run"), XDP_DROP);
    }
    let c = *filter
        .snapshot()
        .expect("counters")
        .get(Class::NatpmpExternalAddressRequest);
    assert_eq!(
        (c.dropped_packets, c.dropped_bytes),
        (4, 4 * f.len() as u64)
    );
    assert_eq!(sources::read(filter.maps(), 0).expect("sources").tracked, 0);
    filter.set_source_tracking(true).expect("tracking on");
    assert_eq!(filter.config().expect("config").sources_off, 0);
    assert_eq!(filter.run_frame(&f).expect("test run"), XDP_DROP);
    let s = sources::read(filter.maps(), 10).expect("reading the sources");
    assert_eq!((s.tracked, s.top[0].stats.packets), (1, 1), "{s:?}");
}

/// Runs `frame` in the kernel and in the host reference and checks both
/// give `want`.
fn check(filter: &Filter, reference: &mut Reference, what: &str, frame: &[u8], want: u32) {
    let got = filter.run_frame(frame).expect("test run");
    let host = reference.run(frame);
    assert_eq!(got, want, "{what}: kernel action");
    assert_eq!(
        u32::from(host.drop),
        u32::from(want == XDP_DROP),
        "{what}: the host reference disagrees with the kernel"
    );
}

#[test]
fn drop_mode_passes_exactly_the_allowlisted_prefixes() {
    require_root();
    let mut filter = Filter::load().expect("loading the XDP program");
    filter.set_mode(Mode::Drop).expect("mode");
    let prefixes = ["198.51.100.0/24", "203.0.113.128/25", "2001:db8:1::/48"];
    let mut reference = Reference::new(Config::new(Mode::Drop));
    for p in prefixes {
        let p = allow::parse(p).expect("a prefix");
        filter.maps_mut().allow(p).expect("adding to the allowlist");
        reference.allow.0.push(p);
    }
    let mut listed: Vec<String> = filter
        .maps()
        .allowed()
        .expect("listing")
        .iter()
        .map(allow::show)
        .collect();
    listed.sort();
    assert_eq!(
        listed,
        ["198.51.100.0/24", "2001:db8:1::/48", "203.0.113.128/25"]
    );
    // The program skips the trie while the count the agent keeps is 0.
    let count = |f: &Filter| f.config().expect("config").allow_prefixes;
    assert_eq!(count(&filter), 3);
    // Each prefix's first and last address, and the addresses just
    // outside it on either side.
    let cases: [(&str, [u8; 16], bool); 12] = [
        ("first of /24", v4([198, 51, 100, 0]), true),
        ("last of /24", v4([198, 51, 100, 255]), true),
        ("below /24", v4([198, 51, 99, 255]), false),
        ("above /24", v4([198, 51, 101, 0]), false),
        ("first of /25", v4([203, 0, 113, 128]), true),
        ("last of /25", v4([203, 0, 113, 255]), true),
        ("below /25", v4([203, 0, 113, 127]), false),
        ("above /25", v4([203, 0, 114, 0]), false),
        ("first of /48", v6("2001:db8:1::"), true),
        (
            "last of /48",
            v6("2001:db8:1:ffff:ffff:ffff:ffff:ffff"),
            true,
        ),
        (
            "below /48",
            v6("2001:db8:0:ffff:ffff:ffff:ffff:ffff"),
            false,
        ),
        ("above /48", v6("2001:db8:2::"), false),
    ];
    let mut passed = 0;
    let mut dropped = 0;
    for (what, src, allowed) in cases {
        let want = if allowed { XDP_PASS } else { XDP_DROP };
        check(
            &filter,
            &mut reference,
            what,
            &from(src, Class::PcpMapRequest),
            want,
        );
        if allowed {
            passed += 1;
        } else {
            dropped += 1;
        }
    }
    let c = *filter
        .snapshot()
        .expect("counters")
        .get(Class::PcpMapRequest);
    assert_eq!((c.passed_packets, c.dropped_packets), (passed, dropped));

    // Runtime changes take effect on the next packet, without a reload.
    let inside = from(v4([198, 51, 100, 7]), Class::NatpmpMapTcpRequest);
    check(&filter, &mut reference, "listed", &inside, XDP_PASS);
    let p = allow::parse("198.51.100.0/24").expect("a prefix");
    assert!(filter.maps_mut().disallow(p).expect("removing"));
    reference.allow.0.retain(|x| *x != p);
    assert_eq!(count(&filter), 2);
    check(&filter, &mut reference, "after del", &inside, XDP_DROP);
    assert!(!filter.maps_mut().disallow(p).expect("removing twice"));
    assert_eq!(count(&filter), 2);
    filter.maps_mut().allow(p).expect("adding again");
    reference.allow.0.push(p);
    assert_eq!(count(&filter), 3);
    check(&filter, &mut reference, "after add", &inside, XDP_PASS);
    // A stale count (another process wrote the trie) is repaired by a
    // recount; with the trie emptied, nothing is let through.
    for q in reference.allow.0.drain(..) {
        filter.maps_mut().disallow(q).expect("removing");
    }
    assert_eq!(count(&filter), 0);
    check(
        &filter,
        &mut reference,
        "allowlist empty",
        &inside,
        XDP_DROP,
    );
    // Monitor mode passes everything; the allowlist changes nothing there.
    filter.set_mode(Mode::Monitor).expect("mode");
    reference.config = Config::new(Mode::Monitor);
    let outside = from(v4([198, 51, 101, 7]), Class::NatpmpMapTcpRequest);
    check(&filter, &mut reference, "monitor", &outside, XDP_PASS);
}

/// Collects the lines a logger is given.
#[derive(Clone, Default)]
struct Capture(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }

    fn log(&self, record: &log::Record) {
        self.0.lock().expect("the capture lock").push(format!(
            "{} {}",
            record.target(),
            record.args()
        ));
    }

    fn flush(&self) {}
}

#[test]
fn a_flood_of_drops_logs_at_most_the_bound() {
    require_root();
    let mut filter = Filter::load().expect("loading the XDP program");
    filter.set_mode(Mode::Drop).expect("mode");
    let capture = Capture::default();
    let mut log = filter
        .drop_log(capture.clone())
        .expect("opening the drop log");
    let frame = from(v4([198, 18, 3, 4]), Class::NatpmpExternalAddressRequest);
    let n = 20_000u64;
    let cpus = aya::util::nr_cpus().expect("counting CPUs") as u64;
    // No budget yet: nothing is logged (the agent grants it every interval).
    for _ in 0..100 {
        assert_eq!(filter.run_frame(&frame).expect("test run"), XDP_DROP);
    }
    log.flush();
    assert!(capture.0.lock().expect("the capture lock").is_empty());
    // Two intervals' budgets: the instance logs at most its budget per
    // interval (one more per CPU racing for the last token).
    for _ in 0..2 {
        filter
            .maps_mut()
            .refill_log_budget(DROP_LOG_PER_SEC)
            .expect("refilling the budget");
        for _ in 0..n / 2 {
            assert_eq!(filter.run_frame(&frame).expect("test run"), XDP_DROP);
        }
    }
    log.flush();
    let lines = capture.0.lock().expect("the capture lock").clone();
    let bound = (DROP_LOG_PER_SEC + cpus) * 2;
    println!(
        "drop log: {n} drops on {cpus} CPUs -> {} lines (bound {bound}); first: {:?}",
        lines.len(),
        lines.first()
    );
    assert!(
        lines.len() as u64 >= DROP_LOG_PER_SEC * 2,
        "the budget is spent in each interval: {lines:?}"
    );
    assert!(
        lines.len() as u64 <= bound,
        "{} lines: {lines:?}",
        lines.len()
    );
    assert!(
        lines
            .iter()
            .all(|l| l == "nat_pmp_ebpf dropped natpmp_external_address_request from 198.18.3.4"),
        "{lines:?}"
    );
    let c = filter.snapshot().expect("counters");
    assert_eq!(
        c.get(Class::NatpmpExternalAddressRequest).dropped_packets,
        n + 100
    );
}
