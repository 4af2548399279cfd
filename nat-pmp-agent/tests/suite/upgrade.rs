//! In-place upgrades (issue 14, item 3), as root in namespaces the tests
//! create: an instance pinned in drop mode by an "older agent" (this agent
//! built with `--features test-layouts`, which, with
//! `NAT_PMP_TEST_PREVIOUS_LAYOUT` set, loads the object of the previous
//! layout: without `NATPMP_CARRIED`) is upgraded by a new agent under a
//! flood of requests: not one reaches the listener behind the WAN, the link
//! is the same (swapped with `BPF_LINK_UPDATE`, never detached), and the
//! counters continue (before + after = sent). An instance of a newer layout
//! is refused and left protecting.
//!
//! Run by `cargo xtask test`, which builds the suite with `--features
//! test-layouts`; without it the first test fails and says so.

use std::{
    net::UdpSocket,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use aya::maps::{Array, Map, MapData};
use nat_pmp_ebpf_common::{Class, Layout, LAYOUT_VERSION, MAP_LAYOUT, NATPMP_PORT};
use serde_json::Value;

use crate::support::{
    agent::{agent_output, detach_wan0, pinned_wan, run_agent, status_json, AGENT},
    process::Agent,
    require_root,
    wan::{bind, send, WanLink, INTERNET_ADDR, ROUTER_ADDR},
};

/// What the old instance allows through (carried over to the new one).
const ALLOWED: &str = "198.51.100.0/24";
/// Requests sent before the upgrade (counted by the old program).
const BEFORE: u64 = 300;
/// The flood's bounds: at most this many requests, for at most this long.
const FLOOD_MAX: u64 = 400_000;
const FLOOD_LIMIT: Duration = Duration::from_secs(30);

/// The new agent's flags: drop mode with the allowlist, pinned under
/// `root`.
fn new_agent(root: &str) -> [&str; 8] {
    [
        "--iface",
        "wan0",
        "--drop",
        "--allow",
        ALLOWED,
        "--pin",
        "--pin-dir",
        root,
    ]
}

/// Runs the new agent for a moment; it must succeed. Its stderr.
fn run_briefly(link: &WanLink, root: &str) -> String {
    let mut args = new_agent(root).to_vec();
    args.extend(["--duration", "0.3"]);
    let out = agent_output(&link.router, &args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{err}");
    err
}

/// The `status --json` instance of wan0.
fn wan0(st: &Value) -> Value {
    st["instances"]
        .as_array()
        .and_then(|a| a.iter().find(|i| i["iface"] == "wan0"))
        .cloned()
        .unwrap_or_else(|| panic!("no pinned instance of wan0: {st}"))
}

/// Pins a drop-mode instance of wan0 as an agent of the previous layout
/// would have, and returns its `status` instance.
fn pin_previous_layout(link: &WanLink, root: &str) -> Value {
    let out = link
        .router
        .command(AGENT)
        .env("NAT_PMP_TEST_PREVIOUS_LAYOUT", "1")
        .args(["--iface", "wan0", "--drop", "--allow", ALLOWED, "--pin"])
        .args(["--pin-dir", root, "--duration", "0.3", "--output", "json"])
        .output()
        .expect("running the agent");
    assert!(
        out.status.success(),
        "the previous-layout agent failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let inst = wan0(&status_json(&link.router, root));
    assert_eq!(
        inst["layout_version"],
        LAYOUT_VERSION - 1,
        "the suite's agent must be built with `--features test-layouts` (`cargo xtask test` \
         does) to pin an instance of the previous layout: {inst}"
    );
    assert_eq!(inst["mode"], "drop", "{inst}");
    assert_eq!(inst["attached"], true, "{inst}");
    inst
}

/// [`pin_previous_layout`], then `n` requests from `scanner`: none reaches
/// `listener`, all are counted. The instance and its pin folder.
fn counted_old_instance(
    link: &WanLink,
    root: &str,
    (listener, scanner): (&UdpSocket, &UdpSocket),
    n: u64,
) -> (Value, String) {
    pin_previous_layout(link, root);
    send(scanner, ROUTER_ADDR, Class::NatpmpExternalAddressRequest, n);
    assert_eq!(link.received(listener), 0, "the old instance drops");
    let inst = wan0(&status_json(&link.router, root));
    assert_eq!(counted(&inst), n, "the old instance counted every request");
    let folder = inst["pinned"].as_str().expect("pinned").to_owned();
    (inst, folder)
}

/// The opcode-0 requests the instance counted (`status --json`).
fn counted(inst: &Value) -> u64 {
    inst["counters"]["natpmp_external_address_request"]["packets"]
        .as_u64()
        .unwrap_or_else(|| panic!("no opcode-0 counter: {inst}"))
}

/// Sends opcode-0 requests to the router's 5351 until `stop` (or the
/// bounds), 32 at a time with a pause between batches, so that no veth
/// queue overflows and every datagram sent reaches the WAN; returns how
/// many were sent.
fn flood(scanner: &UdpSocket, stop: &AtomicBool) -> u64 {
    let payload = nat_pmp_agent::probe::sample_payload(Class::NatpmpExternalAddressRequest);
    let end = Instant::now() + FLOOD_LIMIT;
    let mut sent = 0;
    while !stop.load(Ordering::Relaxed) && sent < FLOOD_MAX && Instant::now() < end {
        for _ in 0..32 {
            scanner
                .send_to(&payload, (ROUTER_ADDR, NATPMP_PORT))
                .expect("sending a request");
            sent += 1;
        }
        thread::sleep(Duration::from_micros(500));
    }
    sent
}

#[test]
fn a_previous_layout_in_drop_mode_is_upgraded_under_a_flood_without_a_gap() {
    require_root();
    let (link, _bpffs, root) = pinned_wan("upg-flood");
    let listener = bind(&link.router, ROUTER_ADDR, NATPMP_PORT);
    let scanner = bind(&link.internet, INTERNET_ADDR, 0);
    let (old, _) = counted_old_instance(&link, &root, (&listener, &scanner), BEFORE);

    let stop = Arc::new(AtomicBool::new(false));
    let flooding = {
        let (scanner, stop) = (scanner.try_clone().expect("socket"), Arc::clone(&stop));
        thread::spawn(move || flood(&scanner, &stop))
    };
    // The new agent starts (and upgrades) while the flood runs; its first
    // report comes after the upgrade.
    thread::sleep(Duration::from_millis(200));
    let agent = Agent::start(&link.router, &new_agent(&root));
    thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let sent = flooding.join().expect("the flood thread");
    assert!(sent > 1_000, "the flood must span the upgrade: {sent} sent");

    assert_eq!(
        link.received(&listener),
        0,
        "not one of {sent} requests may reach the listener during the upgrade"
    );
    let report = agent.wait_for_total(BEFORE + sent);
    let stopped = agent.stop(libc::SIGTERM);
    assert!(
        stopped
            .stderr
            .contains("upgraded the instance pinned under"),
        "the agent says it upgraded: {}",
        stopped.stderr
    );
    assert_eq!(
        report["counters"]["natpmp_external_address_request"]["packets"],
        BEFORE + sent,
        "the counters continue: {BEFORE} before + {sent} during the flood"
    );

    let new = wan0(&status_json(&link.router, &root));
    assert_eq!(new["layout_version"], LAYOUT_VERSION, "{new}");
    assert_eq!(
        new["link"], old["link"],
        "the same XDP link: never detached"
    );
    assert_ne!(new["prog_id"], old["prog_id"], "a new program on it");
    assert_eq!(new["mode"], "drop", "{new}");
    assert_eq!(new["allow"], serde_json::json!([ALLOWED]), "{new}");
    assert_eq!(new["egress"], old["egress"], "the same tcx egress link");
    assert_eq!(counted(&new), BEFORE + sent, "status reads the same: {new}");
    let pins = std::fs::read_dir(
        std::path::Path::new(new["pinned"].as_str().expect("pinned"))
            .parent()
            .expect("parent"),
    )
    .expect("listing the namespace's pins")
    .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
    .collect::<Vec<_>>();
    assert_eq!(pins, ["wan0"], "no staging folder is left");

    // Picked up as it is by the same agent: no second upgrade.
    let err = run_briefly(&link, &root);
    assert!(err.contains("picked up the filter pinned under"), "{err}");
    detach_wan0(&link.router, &root);
    assert!(!link.router.xdp_attached("wan0"));
}

#[test]
fn an_instance_of_a_newer_layout_is_refused_and_keeps_protecting() {
    require_root();
    let (link, _bpffs, root) = pinned_wan("upg-newer");
    run_briefly(&link, &root);
    let before = wan0(&status_json(&link.router, &root));
    let path = format!(
        "{}/{MAP_LAYOUT}",
        before["pinned"].as_str().expect("pinned")
    );
    let data = MapData::from_pin(&path).expect("opening the layout pin");
    let mut layout: Array<MapData, Layout> =
        Array::try_from(Map::Array(data)).expect("the layout map");
    layout
        .set(0, Layout::new(LAYOUT_VERSION + 1, "99.0.0"), 0)
        .expect("writing a newer layout");

    let mut bounded = new_agent(&root).to_vec();
    bounded.extend(["--duration", "0.3"]);
    let (ok, _, err) = run_agent(&link.router, &bounded);
    assert!(!ok, "a newer layout must be refused: {err}");
    assert!(
        err.contains(&format!("layout {}", LAYOUT_VERSION + 1))
            && err.contains("agent 99.0.0")
            && err.contains("keeps protecting wan0"),
        "{err}"
    );
    let after = wan0(&status_json(&link.router, &root));
    assert_eq!(after["prog_id"], before["prog_id"], "untouched");
    assert_eq!(after["link"], before["link"], "untouched");
    let listener = bind(&link.router, ROUTER_ADDR, NATPMP_PORT);
    let scanner = bind(&link.internet, INTERNET_ADDR, 0);
    send(
        &scanner,
        ROUTER_ADDR,
        Class::NatpmpExternalAddressRequest,
        20,
    );
    assert_eq!(link.received(&listener), 0, "still dropping");
    detach_wan0(&link.router, &root);
}

/// Runs the agent on wan0 (drop mode, the allowlist, pinned) for a moment
/// and returns its stderr, which must say it upgraded the instance pinned
/// under `old_dir`.
fn upgrade_once(link: &WanLink, root: &str, old_dir: &str) -> String {
    let err = run_briefly(link, root);
    assert!(
        err.contains(&format!(
            "upgraded the instance pinned under {old_dir} in place"
        )),
        "{err}"
    );
    err
}

/// An instance of the previous layout in the old per-interface folder
/// (`<root>/wan0`, before pins were kept per namespace) is moved into the
/// new one by the same swap; one whose link no longer holds its interface
/// (detached by someone) has nothing to keep protected: its settings and
/// counters are carried over and the new program attaches.
#[test]
fn an_old_folder_and_an_unattached_instance_are_upgraded_with_their_settings() {
    require_root();
    let (link, _bpffs, root) = pinned_wan("upg-folder");
    let listener = bind(&link.router, ROUTER_ADDR, NATPMP_PORT);
    let scanner = bind(&link.internet, INTERNET_ADDR, 0);

    // The old per-interface folder.
    let (old, folder) = counted_old_instance(&link, &root, (&listener, &scanner), 50);
    let legacy = format!("{root}/wan0");
    std::fs::rename(&folder, &legacy).expect("moving the pins to the old folder (bpffs rename)");
    let st = status_json(&link.router, &root);
    assert_eq!(wan0(&st)["legacy_layout"], true, "{st}");
    upgrade_once(&link, &root, &legacy);
    let new = wan0(&status_json(&link.router, &root));
    assert_eq!(
        new["pinned"],
        folder.as_str(),
        "in the per-namespace folder: {new}"
    );
    assert_eq!(new["legacy_layout"], false, "{new}");
    assert_eq!(new["layout_version"], LAYOUT_VERSION, "{new}");
    assert_eq!(new["link"], old["link"], "the same link");
    assert_eq!(counted(&new), 50, "{new}");
    assert!(
        !std::path::Path::new(&legacy).exists(),
        "the old folder is gone"
    );
    detach_wan0(&link.router, &root);

    // An instance whose link was detached (it protects nothing).
    let (_, folder) = counted_old_instance(&link, &root, (&listener, &scanner), 30);
    crate::support::process::sh(&[
        "bpftool",
        "link",
        "detach",
        "pinned",
        &format!("{folder}/link"),
    ])
    .expect("bpftool link detach");
    assert!(!link.router.xdp_attached("wan0"), "detached");
    let err = upgrade_once(&link, &root, &folder);
    assert!(err.contains("it was not attached"), "{err}");
    let new = wan0(&status_json(&link.router, &root));
    assert_eq!(new["attached"], true, "{new}");
    assert_eq!(new["layout_version"], LAYOUT_VERSION, "{new}");
    assert_eq!(new["mode"], "drop", "{new}");
    assert_eq!(new["allow"], serde_json::json!([ALLOWED]), "{new}");
    assert_eq!(counted(&new), 30, "the counters carried over: {new}");
    send(
        &scanner,
        ROUTER_ADDR,
        Class::NatpmpExternalAddressRequest,
        20,
    );
    assert_eq!(link.received(&listener), 0, "the new program drops");
    assert_eq!(
        counted(&wan0(&status_json(&link.router, &root))),
        50,
        "and counts on"
    );
    detach_wan0(&link.router, &root);
}
