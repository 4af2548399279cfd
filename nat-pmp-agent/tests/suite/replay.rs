//! Replay tests: captures through the real XDP program (`BPF_PROG_TEST_RUN`)
//! via the `nat-pmp-agent replay` binary.
//!
//! - Generated captures (pcap and pcapng, Ethernet and raw IP) report
//!   exactly the composition the generator wrote: per class, per source,
//!   per hour, and the background traffic uncounted.
//! - Truncated and corrupt captures, unsupported link types and missing
//!   files fail naming the file and the frame, and still print the report of
//!   what was read (checked against an independent parse with etherparse).
//! - A tshark capture of real client traffic in namespaces replays to
//!   exactly what the client sent, and to exactly what the live agent
//!   attached to the same interface counted.
#![expect(
    clippy::cast_possible_truncation,
    reason = "test frames and counts are small"
)]

use std::{
    collections::BTreeMap,
    path::Path,
    process::{Command, Output},
    time::Duration,
};

use etherparse::{SlicedPacket, TransportSlice};
use nat_pmp_ebpf_common::capgen::{write_file, Composition, Format, Link, Spec};
use nat_pmp_ebpf_common::{
    frames::{ethernet, ipv4_sent, udp},
    headers::{ETH_P_IP, IPPROTO_UDP},
    samples::sample_payload,
    Class, NATPMP_PORT,
};
use pcap_file::{
    pcap::{PcapHeader, PcapPacket, PcapWriter},
    DataLink,
};
use serde_json::Value;
use tempfile::TempDir;

use crate::support::{
    agent::AGENT,
    process::Agent,
    require_root,
    sentinel::{Sentinel, SENTINEL_PORT},
    wan::{WanLink, INTERNET_ADDR, ROUTER_ADDR},
};

/// A temporary directory `natpmp-replay-<tag>-...`, removed on drop.
fn temp_dir(tag: &str) -> TempDir {
    tempfile::Builder::new()
        .prefix(&format!("natpmp-replay-{tag}-"))
        .tempdir()
        .expect("creating a temporary directory")
}

fn replay(args: &[&str]) -> Output {
    Command::new(AGENT)
        .arg("replay")
        .args(args)
        .output()
        .expect("running nat-pmp-agent replay")
}

/// The replay's JSON report, checked against the report schema.
fn json_of(out: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "replay printed no JSON object ({e}):\nstdout: {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    crate::support::schema::assert_valid(&report);
    report
}

fn replay_json(file: &Path) -> Value {
    let out = replay(&[file.to_str().unwrap(), "--output", "json"]);
    assert!(
        out.status.success(),
        "replay of {} failed: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    json_of(&out)
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("{v} is not a count"))
}

/// Asserts that a replay's JSON report is exactly `comp`.
fn assert_matches(report: &Value, comp: &Composition) {
    let what = format!("{:?}/{:?}", comp.format, comp.link);
    assert_eq!(u(&report["frames"]), comp.frames, "{what}: frames");
    assert_eq!(
        u(&report["other_frames"]),
        comp.background_frames,
        "{what}: background traffic must pass uncounted"
    );
    assert_eq!(u(&report["skipped_short"]), 0, "{what}");
    assert_eq!(report["kernel_agrees"], true, "{what}");
    assert_eq!(report["complete"], true, "{what}");
    for class in Class::ALL {
        let want = comp.class(class);
        let got = &report["counters"][class.name()];
        assert_eq!(
            (u(&got["packets"]), u(&got["bytes"]), u(&got["oversized"])),
            (want.packets, want.bytes, want.oversized),
            "{what}: {} (packets, bytes, oversized)",
            class.name()
        );
        assert_eq!(u(&got["dropped_packets"]), 0, "{what}: monitor mode");
    }
    let sources: BTreeMap<String, &Value> = report["sources"]
        .as_array()
        .expect("sources")
        .iter()
        .map(|s| (s["address"].as_str().unwrap().to_owned(), s))
        .collect();
    assert_eq!(
        sources.keys().collect::<Vec<_>>(),
        comp.sources.keys().collect::<Vec<_>>(),
        "{what}: sources"
    );
    for (addr, want) in &comp.sources {
        let got = sources[addr];
        assert_eq!(u(&got["packets"]), want.packets, "{what}: {addr} packets");
        assert_eq!(u(&got["bytes"]), want.bytes, "{what}: {addr} bytes");
        let per_hour: BTreeMap<String, u64> = got["per_hour"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(h, n)| (h.clone(), u(n)))
            .collect();
        assert_eq!(per_hour, want.per_hour, "{what}: {addr} per hour");
    }
}

/// Generated captures in both formats and both link types replay to exactly
/// the composition written.
#[test]
fn generated_captures_replay_to_their_composition() {
    require_root();
    let dir = temp_dir("gen");
    for (i, (format, link)) in [
        (Format::Pcap, Link::Ethernet),
        (Format::Pcapng, Link::Ethernet),
        (Format::Pcap, Link::Raw),
        (Format::Pcapng, Link::Raw),
    ]
    .into_iter()
    .enumerate()
    {
        let path = dir.path().join(format!("scan-{i}.cap"));
        let spec = Spec {
            count: 3000,
            seed: 7 + i as u64,
            format,
            link,
            hours: 5,
            ..Spec::default()
        };
        let comp = write_file(&spec, &path).expect("writing the capture");
        // The generator's own promise, so that the comparison means something.
        assert_eq!(comp.natpmp_packets(), 3000);
        assert_eq!(
            comp.class(Class::NatpmpExternalAddressRequest).packets,
            2484
        );
        assert_eq!(comp.class(Class::NatpmpMapUdpRequest).packets, 420);
        assert_eq!(comp.class(Class::NatpmpMapTcpRequest).packets, 75);
        assert!(comp.sources.len() >= 5);
        let report = replay_json(&path);
        assert_matches(&report, &comp);
        assert_eq!(report["hours"].as_array().unwrap().len(), 5);
    }
}

/// Two files in one run add up; CSV and text views carry the same totals.
#[test]
fn several_files_add_up_and_every_view_agrees() {
    require_root();
    let dir = temp_dir("multi");
    let (a, b) = (dir.path().join("a.pcap"), dir.path().join("b.pcapng"));
    let ca = write_file(
        &Spec {
            count: 500,
            seed: 1,
            ..Spec::default()
        },
        &a,
    )
    .unwrap();
    let cb = write_file(
        &Spec {
            count: 700,
            seed: 2,
            format: Format::Pcapng,
            link: Link::Raw,
            ..Spec::default()
        },
        &b,
    )
    .unwrap();
    let files = [a.to_str().unwrap(), b.to_str().unwrap()];
    let out = replay(&[files[0], files[1], "--output", "json"]);
    assert!(out.status.success());
    let report = json_of(&out);
    assert_eq!(u(&report["total"]["packets"]), 1200);
    assert_eq!(u(&report["frames"]), ca.frames + cb.frames);
    let op0 = ca.class(Class::NatpmpExternalAddressRequest).packets
        + cb.class(Class::NatpmpExternalAddressRequest).packets;
    assert_eq!(
        u(&report["counters"]["natpmp_external_address_request"]["packets"]),
        op0
    );

    let svg = dir.path().join("chart.svg");
    let out = replay(&[
        files[0],
        files[1],
        "--output",
        "csv",
        "--plot",
        svg.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let csv = String::from_utf8(out.stdout).unwrap();
    let row = csv
        .lines()
        .find(|l| l.starts_with("class,,,natpmp_external_address_request,"))
        .expect("a CSV row for opcode 0");
    assert_eq!(row.split(',').nth(5).unwrap(), op0.to_string(), "{row}");
    let hour_rows: u64 = csv
        .lines()
        .filter(|l| l.starts_with("hour,"))
        .map(|l| l.split(',').nth(5).unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(hour_rows, 1200, "per-hour rows add up to every datagram");
    let chart = std::fs::read_to_string(&svg).expect("the chart was written");
    assert!(chart.starts_with("<svg") && chart.contains("packets per hour by source"));
    assert!(
        chart.contains(ca.sources.keys().next().unwrap()),
        "sources in the legend"
    );

    let out = replay(&[files[0], files[1], "--top", "3"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("| v0 op 0 ") && text.contains("external address request"));
    assert!(text.contains(&format!(" {op0} |")), "{text}");
    assert!(text.contains("top sources (3 of"), "{text}");

    let out = replay(&[
        files[0],
        "--plot",
        dir.path().join("chart.png").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("write an .svg"));
}

/// Byte offsets of every pcap record (after the 24-byte file header), with
/// each record's frame.
fn pcap_records(file: &[u8]) -> Vec<(usize, &[u8])> {
    let mut out = Vec::new();
    let mut at = 24;
    while at + 16 <= file.len() {
        let caplen = u32::from_le_bytes(file[at + 8..at + 12].try_into().unwrap()) as usize;
        out.push((at, &file[at + 16..at + 16 + caplen]));
        at += 16 + caplen;
    }
    out
}

/// Datagrams to port 5351 among `frames`, by an independent parser.
fn natpmp_in(frames: &[(usize, &[u8])]) -> u64 {
    frames
        .iter()
        .filter(|(_, f)| {
            matches!(
                SlicedPacket::from_ethernet(f).map(|p| p.transport),
                Ok(Some(TransportSlice::Udp(u))) if u.destination_port() == NATPMP_PORT
            )
        })
        .count() as u64
}

fn failing(args: &[&str]) -> (Value, String) {
    let mut a = args.to_vec();
    a.extend(["--output", "json"]);
    let out = replay(&a);
    assert!(!out.status.success(), "replay of {args:?} must fail");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (json_of(&out), stderr)
}

/// Truncated and corrupt captures, unsupported link types, missing files
/// and non-captures: an error naming the file and frame, and the report of
/// what was read before it.
#[test]
fn bad_input_names_file_and_frame_and_keeps_the_partial_report() {
    require_root();
    let dir = temp_dir("bad");
    let good = dir.path().join("good.pcap");
    write_file(
        &Spec {
            count: 400,
            ..Spec::default()
        },
        &good,
    )
    .unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let records = pcap_records(&bytes);
    let k = 300; // The frame (1-based) the damage hits.
    let before = &records[..k - 1];

    // Truncated inside frame k.
    let cut = dir.path().join("cut.pcap");
    std::fs::write(&cut, &bytes[..records[k - 1].0 + 20]).unwrap();
    let (report, err) = failing(&[cut.to_str().unwrap()]);
    assert!(
        err.contains(cut.to_str().unwrap()) && err.contains(&format!("frame {k}")),
        "{err}"
    );
    assert!(err.contains("truncated"), "{err}");
    assert_eq!(report["complete"], false);
    assert_eq!(u(&report["frames"]), (k - 1) as u64);
    assert_eq!(u(&report["total"]["packets"]), natpmp_in(before));
    assert_eq!(u(&report["natpmp_frames"]), natpmp_in(before));

    // A record header whose length exceeds the snap length: corrupt.
    let mut corrupt = bytes.clone();
    let at = records[k - 1].0;
    corrupt[at + 8..at + 12].copy_from_slice(&0x00ff_ffffu32.to_le_bytes());
    let bad = dir.path().join("corrupt.pcap");
    std::fs::write(&bad, &corrupt).unwrap();
    let (report, err) = failing(&[bad.to_str().unwrap()]);
    assert!(
        err.contains(bad.to_str().unwrap()) && err.contains(&format!("frame {k}")),
        "{err}"
    );
    assert_eq!(u(&report["frames"]), (k - 1) as u64);
    assert_eq!(u(&report["total"]["packets"]), natpmp_in(before));

    // Unsupported link type (IEEE 802.11, 105).
    let mut wifi = bytes.clone();
    wifi[20..24].copy_from_slice(&105u32.to_le_bytes());
    let wlan = dir.path().join("wlan.pcap");
    std::fs::write(&wlan, &wifi).unwrap();
    let (report, err) = failing(&[wlan.to_str().unwrap()]);
    assert!(
        err.contains(wlan.to_str().unwrap()) && err.contains("link type 105"),
        "{err}"
    );
    assert_eq!(report["files"][0]["link_types"][0], 105);

    // A good file, then a missing one: the good file's counts survive.
    let missing = dir.path().join("missing.pcap");
    let (report, err) = failing(&[good.to_str().unwrap(), missing.to_str().unwrap()]);
    assert!(err.contains(missing.to_str().unwrap()), "{err}");
    assert_eq!(u(&report["total"]["packets"]), 400);

    // Not a capture at all.
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "not a capture\n").unwrap();
    let (_, err) = failing(&[text.to_str().unwrap()]);
    assert!(err.contains("not a pcap or pcapng file"), "{err}");

    // The text view prints the partial report too, then the error.
    let out = replay(&[cut.to_str().unwrap()]);
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("INCOMPLETE") && text.contains(&format!("frame {k}")),
        "{text}"
    );
}

/// Frames shorter than an Ethernet header (which `BPF_PROG_TEST_RUN` refuses)
/// are counted as skipped, not fatal; raw-IP frames report captured bytes.
#[test]
fn short_frames_are_skipped_and_raw_ip_bytes_are_as_captured() {
    require_root();
    let dir = temp_dir("short");
    let path = dir.path().join("short.pcap");
    let mut w = PcapWriter::with_header(
        std::fs::File::create(&path).unwrap(),
        PcapHeader {
            datalink: DataLink::RAW,
            ..PcapHeader::default()
        },
    )
    .unwrap();
    let payload = sample_payload(Class::NatpmpMapTcpRequest);
    let ip = ipv4_sent(
        [198, 18, 5, 5],
        [198, 18, 0, 1],
        IPPROTO_UDP,
        &udp(40000, NATPMP_PORT, payload),
    );
    // 2025-06-01T00:00:00Z.
    let t = Duration::from_hours(485_760);
    // Raw-IP frames go to the program as they are (its link type set to raw
    // IP), so the 3- and 1-byte ones are below the 14 bytes
    // BPF_PROG_TEST_RUN accepts: skipped, not fatal.
    for frame in [&ip[..], &ip[..3], &ip[..], &[0x45u8][..]] {
        w.write_packet(&PcapPacket::new(t, frame.len() as u32, frame))
            .unwrap();
    }
    drop(w);
    let report = replay_json(&path);
    assert_eq!(u(&report["frames"]), 4);
    let c = &report["counters"]["natpmp_map_tcp_request"];
    assert_eq!(u(&c["packets"]), 2);
    assert_eq!(u(&c["bytes"]), 2 * ip.len() as u64, "bytes as captured");
    assert_eq!(u(&report["skipped_short"]), 2);

    let eth = dir.path().join("short-eth.pcap");
    let mut w =
        PcapWriter::with_header(std::fs::File::create(&eth).unwrap(), PcapHeader::default())
            .unwrap();
    let frame = ethernet(&[], ETH_P_IP, &ip);
    for f in [&frame[..], &frame[..10], &frame[..0], &frame[..]] {
        w.write_packet(&PcapPacket::new(t, f.len() as u32, f))
            .unwrap();
    }
    drop(w);
    let report = replay_json(&eth);
    assert_eq!(u(&report["skipped_short"]), 2);
    assert_eq!(
        u(&report["counters"]["natpmp_map_tcp_request"]["packets"]),
        2
    );
}

fn probe(link: &WanLink, args: &[&str]) -> Value {
    let out = link
        .internet
        .command(AGENT)
        .args([
            "probe",
            ROUTER_ADDR,
            "--rate",
            "2000",
            "--wait",
            "0",
            "--json",
        ])
        .args(args)
        .output()
        .expect("running nat-pmp-agent probe");
    assert!(
        out.status.success(),
        "probe failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("probe JSON")
}

/// Real client traffic in namespaces: the live agent counts it on wan0 while
/// tshark captures it there; the capture replays to exactly what the client
/// sent and exactly what the live agent counted.
#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one scenario: capture, sentinels, probes, replay, compare"
)]
fn tshark_capture_replays_to_what_was_sent_and_what_the_live_agent_counted() {
    require_root();
    let tshark = Command::new("tshark").arg("--version").output();
    assert!(
        tshark.is_ok_and(|o| o.status.success()),
        "tshark is missing: run `cargo xtask setup` (it installs Debian's tshark)"
    );
    let dir = temp_dir("live");
    let link = WanLink::new("rpl");

    // The live agent first: its first report means the program is attached.
    let agent = Agent::start(&link.router, &["--iface", "wan0", "--duration", "60"]);

    // Monitor mode passes everything, so the AF_PACKET tap behind XDP sees
    // every frame the program saw. Besides writing the capture, tshark
    // prints each frame's UDP port and length (`-P`), which is how the
    // sentinels below know it has captured them.
    let capture = dir.path().join("wan0.pcapng");
    let tshark_out = dir.path().join("tshark.out");
    let tshark_err = dir.path().join("tshark.err");
    let mut tshark = crate::support::process::Proc(
        link.router
            .command("tshark")
            .args(["-l", "-n", "-i", "wan0", "-w", capture.to_str().unwrap()])
            .args([
                "-P",
                "-T",
                "fields",
                "-e",
                "udp.dstport",
                "-e",
                "udp.length",
            ])
            .stdout(std::fs::File::create(&tshark_out).unwrap())
            .stderr(std::fs::File::create(&tshark_err).unwrap())
            .spawn()
            .expect("starting tshark"),
    );
    // Not "Capture started" and a little slack: a sentinel tshark printed
    // proves it is capturing; the second one, that it has captured (and
    // the agent counted) every frame sent before it.
    let sentinel = Sentinel::new(&link.router, ROUTER_ADDR, &link.internet);
    let printed = |udp_length: &str| {
        std::fs::read_to_string(&tshark_out).is_ok_and(|out| {
            out.lines()
                .any(|l| l == format!("{SENTINEL_PORT}\t{udp_length}"))
        })
    };
    let tshark_said = || {
        format!(
            "tshark printed:\n{}\n{}",
            std::fs::read_to_string(&tshark_out).unwrap_or_default(),
            std::fs::read_to_string(&tshark_err).unwrap_or_default()
        )
    };
    sentinel.sync_seen(printed, tshark_said);

    let mix = probe(&link, &["--count", "300"]);
    let others = probe(
        &link,
        &[
            "--count",
            "4",
            "--class",
            "pcp_announce_request",
            "--class",
            "natpmp_unsupported_opcode",
            "--class",
            "natpmp_external_address_response",
        ],
    );
    sentinel.sync_seen(printed, tshark_said);

    let live = agent.stop(libc::SIGINT).report;
    tshark.signal(libc::SIGINT);
    let st = tshark.wait_for(Duration::from_secs(10));
    assert!(st.is_some(), "tshark did not stop");

    let report = replay_json(&capture);
    let mut sent: BTreeMap<String, u64> = BTreeMap::new();
    for p in [&mix, &others] {
        for (class, n) in p["sent"].as_object().unwrap() {
            *sent.entry(class.clone()).or_default() += u(n);
        }
    }
    assert_eq!(sent.values().sum::<u64>(), 312);
    // A pcp_* class also counts in its aggregate, `pcp`.
    for (name, n) in sent.clone() {
        if let Some(parent) = Class::from_name(&name).and_then(Class::parent) {
            *sent.entry(parent.name().to_owned()).or_default() += n;
        }
    }
    for class in Class::ALL {
        let name = class.name();
        let replayed = &report["counters"][name];
        let counted = &live["counters"][name];
        assert_eq!(
            u(&counted["packets"]),
            sent.get(name).copied().unwrap_or(0),
            "{name}: live agent vs sent\nlive: {live}\ntshark: {}",
            std::fs::read_to_string(&tshark_err).unwrap_or_default()
        );
        assert_eq!(
            u(&replayed["packets"]),
            sent.get(name).copied().unwrap_or(0),
            "{name}: replay vs sent\nreplay: {report}\ntshark: {}",
            std::fs::read_to_string(&tshark_err).unwrap_or_default()
        );
        for field in [
            "packets",
            "bytes",
            "dropped_packets",
            "dropped_bytes",
            "oversized",
        ] {
            assert_eq!(
                u(&replayed[field]),
                u(&counted[field]),
                "{name}.{field}: replay of the capture vs live agent"
            );
        }
    }
    assert_eq!(report["kernel_agrees"], true);
    // Every datagram came from the internet side's address.
    let sources = report["sources"].as_array().unwrap();
    assert_eq!(sources.len(), 1, "{sources:?}");
    assert_eq!(sources[0]["address"], INTERNET_ADDR);
    assert_eq!(u(&sources[0]["packets"]), 312);
}

/// An IPv4-in-IPv6 (DS-Lite) opcode-0 request: outer IPv6 from `V6_SRC`,
/// inner IPv4 from `V4_SRC`. Live, the program's source table holds the
/// inner IPv4 sender; the replay of a capture of the same frame must name
/// the same sender, and the kernel must agree with it frame by frame.
#[test]
fn an_ipv4_in_ipv6_request_has_the_same_source_live_and_in_replay() {
    use nat_pmp_agent::{
        bpf::{sources, Filter},
        replay,
    };
    use nat_pmp_ebpf_common::{
        frames::{ipv6, v4, V4_SRC, V6_SRC},
        headers::{ETH_P_IPV6, IPPROTO_IPIP},
        Mode,
    };
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    require_root();
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
    let dir = temp_dir("walk");
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

    require_root();
    let dir = temp_dir("plot");
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
    let analysis = nat_pmp_agent::replay::replay(&nat_pmp_agent::replay::Options {
        files: vec![capture],
        mode: nat_pmp_ebpf_common::Mode::Monitor,
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
