//! One report schema: real reports validate against docs/report.schema.json
//! (with the `jsonschema` crate), and the schema is strict enough to fail.

use nat_pmp_agent::replay;
use nat_pmp_ebpf_common::{
    capgen::{write_file, Spec},
    Mode,
};
use serde_json::{json, Value};

/// The schema's validator.
fn validator() -> jsonschema::Validator {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/report.schema.json");
    let text = std::fs::read_to_string(path).expect("reading docs/report.schema.json");
    let schema: Value = serde_json::from_str(&text).expect("the schema is JSON");
    jsonschema::validator_for(&schema).expect("the schema is a valid JSON Schema")
}

/// Panics naming every place `report` breaks the schema.
fn assert_valid(report: &Value) {
    let v = validator();
    let errors: Vec<String> = v
        .iter_errors(report)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "not in the report schema: {errors:#?}\n{report:#}"
    );
}

#[test]
fn a_replay_report_is_in_the_schema() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert!(
        euid == 0,
        "replay loads the XDP program: run as root; refusing to skip"
    );
    let dir = tempfile::tempdir().expect("a temporary directory");
    let capture = dir.path().join("scan.pcap");
    write_file(
        &Spec {
            count: 500,
            ..Spec::default()
        },
        &capture,
    )
    .expect("writing the capture");
    let analysis = replay::replay(&replay::Options {
        files: vec![capture],
        mode: Mode::Drop,
        progress: false,
    })
    .expect("replaying");
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
