//! The per-source map and the allowlist, in the kernel: the compiled XDP
//! program run with BPF_PROG_TEST_RUN on frames from chosen source
//! addresses.

mod common;

use std::net::IpAddr;

use nat_pmp_agent::{allow, ebpf::Filter, sources};
use nat_pmp_ebpf_common::{
    frames::{ethernet, ipv4, ipv6, udp, V4Frag},
    headers::{ETH_P_IP, ETH_P_IPV6, IPPROTO_UDP},
    reference::Reference,
    samples::sample_payload,
    v4_mapped, Class, Config, Mode, DROP_LOG_PER_SEC, NATPMP_PORT, SOURCES_MAX_ENTRIES,
};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

/// A NAT-PMP/PCP datagram of `class` to port 5351 from `src` (16 bytes,
/// IPv4-mapped for IPv4).
fn from(src: [u8; 16], class: Class) -> Vec<u8> {
    let body = udp(40000, NATPMP_PORT, sample_payload(class));
    let mut f;
    if src[..12] == v4_mapped([0; 4])[..12] {
        f = ethernet(
            &[],
            ETH_P_IP,
            &ipv4(IPPROTO_UDP, V4Frag::default(), &[], &body),
        );
        f[14 + 12..14 + 16].copy_from_slice(&src[12..]);
    } else {
        f = ethernet(&[], ETH_P_IPV6, &ipv6(IPPROTO_UDP, &body));
        f[14 + 8..14 + 24].copy_from_slice(&src);
    }
    f
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
    common::require_root();
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
    let other = {
        let body = udp(40000, 53, b"x");
        let mut f = ethernet(
            &[],
            ETH_P_IP,
            &ipv4(IPPROTO_UDP, V4Frag::default(), &[], &body),
        );
        f[26..30].copy_from_slice(&[198, 18, 9, 9]);
        f
    };
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
    let j = s.to_json();
    assert_eq!(j[0]["address"], "198.18.7.1");
    assert_eq!(j[1]["classes"][0], "natpmp_map_udp_request");
}

#[test]
fn a_spoofed_source_flood_stays_within_the_bound_and_counts_exactly() {
    common::require_root();
    let mut filter = Filter::load().expect("loading the XDP program");
    filter.set_mode(Mode::Drop).expect("mode");
    let n = 3 * SOURCES_MAX_ENTRIES;
    let start = std::time::Instant::now();
    let mut sent_bytes = 0u64;
    let mut last = Vec::new();
    for i in 0..n {
        let [_, b1, b2, b3] = i.to_be_bytes();
        // Alternate families: IPv4 from 198.18.0.0/15, IPv6 from 2001:db8::/32.
        let src = if i % 2 == 0 {
            v4([198, 18 + (b1 & 1), b2, b3])
        } else {
            let mut a = v6("2001:db8::");
            a[12..].copy_from_slice(&i.to_be_bytes());
            a
        };
        let f = from(src, Class::NatpmpExternalAddressRequest);
        assert_eq!(filter.run_frame(&f).expect("test run"), XDP_DROP);
        sent_bytes += f.len() as u64;
        if i >= n - 100 {
            last.push(sources::addr_of(src));
        }
    }
    let elapsed = start.elapsed();
    let tracked = filter.maps().sources_tracked().expect("counting sources");
    let snap = filter.snapshot().expect("counters");
    let c = snap.get(Class::NatpmpExternalAddressRequest);
    println!(
        "flood: {n} distinct sources in {:.2} s; map holds {tracked} (bound {SOURCES_MAX_ENTRIES})",
        elapsed.as_secs_f64()
    );
    assert!(tracked <= SOURCES_MAX_ENTRIES as usize, "{tracked} entries");
    assert!(tracked > 0);
    assert_eq!(c.dropped_packets, u64::from(n), "class counters stay exact");
    assert_eq!(c.dropped_bytes, sent_bytes);
    assert_eq!(snap.total().packets(), u64::from(n));
    // The most recent senders are the ones the LRU keeps, each exactly.
    let all = sources::read(filter.maps(), usize::MAX).expect("reading the sources");
    assert_eq!(all.tracked, tracked);
    for addr in &last {
        let s = all
            .top
            .iter()
            .find(|s| s.addr == *addr)
            .unwrap_or_else(|| panic!("recent source {addr} was evicted"));
        assert_eq!(s.stats.packets, 1, "{addr}");
    }
    assert!(all.top.iter().all(|s| s.stats.packets == 1));
    // The batch read (BPF_MAP_LOOKUP_BATCH, many chunks of 1,024 here) and
    // the key-by-key read see the same table.
    let mut batch = filter.maps().sources().expect("batch read");
    let mut one = filter.maps().sources_one_by_one().expect("key-by-key read");
    batch.sort_by_key(|e| e.0);
    one.sort_by_key(|e| e.0);
    assert_eq!(batch.len(), tracked);
    assert_eq!(batch, one, "batch and key-by-key reads differ");
}

/// `--no-sources`: the class counters count exactly as before, the source
/// map is left alone; switched back on, sources are tracked again.
#[test]
fn source_tracking_switches_off_and_on() {
    common::require_root();
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
    assert_eq!(filter.maps().sources_tracked().expect("sources"), 0);
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
    common::require_root();
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
    common::require_root();
    let mut filter = Filter::load().expect("loading the XDP program");
    filter.set_mode(Mode::Drop).expect("mode");
    let capture = Capture::default();
    let mut log = filter
        .drop_log(capture.clone())
        .expect("opening the drop log");
    let frame = from(v4([198, 18, 3, 4]), Class::NatpmpExternalAddressRequest);
    let n = 20_000u64;
    let start = std::time::Instant::now();
    for _ in 0..n {
        assert_eq!(filter.run_frame(&frame).expect("test run"), XDP_DROP);
    }
    let secs = start.elapsed().as_secs_f64();
    log.flush();
    let lines = capture.0.lock().expect("the capture lock").clone();
    let cpus = aya::util::nr_cpus().expect("counting CPUs") as u64;
    // Each CPU logs at most DROP_LOG_PER_SEC per one-second window; a run
    // of `secs` seconds touches at most ceil(secs) + 1 windows.
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "seconds"
    )]
    let windows = secs.ceil() as u64 + 1;
    let bound = cpus * DROP_LOG_PER_SEC * windows;
    println!(
        "drop log: {n} drops in {secs:.2} s on {cpus} CPUs -> {} lines (bound {bound}); first: {:?}",
        lines.len(),
        lines.first()
    );
    assert!(!lines.is_empty(), "a drop must be logged");
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
        n
    );
}
