//! Reports a person and a script read: the one report schema
//! (docs/report.schema.json) is strict enough to fail, and real replay
//! reports are in it (the live reports are checked wherever the suite reads
//! one: `support::agent`); text tables show the classes that saw traffic
//! plus the three NAT-PMP request rows, `--all-classes` every row, and PCP
//! rows together right under their `pcp` aggregate.

use nat_pmp_agent::replay;
use nat_pmp_ebpf_common::{
    capgen::{write_file, Spec},
    Class, Mode,
};
use serde_json::{json, Value};

use crate::support::{
    require_root,
    schema::{assert_valid, validator},
};

/// A replay of a generated scan of `count` datagrams.
fn replayed(
    count: u64,
    mode: Mode,
) -> (replay::Analysis, nat_pmp_ebpf_common::capgen::Composition) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let capture = dir.path().join("scan.pcap");
    let comp = write_file(
        &Spec {
            count,
            ..Spec::default()
        },
        &capture,
    )
    .expect("writing the capture");
    let analysis = replay::replay(&replay::Options {
        files: vec![capture],
        mode,
        progress: false,
    })
    .expect("replaying");
    (analysis, comp)
}

#[test]
fn a_replay_report_is_in_the_schema() {
    require_root();
    let (analysis, _) = replayed(500, Mode::Drop);
    let report = replay::report::to_json(&analysis);
    assert_valid(&report);
    let source = &report["sources"][0];
    assert!(
        source["address"].is_string() && source["classes"].is_array(),
        "{source}"
    );
}

/// The schema is not a rubber stamp: an unknown field, a missing field or
/// a wrong type fails it.
#[test]
fn the_schema_rejects_what_it_does_not_describe() {
    let class = json!({"packets": 1, "bytes": 60, "dropped_packets": 0, "dropped_bytes": 0,
        "oversized": 0, "share": 100.0, "pps": 0.5});
    let counters: serde_json::Map<String, Value> = nat_pmp_ebpf_common::Class::ALL
        .iter()
        .map(|c| (c.name().to_owned(), class.clone()))
        .collect();
    let live = json!({
        "time": "2026-12-01T00:00:00.000Z", "iface": "wan0", "mode": "drop",
        "xdp_mode": "native", "uptime_secs": 1.0, "final": false,
        "counters": counters, "oversized": 0, "total": class,
    });
    let v = validator();
    assert!(v.is_valid(&live), "a minimal live line is valid");
    for (what, broken) in [
        ("an unknown field", {
            let mut b = live.clone();
            b["surprise"] = json!(1);
            b
        }),
        ("a missing field", {
            let mut b = live.clone();
            b.as_object_mut().expect("an object").remove("total");
            b
        }),
        ("a wrong type", {
            let mut b = live.clone();
            b["counters"]["pcp"]["packets"] = json!("many");
            b
        }),
        ("one interface repeated under `interfaces`", {
            let mut b = live.clone();
            b["interfaces"] = json!({ "wan0": live.clone() });
            b
        }),
    ] {
        assert!(!v.is_valid(&broken), "the schema accepts {what}");
    }
}

/// The class names in a text table's rows, in order.
fn rows(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let name = *cells.get(3)?;
            Class::from_name(name).map(|c| c.name().to_owned())
        })
        .collect()
}

#[test]
fn tables_show_what_saw_traffic_and_the_request_rows() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert!(
        euid == 0,
        "replay loads the XDP program: run as root; refusing to skip"
    );
    let dir = tempfile::tempdir().expect("a temporary directory");
    let capture = dir.path().join("scan.pcap");
    let comp = write_file(
        &Spec {
            count: 2000,
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
    .expect("replaying");
    let counters = analysis.counters();

    let text = replay::report::to_text(&analysis, 5, false);
    let shown = rows(&text);
    let want: Vec<String> = Class::DISPLAY
        .into_iter()
        .filter(|&c| c.always_shown() || counters.get(c).packets() > 0)
        .map(|c| c.name().to_owned())
        .collect();
    assert_eq!(shown, want, "{text}");
    for c in [
        Class::NatpmpExternalAddressRequest,
        Class::NatpmpMapUdpRequest,
        Class::NatpmpMapTcpRequest,
    ] {
        assert!(
            shown.iter().any(|n| n == c.name()),
            "{} always shown",
            c.name()
        );
    }
    let silent = Class::ALL
        .into_iter()
        .find(|&c| !c.always_shown() && counters.get(c).packets() == 0)
        .expect("a class the generated scan never sends");
    assert!(!shown.iter().any(|n| n == silent.name()), "{text}");
    // Every class of the composition is in the table.
    for name in comp.counters.keys() {
        assert!(shown.contains(name), "{name} saw traffic: {text}");
    }

    let all = rows(&replay::report::to_text(&analysis, 5, true));
    let every: Vec<String> = Class::DISPLAY.iter().map(|c| c.name().to_owned()).collect();
    assert_eq!(all, every, "--all-classes shows every row in display order");
    let pcp = all.iter().position(|n| n == "pcp").expect("the pcp row");
    let children: Vec<usize> = all
        .iter()
        .enumerate()
        .filter(|(_, n)| n.starts_with("pcp_"))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(
        children,
        (pcp + 1..=pcp + children.len()).collect::<Vec<_>>(),
        "the pcp_* rows follow their aggregate"
    );
}
