//! One walk: the replay attributes a datagram to the sender the live
//! program records (the shared walk's innermost IP source), not to what a
//! second parser would pick.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use nat_pmp_agent::{
    bpf::{sources, Filter},
    replay,
};
use nat_pmp_ebpf_common::{
    frames::{ethernet, ipv6, v4, V4_SRC, V6_SRC},
    headers::{ETH_P_IPV6, IPPROTO_IPIP},
    Mode,
};
use pcap_file::{
    pcap::{PcapHeader, PcapPacket, PcapWriter},
    DataLink,
};

/// An IPv4-in-IPv6 (DS-Lite) opcode-0 request: outer IPv6 from `V6_SRC`,
/// inner IPv4 from `V4_SRC`. Live, the program's source table holds the
/// inner IPv4 sender; the replay of a capture of the same frame must name
/// the same sender, and the kernel must agree with it frame by frame.
#[test]
fn an_ipv4_in_ipv6_request_has_the_same_source_live_and_in_replay() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert!(
        euid == 0,
        "this test loads the XDP program: run it as root (`cargo xtask test` does); refusing \
         to skip silently"
    );
    let frame = ethernet(&[], ETH_P_IPV6, &ipv6(IPPROTO_IPIP, &v4(&[0, 0])));
    let inner = IpAddr::V4(Ipv4Addr::from(V4_SRC));
    let outer = IpAddr::V6(Ipv6Addr::from(V6_SRC));

    // Live: the program's own source table after one run.
    let filter = Filter::load().expect("loading the XDP program");
    filter.run_frame(&frame).expect("BPF_PROG_TEST_RUN");
    let live = sources::read(filter.maps(), 10).expect("reading the source table");
    let live: Vec<IpAddr> = live.top.iter().map(|s| s.addr).collect();
    assert_eq!(
        live,
        [inner],
        "the live program records the inner IPv4 sender"
    );

    // Replay: a capture of the same frame.
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("ds-lite.pcap");
    let file = std::fs::File::create(&path).expect("creating the capture");
    let header = PcapHeader {
        datalink: DataLink::ETHERNET,
        ..PcapHeader::default()
    };
    let mut w = PcapWriter::with_header(file, header).expect("writing the pcap header");
    let len = u32::try_from(frame.len()).expect("a small frame");
    w.write_packet(&PcapPacket::new(
        std::time::Duration::from_hours(485_760),
        len,
        &frame,
    ))
    .expect("writing the frame");
    drop(w);
    let analysis = replay::replay(&replay::Options {
        files: vec![path],
        mode: Mode::Monitor,
        progress: false,
    })
    .expect("replaying the capture");
    assert_eq!(analysis.disagreement(), None, "kernel and host agree");
    let replayed: Vec<IpAddr> = analysis
        .sources_by_packets()
        .into_iter()
        .map(|(a, _)| a)
        .collect();
    assert_eq!(
        replayed, live,
        "replay names the sender the live program records"
    );
    assert!(!replayed.contains(&outer), "never the outer IPv6 source");
}

/// A capture within one hour: every source shown has a visible marker on
/// its hour (a line series alone draws nothing for a single point).
#[test]
fn a_capture_within_one_hour_plots_a_marker_per_source() {
    use nat_pmp_agent::replay::report::plot;
    use nat_pmp_ebpf_common::capgen::{write_file, Spec};

    let dir = tempfile::tempdir().expect("a temporary directory");
    let capture = dir.path().join("one-hour.pcap");
    let comp = write_file(
        &Spec {
            count: 300,
            hours: 1,
            ..Spec::default()
        },
        &capture,
    )
    .expect("writing the capture");
    let analysis = replay::replay(&replay::Options {
        files: vec![capture],
        mode: Mode::Monitor,
        progress: false,
    })
    .expect("replaying the capture");
    assert_eq!(
        analysis.hours().count(),
        1,
        "the capture lies within one hour"
    );
    let top = 3;
    let svg = dir.path().join("chart.svg");
    plot(&analysis, &svg, top).expect("drawing the chart");
    let chart = std::fs::read_to_string(&svg).expect("reading the chart");
    let series = comp.sources.len().min(top) + usize::from(comp.sources.len() > top);
    let markers = chart.matches("<circle").count();
    assert_eq!(
        markers, series,
        "one marker per series on its only hour ({series} series)"
    );
}
