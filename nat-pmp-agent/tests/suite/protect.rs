//! Protection end to end, as root in namespaces the tests create: the filter
//! follows its interface when it is deleted and comes back (veth and a raw-IP
//! tun, pinned or not), waits for one that does not exist yet, re-attaches
//! after `bpftool link detach`, respects the operator's `detach` and `mode`,
//! applies this run's settings to a picked-up instance (and leaves it alone
//! when the start fails), reloads on SIGHUP, keeps two namespaces apart,
//! refuses a renamed interface and a bpffs that would vanish, and does not
//! panic on a closed pipe.
//!
//! Every check of "dropped" first sends a control datagram to another port
//! of the router and requires it to arrive: a listener that gets nothing
//! proves something only when the path works. Guards delete the namespaces,
//! unmount the bpffs and end the agents by PID even when an assertion fails.

use std::{
    fs::File,
    net::UdpSocket,
    os::unix::fs::MetadataExt as _,
    path::Path,
    time::{Duration, Instant},
};

use nat_pmp_ebpf_common::{
    frames::{ipv4_sent, udp},
    headers::IPPROTO_UDP,
    Class, NATPMP_PORT,
};
use serde_json::Value;
use tempfile::TempDir;

use crate::support::{
    agent::{agent_ok, agent_output, detach_wan0, pinned_wan, run_agent, status_json, AGENT},
    bpffs::Bpffs,
    netns::NetNs,
    process::{sh, Agent},
    require_root,
    wan::{bind, drain, open_tun, send, WanLink, INTERNET_ADDR, ROUTER_ADDR},
};

/// The router's port the control datagrams go to (not filtered).
const CONTROL_PORT: u16 = 40000;

/// The `status --json` instance of `iface`.
fn instance(status: &Value, iface: &str) -> Value {
    status["instances"]
        .as_array()
        .and_then(|a| a.iter().find(|i| i["iface"] == iface))
        .cloned()
        .unwrap_or_else(|| panic!("no pinned instance of {iface} in {}", brief_status(status)))
}

/// A status without its counters, for messages.
fn brief_status(status: &Value) -> Value {
    let mut s = status.clone();
    if let Some(list) = s["instances"].as_array_mut() {
        for i in list {
            if let Some(o) = i.as_object_mut() {
                o.remove("counters");
                o.remove("sources");
            }
        }
    }
    s
}

/// The fields of a report these tests look at, for messages.
fn brief(r: &Value) -> Value {
    let mut o = serde_json::Map::new();
    for k in [
        "uptime_secs",
        "attached",
        "state",
        "ifindex",
        "pinned",
        "unprotected_secs",
        "reattachments",
        "allow",
        "alert",
        "mode",
        "xdp_mode",
        "counts",
        "total",
        "final",
    ] {
        o.insert(k.to_owned(), r[k].clone());
    }
    Value::Object(o)
}

/// Sockets on both sides of a WAN: a NAT-PMP listener and a control
/// listener on the router, a scanner on the internet side. Made afresh after
/// the WAN was re-created (its addresses went with the old device).
struct Wan {
    listener: UdpSocket,
    control: UdpSocket,
    scanner: UdpSocket,
    to: &'static str,
}

impl Wan {
    fn open(link: &WanLink) -> Wan {
        Wan {
            listener: bind(&link.router, ROUTER_ADDR, NATPMP_PORT),
            control: bind(&link.router, ROUTER_ADDR, CONTROL_PORT),
            scanner: bind(&link.internet, INTERNET_ADDR, 0),
            to: ROUTER_ADDR,
        }
    }

    /// A datagram to the control port must arrive: the path works, so a
    /// listener that gets nothing means the filter dropped.
    fn path_works(&self) {
        self.scanner
            .send_to(b"control", (self.to, CONTROL_PORT))
            .expect("sending the control datagram");
        assert_eq!(
            drain(&self.control),
            1,
            "the control datagram to port {CONTROL_PORT} must arrive (is the WAN up?)"
        );
    }

    /// Sends `n` requests to port 5351; returns how many the listener got.
    fn requests(&self, n: u64) -> u64 {
        self.path_works();
        send(
            &self.scanner,
            self.to,
            Class::NatpmpExternalAddressRequest,
            n,
        );
        drain(&self.listener)
    }
}

/// (total packets, total dropped packets) of a report.
fn totals(r: &Value) -> (u64, u64) {
    (
        r["total"]["packets"].as_u64().expect("total.packets"),
        r["total"]["dropped_packets"]
            .as_u64()
            .expect("total.dropped_packets"),
    )
}

/// A report read from the kernel after this call (earlier ones discarded).
fn fresh(a: &mut Agent) -> Value {
    while a.lines.try_recv().is_ok() {}
    // The next may have been read just before this call; the one after not.
    if a.lines.recv_timeout(Duration::from_secs(5)).is_err() {
        fail(a, "no report within 5 s");
    }
    a.lines
        .recv_timeout(Duration::from_secs(5))
        .unwrap_or_else(|_| fail(a, "no report within 5 s"))
}

/// Ends the agent and panics with `what` and its stderr.
fn fail(a: &mut Agent, what: &str) -> ! {
    a.proc.signal(libc::SIGTERM);
    let status = a.proc.wait_for(Duration::from_secs(5));
    let err = a.stderr();
    panic!("{what}\nagent exit: {status:?}\nagent stderr:\n{err}");
}

/// The first report within `limit` for which `pred` holds; fails with the
/// last report and the agent's stderr if none does.
fn wait_report(a: &mut Agent, what: &str, limit: Duration, pred: impl Fn(&Value) -> bool) -> Value {
    let end = Instant::now() + limit;
    let mut last = Value::Null;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match a.lines.recv_timeout(left) {
            Ok(r) if pred(&r) => return r,
            Ok(r) => last = r,
            Err(_) => break,
        }
    }
    let msg = format!(
        "no report with {what} within {limit:?}; the last one: {}",
        brief(&last)
    );
    fail(a, &msg)
}

/// Sends `n` requests over a fresh [`Wan`]; none may reach the listener and
/// the agent must count exactly `n` more, all dropped.
fn assert_dropped_and_counted(a: &mut Agent, link: &WanLink, n: u64) -> Value {
    let wan = Wan::open(link);
    wan.path_works();
    let before = fresh(a);
    let (t0, d0) = totals(&before);
    let got = wan.requests(n);
    let r = a.wait_for_total(t0 + n);
    assert_eq!(got, 0, "drop mode: no request may reach the listener");
    assert_eq!(
        totals(&r),
        (t0 + n, d0 + n),
        "exactly the {n} requests sent, all dropped: {}",
        brief(&r)
    );
    r
}

/// The ifindex of `dev` in `ns`.
fn ifindex(ns: &NetNs, dev: &str) -> u64 {
    u64::from(ns.ifindex(dev).unwrap_or_else(|e| panic!("{e:#}")))
}

/// The id of the XDP program on `dev` in `ns`.
fn xdp_prog_id(ns: &NetNs, dev: &str) -> u64 {
    let (id, _) = ns.xdp_prog(dev).unwrap_or_else(|e| panic!("{e:#}"));
    u64::from(id)
}

/// The inode of the network namespace `ns` (the agent's `netns:<inode>`).
fn netns_inode(ns: &NetNs) -> u64 {
    std::fs::metadata(format!("/run/netns/{}", ns.name))
        .expect("the namespace file")
        .ino()
}

/// A directory under /run, removed (with what is in it) on drop.
fn run_dir(tag: &str) -> TempDir {
    tempfile::Builder::new()
        .prefix(&format!("natpmp-test-{tag}-"))
        .tempdir_in("/run")
        .expect("creating a directory under /run")
}

/// Deletes wan0 and re-creates it under a running drop-mode agent, the
/// `round`th time; checks the reports in between and after, the traffic and
/// the counters. Returns the new wan0's ifindex.
fn delete_and_recreate(a: &mut Agent, link: &WanLink, round: u64) -> u64 {
    link.router
        .ip(&["link", "del", "wan0"])
        .expect("deleting wan0");
    let gone = wait_report(a, "state gone", Duration::from_secs(3), |r| {
        r["state"] == "gone"
    });
    assert_eq!(gone["attached"], false, "{}", brief(&gone));
    assert_eq!(gone["ifindex"], Value::Null, "{}", brief(&gone));
    link.add_wan0();
    let idx = ifindex(&link.router, "wan0");
    let back = wait_report(
        a,
        &format!("attached true on the new wan0 (ifindex {idx})"),
        Duration::from_secs(5),
        |r| r["attached"] == true && r["ifindex"] == idx,
    );
    assert_eq!(back["state"], "attached", "{}", brief(&back));
    assert_eq!(back["mode"], "drop", "{}", brief(&back));
    assert_eq!(back["xdp_mode"], "native", "same mode: {}", brief(&back));
    assert_eq!(back["reattachments"], round, "{}", brief(&back));
    assert!(link.router.xdp_attached("wan0"));
    assert_dropped_and_counted(a, link, 20);
    idx
}

#[test]
fn veth_wan_deleted_and_recreated_three_times_stays_protected() {
    require_root();
    let link = WanLink::new("prot-recr");
    let mut a = Agent::start(&link.router, &["--iface", "wan0", "--drop"]);
    assert_dropped_and_counted(&mut a, &link, 20);
    let ifindexes: Vec<u64> = (1..=3)
        .map(|round| delete_and_recreate(&mut a, &link, round))
        .collect();
    let r = fresh(&mut a);
    assert_eq!(r["reattachments"], 3, "{}", brief(&r));
    assert_eq!(totals(&r), (80, 80), "counters continue: {}", brief(&r));
    assert!(
        r["unprotected_secs"].as_f64().expect("unprotected_secs") > 0.0,
        "{}",
        brief(&r)
    );
    let err = a.stop(libc::SIGTERM).stderr;
    assert_eq!(
        err.matches("wan0: the interface is gone").count(),
        3,
        "each deletion said at once: {err}"
    );
    for idx in ifindexes {
        let said = format!("wan0: attached (ifindex {idx}, native mode)");
        assert!(
            err.lines().any(|l| l.contains(&said)
                && l.contains("after its new-link event")
                && l.contains("dropping datagrams to port 5351")),
            "each return said at once (`{said} ... after its new-link event ...; dropping \
             datagrams to port 5351`): {err}"
        );
    }
    assert!(err.contains("detached from wan0"), "{err}");
    assert!(!link.router.xdp_attached("wan0"));
}

#[test]
fn pinned_veth_wan_recreated_gets_its_link_pin_back_and_stays_after_sigterm() {
    require_root();
    let (link, _bpffs, root) = pinned_wan("prot-pinrecr");
    let mut a = Agent::start(
        &link.router,
        &["--iface", "wan0", "--drop", "--pin", "--pin-dir", &root],
    );
    let dir = Path::new(&root)
        .join(format!("netns:{}", netns_inode(&link.router)))
        .join("wan0");
    for round in 1..=3 {
        let idx = delete_and_recreate(&mut a, &link, round);
        let r = fresh(&mut a);
        assert_eq!(r["pinned"], true, "{}", brief(&r));
        assert_eq!(r["reattachments"], round, "{}", brief(&r));
        let st = status_json(&link.router, &root);
        let inst = instance(&st, "wan0");
        assert_eq!(inst["attached"], true, "{}", brief_status(&st));
        assert!(
            inst["link"]
                .as_str()
                .is_some_and(|l| l.contains(&format!("ifindex {idx}"))),
            "the link pin holds the new wan0 (ifindex {idx}): {}",
            brief_status(&st)
        );
        assert!(dir.join("link").exists(), "the link pin is re-made");
        assert_eq!(inst["prog_id"], xdp_prog_id(&link.router, "wan0"));
        // The egress program (answers) follows the WAN too: one tcx link on
        // the new device, pinned in place of the old one.
        assert_eq!(inst["egress"]["attached"], true, "{}", brief_status(&st));
        assert_eq!(link.router.tcx_egress("wan0"), ["nat_pmp_egress"]);
        assert!(
            dir.join("egress_link").exists(),
            "the egress link pin is re-made"
        );
    }
    let err = a.stop(libc::SIGTERM).stderr;
    assert!(
        err.contains("the filter stays attached to wan0") && err.contains("keeps dropping"),
        "{err}"
    );
    assert!(link.router.xdp_attached("wan0"), "pinned: stays attached");
    let before = totals(&instance(&status_json(&link.router, &root), "wan0"));
    assert_eq!(Wan::open(&link).requests(20), 0, "still dropped");
    let after = totals(&instance(&status_json(&link.router, &root), "wan0"));
    assert_eq!(after, (before.0 + 20, before.1 + 20));
    detach_wan0(&link.router, &root);
}

const TUN_ROUTER: [u8; 4] = [198, 18, 9, 1];
const TUN_PEER: [u8; 4] = [198, 18, 9, 2];

/// Creates tun0 in `ns` (closing the file deletes it), addressed and up.
fn tun_up(ns: &NetNs) -> File {
    let tun = ns.enter(open_tun).expect("entering the namespace");
    ns.ip(&["addr", "add", "198.18.9.1/24", "dev", "tun0"])
        .expect("addressing tun0");
    ns.ip(&["link", "set", "tun0", "up"])
        .expect("bringing tun0 up");
    tun
}

/// Writes `n` raw IPv4/UDP packets to `port` into the tun: the router
/// receives them on tun0.
fn tun_write(tun: &File, port: u16, payload: &[u8], n: u64) {
    let packet = ipv4_sent(
        TUN_PEER,
        TUN_ROUTER,
        IPPROTO_UDP,
        &udp(41000, port, payload),
    );
    for _ in 0..n {
        std::io::Write::write_all(&mut &*tun, &packet).expect("writing into the tun");
    }
}

/// Requests written into the tun: none reaches the listener, the agent
/// counts exactly `n` more, all dropped.
fn assert_tun_dropped_and_counted(a: &mut Agent, ns: &NetNs, tun: &File, n: u64) {
    let router = "198.18.9.1";
    let listener = bind(ns, router, NATPMP_PORT);
    let control = bind(ns, router, CONTROL_PORT);
    tun_write(tun, CONTROL_PORT, b"control", 1);
    assert_eq!(drain(&control), 1, "the tun delivers");
    let (t0, d0) = totals(&fresh(a));
    let payload = nat_pmp_agent::probe::sample_payload(Class::NatpmpExternalAddressRequest);
    tun_write(tun, NATPMP_PORT, &payload, n);
    let got = drain(&listener);
    let r = a.wait_for_total(t0 + n);
    assert_eq!(got, 0, "drop mode: nothing may reach the listener");
    assert_eq!(totals(&r), (t0 + n, d0 + n), "{}", brief(&r));
    let counts = if r["xdp_mode"] == "skb" {
        "gso_super_packets"
    } else {
        "datagrams"
    };
    assert_eq!(r["counts"], counts, "{}", brief(&r));
}

#[test]
fn tun_wan_closed_and_reopened_twice_counts_continue() {
    require_root();
    let ns = NetNs::new("prot-tun").expect("creating a namespace");
    let mut tun = tun_up(&ns);
    let mut a = Agent::start(&ns, &["--iface", "tun0", "--drop"]);
    assert_tun_dropped_and_counted(&mut a, &ns, &tun, 10);
    let xdp_mode = fresh(&mut a)["xdp_mode"].clone();
    for round in 1..=2 {
        drop(tun);
        let gone = wait_report(&mut a, "state gone", Duration::from_secs(3), |r| {
            r["state"] == "gone"
        });
        assert_eq!(gone["attached"], false, "{}", brief(&gone));
        tun = tun_up(&ns);
        let idx = ifindex(&ns, "tun0");
        let back = wait_report(
            &mut a,
            &format!("attached true on the new tun0 (ifindex {idx})"),
            Duration::from_secs(5),
            |r| r["attached"] == true && r["ifindex"] == idx,
        );
        assert_eq!(back["reattachments"], round, "{}", brief(&back));
        assert_eq!(back["xdp_mode"], xdp_mode, "same mode: {}", brief(&back));
        assert_tun_dropped_and_counted(&mut a, &ns, &tun, 10);
    }
    let r = fresh(&mut a);
    assert_eq!(totals(&r), (30, 30), "{}", brief(&r));
    a.stop(libc::SIGTERM);
    assert!(!ns.xdp_attached("tun0"));
}

#[test]
fn wait_attaches_when_the_interface_appears_and_without_it_a_missing_one_fails() {
    require_root();
    let link = WanLink {
        router: NetNs::new("prot-wait-r").expect("creating a namespace"),
        internet: NetNs::new("prot-wait-i").expect("creating a namespace"),
    };
    let out = agent_output(
        &link.router,
        &["--iface", "wan0", "--drop", "--duration", "1"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("does not exist") && err.contains("--wait"),
        "{err}"
    );

    let mut a = Agent::start(&link.router, &["--iface", "wan0", "--drop", "--wait"]);
    let r = fresh(&mut a);
    assert_eq!(r["state"], "waiting", "{}", brief(&r));
    assert_eq!(r["attached"], false, "{}", brief(&r));
    assert_eq!(r["ifindex"], Value::Null, "{}", brief(&r));
    link.add_wan0();
    let idx = ifindex(&link.router, "wan0");
    wait_report(
        &mut a,
        &format!("attached true on wan0 (ifindex {idx})"),
        Duration::from_secs(5),
        |r| r["attached"] == true && r["ifindex"] == idx && r["state"] == "attached",
    );
    assert_dropped_and_counted(&mut a, &link, 20);
    let err = a.stop(libc::SIGTERM).stderr;
    assert!(
        err.contains(&format!("wan0: attached (ifindex {idx}")),
        "{err}"
    );
}

/// The id of the XDP link running the program `prog_id` (`bpftool`).
fn xdp_link_id(prog_id: u64) -> u64 {
    let links: Value =
        serde_json::from_str(&sh(&["bpftool", "-j", "link", "show"]).expect("bpftool link show"))
            .expect("bpftool JSON");
    let found: Vec<u64> = links
        .as_array()
        .expect("a list of links")
        .iter()
        .filter(|l| l["type"] == "xdp" && l["prog_id"] == prog_id)
        .filter_map(|l| l["id"].as_u64())
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one XDP link runs program {prog_id}: {links}"
    );
    found[0]
}

#[test]
fn bpftool_link_detach_is_noticed_and_the_filter_attaches_again() {
    require_root();
    let link = WanLink::new("prot-bpftool");
    let mut a = Agent::start(&link.router, &["--iface", "wan0", "--drop"]);
    let id = xdp_link_id(xdp_prog_id(&link.router, "wan0"));
    sh(&["bpftool", "link", "detach", "id", &id.to_string()]).expect("bpftool link detach");
    let r = wait_report(
        &mut a,
        "attached true and reattachments >= 1",
        Duration::from_secs(2),
        |r| r["attached"] == true && r["reattachments"].as_u64() >= Some(1),
    );
    assert_eq!(r["state"], "attached", "{}", brief(&r));
    assert!(link.router.xdp_attached("wan0"));
    assert_dropped_and_counted(&mut a, &link, 20);
    // Only the XDP link was detached: the egress link still held wan0 and
    // was replaced, not doubled (every answer counted once).
    assert_eq!(link.router.tcx_egress("wan0"), ["nat_pmp_egress"]);
    let err = a.stop(libc::SIGTERM).stderr;
    assert!(err.contains("no longer attached"), "said on stderr: {err}");
}

#[test]
fn operator_detach_while_a_pinned_agent_runs_is_respected() {
    require_root();
    let (link, _bpffs, root) = pinned_wan("prot-opdet");
    let mut a = Agent::start(
        &link.router,
        &["--iface", "wan0", "--drop", "--pin", "--pin-dir", &root],
    );
    detach_wan0(&link.router, &root);
    let r = wait_report(
        &mut a,
        "attached false, state detached",
        Duration::from_secs(2),
        |r| r["attached"] == false && r["state"] == "detached",
    );
    assert_eq!(r["reattachments"], 0, "{}", brief(&r));
    // It stays so: the agent does not undo the operator's detach.
    let end = Instant::now() + Duration::from_secs(1);
    while Instant::now() < end {
        let r = fresh(&mut a);
        assert_eq!(
            (&r["attached"], &r["state"]),
            (&Value::Bool(false), &Value::from("detached")),
            "{}",
            brief(&r)
        );
    }
    assert!(!link.router.xdp_attached("wan0"));
    assert_eq!(
        Wan::open(&link).requests(5),
        5,
        "detached by the operator: requests pass"
    );
    let err = a.stop(libc::SIGTERM).stderr;
    assert!(
        err.contains("NOT protected") && !err.contains("keeps dropping"),
        "{err}"
    );
}

#[test]
fn mode_monitor_on_a_running_pinned_agent_makes_sigterm_say_counting_only() {
    require_root();
    let (link, _bpffs, root) = pinned_wan("prot-mode");
    let mut a = Agent::start(
        &link.router,
        &["--iface", "wan0", "--drop", "--pin", "--pin-dir", &root],
    );
    let out = agent_ok(
        &link.router,
        &["mode", "monitor", "--iface", "wan0", "--pin-dir", &root],
    );
    assert!(out.contains("-> monitor"), "{out}");
    wait_report(&mut a, "mode monitor", Duration::from_secs(2), |r| {
        r["mode"] == "monitor"
    });
    let err = a.stop(libc::SIGTERM).stderr;
    assert!(
        err.contains("stays attached to wan0")
            && err.contains("counting only")
            && !err.contains("keeps dropping"),
        "{err}"
    );
    assert_eq!(Wan::open(&link).requests(3), 3, "monitor mode passes");
    detach_wan0(&link.router, &root);
}

/// Starts a pinned agent on wan0 with `args` added and kills it (SIGKILL):
/// the pinned instance stays, nothing cleaned up.
fn pinned_then_killed(link: &WanLink, root: &str, args: &[&str]) {
    let mut all = vec!["--iface", "wan0", "--pin", "--pin-dir", root];
    all.extend_from_slice(args);
    let mut a = Agent::start(&link.router, &all);
    a.proc.signal(libc::SIGKILL);
    a.proc
        .wait_for(Duration::from_secs(5))
        .expect("the agent survived SIGKILL");
    assert!(link.router.xdp_attached("wan0"));
}

const ALLOWED: &str = "198.51.100.0/24";

#[test]
fn a_failed_start_leaves_the_adopted_instance_as_it_was() {
    require_root();
    let (link, _bpffs, root) = pinned_wan("prot-failed");
    pinned_then_killed(&link, &root, &["--drop", "--allow", ALLOWED]);
    let before = instance(&status_json(&link.router, &root), "wan0");
    let out = agent_output(
        &link.router,
        &[
            "--iface",
            "wan0",
            "--iface",
            "nosuch",
            "--pin",
            "--pin-dir",
            &root,
            "--duration",
            "1",
            "--output",
            "json",
            "--interval",
            "0.1",
        ],
    );
    assert!(
        !out.status.success(),
        "a missing --iface without --wait must fail: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let st = status_json(&link.router, &root);
    let inst = instance(&st, "wan0");
    assert_eq!(inst["mode"], "drop", "{}", brief_status(&st));
    assert_eq!(inst["allow"], serde_json::json!([ALLOWED]));
    assert_eq!(inst["attached"], true);
    assert_eq!(inst["prog_id"], before["prog_id"]);
    assert_eq!(inst["link"], before["link"]);
    assert_eq!(Wan::open(&link).requests(20), 0, "still dropping");
    detach_wan0(&link.router, &root);
}

#[test]
fn a_restart_with_other_settings_applies_and_reports_each_change() {
    require_root();
    let (link, _bpffs, root) = pinned_wan("prot-restart");
    pinned_then_killed(&link, &root, &["--drop", "--allow", ALLOWED]);
    let mut a = Agent::start(
        &link.router,
        &["--iface", "wan0", "--pin", "--pin-dir", &root],
    );
    let r = fresh(&mut a);
    assert_eq!(r["mode"], "monitor", "{}", brief(&r));
    assert_eq!(r["allow"], serde_json::json!([]), "{}", brief(&r));
    assert_eq!(r["attached"], true, "{}", brief(&r));
    let st = instance(&status_json(&link.router, &root), "wan0");
    assert_eq!(st["mode"], "monitor");
    assert_eq!(st["allow"], serde_json::json!([]));
    assert_eq!(Wan::open(&link).requests(3), 3, "monitor mode passes");
    let err = a.stop(libc::SIGTERM).stderr;
    assert!(
        err.contains("picked up the filter pinned under")
            && err.contains("mode was drop, now monitor")
            && err.contains(&format!("allowlist: removed {ALLOWED}")),
        "{err}"
    );
    detach_wan0(&link.router, &root);
}

#[test]
fn sighup_without_config_keeps_running_and_with_config_applies_the_file() {
    require_root();
    let link = WanLink::new("prot-hup");
    // Without --config: nothing changes, the agent keeps running.
    let mut a = Agent::start(&link.router, &["--iface", "wan0", "--drop"]);
    let before = fresh(&mut a)["uptime_secs"].as_f64().expect("uptime");
    a.proc.signal(libc::SIGHUP);
    wait_report(
        &mut a,
        "uptime 0.5 s past the SIGHUP",
        Duration::from_secs(3),
        |r| r["uptime_secs"].as_f64() >= Some(before + 0.5),
    );
    assert!(
        matches!(a.proc.0.try_wait(), Ok(None)),
        "SIGHUP must not end the agent"
    );
    let err = a.stop(libc::SIGTERM).stderr;
    assert!(
        err.contains("SIGHUP: no --config file to reload; nothing changed"),
        "{err}"
    );

    // With --config: the rewritten file is applied.
    let dir = tempfile::tempdir().expect("temp dir");
    let conf = dir.path().join("agent.toml");
    let conf_s = conf.to_str().expect("UTF-8");
    std::fs::write(
        &conf,
        "iface = \"wan0\"\ndrop = true\ninterval = 0.1\noutput = \"json\"\n",
    )
    .expect("writing the config");
    let mut a = Agent::start(&link.router, &["--config", conf_s]);
    assert_eq!(fresh(&mut a)["mode"], "drop");
    assert_dropped_and_counted(&mut a, &link, 5);
    std::fs::write(
        &conf,
        "iface = \"wan0\"\ninterval = 0.1\noutput = \"json\"\n",
    )
    .expect("rewriting the config");
    a.proc.signal(libc::SIGHUP);
    wait_report(&mut a, "mode monitor", Duration::from_secs(3), |r| {
        r["mode"] == "monitor"
    });
    assert_eq!(
        Wan::open(&link).requests(5),
        5,
        "monitor mode after the reload"
    );
    assert!(matches!(a.proc.0.try_wait(), Ok(None)));
    let err = a.stop(libc::SIGTERM).stderr;
    assert!(
        err.contains("SIGHUP: wan0: mode was drop, now monitor"),
        "{err}"
    );
}

#[test]
fn two_router_namespaces_with_the_same_pin_dir_do_not_collide() {
    require_root();
    let one = WanLink::new("prot-two1");
    let two = WanLink::new("prot-two2");
    let bpffs = Bpffs::new("two").expect("mounting a bpffs");
    let root = bpffs.pin_root();
    let args = ["--iface", "wan0", "--drop", "--pin", "--pin-dir", &root];
    let mut a1 = Agent::start(&one.router, &args);
    let mut a2 = Agent::start(&two.router, &args);
    let i1 = instance(&status_json(&one.router, &root), "wan0");
    let i2 = instance(&status_json(&two.router, &root), "wan0");
    for (i, link) in [(&i1, &one), (&i2, &two)] {
        assert_eq!(i["attached"], true, "{i}");
        let pinned = i["pinned"].as_str().expect("a pin dir");
        assert!(
            pinned.contains(&format!("netns:{}", netns_inode(&link.router))),
            "{pinned}"
        );
    }
    assert_ne!(i1["pinned"], i2["pinned"]);
    assert_ne!(i1["prog_id"], i2["prog_id"]);
    assert_dropped_and_counted(&mut a1, &one, 20);
    assert_dropped_and_counted(&mut a2, &two, 20);
    for a in [&mut a1, &mut a2] {
        let r = fresh(a);
        assert_eq!(
            (r["attached"].clone(), r["state"].clone(), totals(&r)),
            (Value::Bool(true), Value::from("attached"), (20, 20)),
            "{}",
            brief(&r)
        );
    }
    // Stop the second and remove its filter: the first stays protected.
    a2.stop(libc::SIGTERM);
    detach_wan0(&two.router, &root);
    assert_eq!(Wan::open(&two).requests(3), 3, "the second is detached");
    assert!(one.router.xdp_attached("wan0"));
    let i1 = instance(&status_json(&one.router, &root), "wan0");
    assert_eq!(i1["attached"], true, "{i1}");
    assert_dropped_and_counted(&mut a1, &one, 20);
    let r = fresh(&mut a1);
    assert_eq!(r["state"], "attached", "{}", brief(&r));
    assert_eq!(r["reattachments"], 0, "{}", brief(&r));
    let err = a1.stop(libc::SIGTERM).stderr;
    assert!(err.contains("keeps dropping"), "{err}");
    detach_wan0(&one.router, &root);
}

#[test]
fn a_renamed_interface_is_refused_and_its_filter_left_alone() {
    require_root();
    let (link, _bpffs, root) = pinned_wan("prot-rename");
    pinned_then_killed(&link, &root, &["--drop"]);
    for args in [
        ["link", "set", "wan0", "down"].as_slice(),
        &["link", "set", "wan0", "name", "wan1"],
        &["link", "set", "wan1", "up"],
    ] {
        link.router.ip(args).expect("renaming wan0");
    }
    link.add_pair(("wan0", "198.19.9.1"), ("inet9", "198.19.9.2"));

    let out = agent_output(
        &link.router,
        &[
            "--iface",
            "wan0",
            "--drop",
            "--pin",
            "--pin-dir",
            &root,
            "--duration",
            "1",
            "--output",
            "json",
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("renamed"), "{err}");
    assert!(link.router.xdp_attached("wan1"), "wan1 keeps its filter");
    assert!(
        !link.router.xdp_attached("wan0"),
        "the new wan0 got nothing"
    );
    let ns_dir = Path::new(&root).join(format!("netns:{}", netns_inode(&link.router)));
    let link_pins = std::fs::read_dir(&ns_dir)
        .expect("the namespace's pin directory")
        .filter_map(Result::ok)
        .filter(|e| e.path().join("link").exists())
        .count();
    assert_eq!(link_pins, 1, "the link pin stays");
    assert_eq!(
        Wan::open(&link).requests(20),
        0,
        "requests to wan1's address are still dropped"
    );
}

#[test]
fn a_bpffs_only_in_the_agents_mount_namespace_is_refused() {
    require_root();
    let link = WanLink::new("prot-privmnt");
    let private = run_dir("privmnt");
    let script = format!(
        "mount -t bpf bpf {p} && exec {AGENT} --iface wan0 --drop --pin --pin-dir {p}/pins \
         --duration 1",
        p = private.path().display()
    );
    let out = link
        .router
        .command("timeout")
        .args(["20", "unshare", "-m", "--propagation", "private"])
        .args(["sh", "-c", &script])
        .output()
        .expect("running unshare");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert_ne!(out.status.code(), Some(124), "timed out: {err}");
    assert!(
        err.contains("only in this process's mount namespace"),
        "{err}"
    );
    assert!(!link.router.xdp_attached("wan0"), "nothing attached");

    let plain = run_dir("plainmnt");
    let out = link
        .router
        .command("timeout")
        .args(["10", AGENT, "--iface", "wan0", "--drop", "--pin"])
        .args(["--pin-dir", plain.path().to_str().expect("UTF-8 path")])
        .args(["--duration", "1"])
        .output()
        .expect("running the agent");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert_ne!(out.status.code(), Some(124), "timed out: {err}");
    assert!(err.contains("not on a BPF filesystem"), "{err}");
    assert!(!link.router.xdp_attached("wan0"), "nothing attached");
}

#[test]
fn a_closed_output_pipe_does_not_make_the_agent_panic() {
    require_root();
    let link = WanLink::new("prot-pipe");
    let dir = tempfile::tempdir().expect("temp dir");
    let errfile = dir.path().join("stderr");
    let agent = format!("{AGENT} --iface wan0 --drop --output json --interval 0.1 --duration 1");
    // stdout and stderr both into `head -1`; then stdout alone, stderr kept.
    let script = format!(
        "{agent} 2>&1 | head -1; echo \"agent-exit=${{PIPESTATUS[0]}}\"; \
         {agent} 2>{err} | head -1; echo \"agent-exit=${{PIPESTATUS[0]}}\"",
        err = errfile.display()
    );
    let out = link
        .router
        .command("timeout")
        .args(["30", "bash", "-c", &script])
        .output()
        .expect("running the pipeline");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let agent_err = std::fs::read_to_string(&errfile).unwrap_or_default();
    let all = format!("stdout:\n{stdout}\nstderr:\n{stderr}\nagent stderr (2nd run):\n{agent_err}");
    assert!(out.status.success(), "{all}");
    assert!(!all.contains("panicked"), "{all}");
    let exits: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("agent-exit="))
        .collect();
    assert_eq!(exits.len(), 2, "{all}");
    for code in exits {
        let code: i32 = code.parse().expect("an exit code");
        // 101: a Rust panic; above 128: killed by a signal (SIGPIPE, abort).
        assert!(code != 101 && code < 128, "agent exit {code}: {all}");
    }
    assert!(!link.router.xdp_attached("wan0"));
}

/// The bpffs under a running pinned agent unmounted in the host's mount
/// namespace: the agent still sees its own copy of the mount (`ip netns
/// exec` gave it a mount namespace), so the pins look intact to it, but they
/// die with that namespace. The agent must say so (pinned false, `NOT
/// PINNED`), `status` from outside must show the filter as running unpinned,
/// and the exit must say the filter goes, which it then does.
#[test]
fn an_unmounted_bpffs_under_a_running_agent_is_reported_and_the_exit_tells_the_truth() {
    require_root();
    let (link, bpffs, root) = pinned_wan("prot-umount");
    let mut a = Agent::start(
        &link.router,
        &["--iface", "wan0", "--drop", "--pin", "--pin-dir", &root],
    );
    wait_report(&mut a, "pinned true", Duration::from_secs(2), |r| {
        r["pinned"] == true && r["attached"] == true
    });
    sh(&["umount", &bpffs.path_str()]).expect("unmounting the bpffs");
    let r = wait_report(&mut a, "pinned false", Duration::from_secs(2), |r| {
        r["pinned"] == false
    });
    assert_eq!(r["attached"], true, "{}", brief(&r));
    assert!(
        r["alert"]
            .as_str()
            .is_some_and(|s| s.starts_with("NOT PINNED")),
        "{}",
        brief(&r)
    );
    // The agent holds the link: still dropping while it runs.
    assert_dropped_and_counted(&mut a, &link, 10);
    // From outside, nothing is pinned, but the kernel runs our filter.
    let status = status_json(&link.router, &root);
    let unpinned = status["unpinned"].as_array().expect("unpinned list");
    assert!(
        unpinned.iter().any(|u| u["iface"] == "wan0"),
        "status must list the unpinned filter on wan0: {status}"
    );
    let err = a.stop(libc::SIGTERM).stderr;
    assert!(
        err.contains("NOT protected from now on") && !err.contains("stays attached"),
        "{err}"
    );
    assert!(
        !link.router.xdp_attached("wan0"),
        "the filter went with the agent"
    );
    assert_eq!(
        Wan::open(&link).requests(5),
        5,
        "and it said so: requests pass"
    );
}

/// A restart over a pinned instance with another `--xdp-mode` keeps the
/// pinned link's mode and says so; a second agent without `--pin` on the
/// same interface is refused with a message naming this product's own
/// instance and the commands that really remove it.
#[test]
fn xdp_mode_of_a_pinned_link_is_kept_and_said_and_a_second_agent_names_the_first() {
    require_root();
    let (link, _bpffs, root) = pinned_wan("prot-xmode");
    let args = ["--iface", "wan0", "--drop", "--pin", "--pin-dir", &root];
    let mut first = Agent::start(&link.router, &args);
    first.proc.signal(libc::SIGKILL);
    first
        .proc
        .wait_for(Duration::from_secs(5))
        .expect("the agent survived SIGKILL");
    let mut again: Vec<&str> = args.to_vec();
    again.extend(["--xdp-mode", "skb"]);
    let second = Agent::start(&link.router, &again);
    let (ok, _, err) = run_agent(&link.router, &["--iface", "wan0", "--duration", "1"]);
    assert!(!ok, "a third agent without --pin must be refused");
    assert!(
        err.contains("this product's own filter")
            && err.contains("bpftool link detach id")
            && err.contains("nat-pmp-agent detach --iface wan0"),
        "{err}"
    );
    let stopped = second.stop(libc::SIGTERM);
    assert!(
        stopped
            .stderr
            .contains("wan0: stays in native XDP mode as pinned; --xdp-mode skb"),
        "{}",
        stopped.stderr
    );
    assert_eq!(stopped.report["xdp_mode"], "native", "{}", stopped.report);
    assert!(link.router.xdp_attached("wan0"));
}
