//! `nat-pmp-agent audit` against the real thing: Debian's miniupnpd in the
//! real-peer lab ([`crate::support::peers`]), exposed on its WAN or on the
//! LAN only, the agent pinned in drop mode, real scans from the internet
//! host, and the binary run as an unprivileged user. Each run's JSON is
//! validated against docs/audit.schema.json, and its exit code is the
//! verdict: 0 safe, 1 exposed, 2 error or incomplete.

use std::{net::UdpSocket, path::Path, process::Stdio};

use serde_json::Value;

use crate::support::{
    agent::{agent_output, pinned_wan, AGENT},
    bpffs::Bpffs,
    netns::NetNs,
    peers::{find_tool, run_in, start_agent, text, wan_scans_get_no_answer, Lab, ROUTER_LAN_ADDR},
    require_root, schema,
    wan::{bind, WanLink, ROUTER_ADDR},
};

/// What one `audit` run gave.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn of(out: &std::process::Output) -> Run {
        Run {
            code: out
                .status
                .code()
                .unwrap_or_else(|| panic!("audit was killed: {}", out.status)),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// The `--json` output, validated against the schema.
    fn json(&self) -> Value {
        let v: Value = serde_json::from_str(self.stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "audit --json printed no JSON ({e}):\n{}{}",
                self.stdout, self.stderr
            )
        });
        schema::assert_valid_audit(&v);
        assert_eq!(
            v["exit_code"].as_i64(),
            Some(i64::from(self.code)),
            "the JSON's exit_code is the exit status: {v:#}"
        );
        v
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// `nat-pmp-agent audit ARGS` in `ns`, as root.
fn audit(ns: &NetNs, args: &[&str]) -> Run {
    let mut all = vec!["audit"];
    all.extend_from_slice(args);
    let run = Run::of(&agent_output(ns, &all));
    println!("$ nat-pmp-agent {}\n{run}", all.join(" "));
    run
}

/// Text and JSON audits of `wan0` with pins under `pin_root`: the same
/// exit code; returns the text run and the JSON.
fn audit_both(ns: &NetNs, pin_root: &str) -> (Run, Value) {
    let t = audit(ns, &["--iface", "wan0", "--pin-dir", pin_root]);
    let j = audit(ns, &["--iface", "wan0", "--pin-dir", pin_root, "--json"]);
    assert_eq!(t.code, j.code, "text and JSON disagree:\n{t}\n{j}");
    let v = j.json();
    (t, v)
}

/// The last line of a text run: the one-line verdict.
fn verdict_line(r: &Run) -> &str {
    r.stdout.lines().last().unwrap_or_default()
}

/// Whether the string `field` of `v` contains `needle`.
fn has(v: &Value, field: &str, needle: &str) -> bool {
    v[field].as_str().is_some_and(|s| s.contains(needle))
}

/// The sockets of an audit bound to `addr`:`port`.
fn sockets_at<'a>(v: &'a Value, addr: &str, port: u16) -> Vec<&'a Value> {
    v["sockets"]
        .as_array()
        .expect("sockets is a list")
        .iter()
        .filter(|s| s["address"] == addr && s["port"] == port)
        .collect()
}

#[test]
fn an_exposed_miniupnpd_is_named_and_exits_1() {
    let lab = Lab::new("audit-x");
    let bpffs = Bpffs::new("audit-x").expect("mounting a bpffs");
    let root = bpffs.pin_root();
    let pid = lab.miniupnpd_pid();
    let (t, v) = audit_both(&lab.router, &root);
    assert_eq!(t.code, 1, "an exposed WAN is exit 1:\n{t}");
    let named = format!("miniupnpd (pid {pid})");
    assert!(
        t.stdout.contains(&format!("{ROUTER_ADDR}:5351")) && t.stdout.contains(&named),
        "the text names the socket and {named}:\n{t}"
    );
    assert!(
        t.stdout.contains("an address of the WAN wan0"),
        "the text says why the WAN reaches it:\n{t}"
    );
    let last = verdict_line(&t);
    assert!(
        last.starts_with("EXPOSED on wan0") && last.contains(&named),
        "one-line verdict last:\n{t}"
    );

    assert_eq!(v["verdict"], "exposed", "{v:#}");
    let wan = sockets_at(&v, ROUTER_ADDR, 5351);
    assert_eq!(wan.len(), 1, "one socket on the WAN address: {v:#}");
    let s = wan[0];
    assert_eq!(
        s["owners"][0]["pid"].as_u64(),
        Some(u64::from(pid)),
        "{s:#}"
    );
    assert_eq!(s["owners"][0]["name"], "miniupnpd", "{s:#}");
    assert_eq!(s["wan_reachable"], true, "{s:#}");
    assert_eq!(s["exposed"], true, "{s:#}");
    assert_eq!(s["exposed_via"][0], "wan0", "{s:#}");
    assert!(has(s, "reason", "an address of the WAN wan0"), "{s:#}");
    // Its PCP socket on the IPv6 wildcard: reachable from the WAN too.
    let any6 = sockets_at(&v, "::", 5351);
    assert_eq!(any6.len(), 1, "{v:#}");
    assert_eq!(any6[0]["owners"][0]["name"], "miniupnpd", "{v:#}");
    assert_eq!(any6[0]["exposed_via"][0], "wan0", "{v:#}");
    assert!(has(any6[0], "reason", "wildcard"), "{v:#}");
    // miniupnpd's LAN socket is listed too, and the WAN cannot reach it.
    let lan = sockets_at(&v, ROUTER_LAN_ADDR, 5351);
    assert_eq!(lan.len(), 1, "{v:#}");
    assert_eq!(lan[0]["wan_reachable"], false, "{v:#}");
    assert_eq!(lan[0]["owners"][0]["name"], "miniupnpd", "{v:#}");
    assert_eq!(v["wans"][0]["protection"]["protects"], false, "{v:#}");
    assert_eq!(
        v["wans"][0]["answered"]["state"], "not_available",
        "answered counters are never reported as 0 without an instance: {v:#}"
    );
}

#[test]
fn a_pinned_drop_mode_instance_protects_and_scans_get_no_answer() {
    let lab = Lab::new("audit-d");
    let bpffs = Bpffs::new("audit-d").expect("mounting a bpffs");
    let root = bpffs.pin_root();
    // The README's way: pinned, in drop mode; the agent exits, the pinned
    // instance stays attached.
    let out = run_in(
        &lab.router,
        &lab.tools,
        30,
        Path::new(AGENT),
        &[
            "--iface",
            "wan0",
            "--drop",
            "--pin",
            "--pin-dir",
            &root,
            "--duration",
            "0.5",
            "--output",
            "json",
        ],
    );
    assert!(out.status.success(), "the agent: {}", text(&out));
    let (prog_id, _) = lab
        .router
        .xdp_prog("wan0")
        .expect("the pinned program stays on wan0");

    let (t, v) = audit_both(&lab.router, &root);
    assert_eq!(t.code, 0, "a WAN protected by drop mode is exit 0:\n{t}");
    let g = &v["wans"][0]["protection"];
    assert_eq!(g["protects"], true, "{v:#}");
    assert_eq!(g["mode"], "drop", "{v:#}");
    assert_eq!(g["attached"], true, "{v:#}");
    assert_eq!(g["prog_id"].as_u64(), Some(u64::from(prog_id)), "{v:#}");
    let pinned = g["pinned"].as_str().expect("the pin directory");
    assert!(
        pinned.starts_with(&root) && pinned.ends_with("/wan0"),
        "{v:#}"
    );
    let link_id = g["link_id"].as_u64().expect("a link id");
    assert!(
        t.stdout.contains(pinned) && t.stdout.contains(&format!("link id {link_id}")),
        "the text names the instance that protects the WAN:\n{t}"
    );
    let last = verdict_line(&t);
    assert!(
        last.starts_with("SAFE") && last.contains(pinned),
        "one-line verdict naming the instance:\n{t}"
    );
    let s = sockets_at(&v, ROUTER_ADDR, 5351);
    assert_eq!(s.len(), 1, "{v:#}");
    assert_eq!(s[0]["wan_reachable"], true, "still reachable: {v:#}");
    assert_eq!(s[0]["exposed"], false, "but protected: {v:#}");

    // And the WAN's scanners indeed get nothing: the pinned egress program
    // counted no answer, and the audit says so.
    wan_scans_get_no_answer(&lab);
    let (t, v) = audit_both(&lab.router, &root);
    assert_eq!(t.code, 0, "scanned in drop mode, still safe:\n{t}");
    let answered = &v["wans"][0]["answered"];
    assert_eq!(
        answered["state"], "counted",
        "the pinned egress counters: {v:#}"
    );
    assert_eq!(
        answered["packets"], 0,
        "drop mode: no answer left wan0: {v:#}"
    );
    assert!(
        verdict_line(&t).contains("no answer counted"),
        "the verdict covers the answers:\n{t}"
    );

    // The same instance switched to monitor mode protects nothing.
    let out = agent_output(
        &lab.router,
        &["mode", "monitor", "--iface", "wan0", "--pin-dir", &root],
    );
    assert!(out.status.success(), "mode monitor: {out:?}");
    let (t, v) = audit_both(&lab.router, &root);
    assert_eq!(t.code, 1, "monitor mode does not protect:\n{t}");
    assert_eq!(v["wans"][0]["protection"]["mode"], "monitor", "{v:#}");
    assert!(t.stdout.contains("monitor mode"), "{t}");

    // Scanned in monitor mode, miniupnpd answers: the pinned egress
    // program counts the answers, and the audit names them.
    let nmap = lab.nmap(8083);
    assert!(nmap.contains(&format!("WAN IP: {ROUTER_ADDR}")), "{nmap}");
    let (t, v) = audit_both(&lab.router, &root);
    assert_eq!(t.code, 1, "answers left the WAN:\n{t}");
    let answered = &v["wans"][0]["answered"];
    assert_eq!(answered["state"], "counted", "{v:#}");
    assert!(answered["packets"].as_u64().is_some_and(|n| n > 0), "{v:#}");
    assert!(
        v["exposures"].as_array().is_some_and(|e| e
            .iter()
            .any(|x| x.as_str().is_some_and(|x| x.contains("answers left wan0")))),
        "the exposures name the answers: {v:#}"
    );
}

#[test]
fn lan_and_loopback_listeners_are_not_wan_reachable() {
    // miniupnpd on the LAN only. It also opens [::]:5351 for PCP over IPv6
    // whatever `listening_ip` says (a wildcard: the WAN reaches it, see the
    // exposed test), so IPv6 is off here.
    let lab = Lab::listening_on("audit-l", &["lan0"], "ipv6_disable=yes\n");
    let bpffs = Bpffs::new("audit-l").expect("mounting a bpffs");
    let root = bpffs.pin_root();
    let lo4 = bind(&lab.router, "127.0.0.1", 5351);
    let lo6 = bind(&lab.router, "::1", 5351);
    let (t, v) = audit_both(&lab.router, &root);
    assert_eq!(t.code, 0, "nothing the WAN can reach:\n{t}");
    let sockets = v["sockets"].as_array().expect("a list");
    assert!(
        sockets.len() >= 3,
        "miniupnpd's and the two loopback sockets: {v:#}"
    );
    for s in sockets {
        assert_eq!(s["wan_reachable"], false, "{s:#}");
        assert_eq!(s["exposed"], false, "{s:#}");
    }
    let lan = sockets_at(&v, ROUTER_LAN_ADDR, 5351);
    assert_eq!(lan.len(), 1, "{v:#}");
    assert_eq!(lan[0]["owners"][0]["name"], "miniupnpd", "{v:#}");
    assert!(has(lan[0], "reason", "not of a WAN"), "{v:#}");
    let me = i64::from(std::process::id().cast_signed());
    for addr in ["127.0.0.1", "::1"] {
        let s = sockets_at(&v, addr, 5351);
        assert_eq!(s.len(), 1, "{addr}: {v:#}");
        assert!(has(s[0], "reason", "loopback"), "{v:#}");
        assert_eq!(
            s[0]["owners"][0]["pid"].as_i64(),
            Some(me),
            "this test holds it: {v:#}"
        );
    }
    assert!(verdict_line(&t).starts_with("SAFE"), "{t}");
    drop((lo4, lo6));
}

#[test]
fn nothing_listening_is_safe() {
    require_root();
    let (link, _bpffs, root) = pinned_wan("audit-n");
    let (t, v) = audit_both(&link.router, &root);
    assert_eq!(t.code, 0, "{t}");
    assert_eq!(v["sockets"].as_array().map(Vec::len), Some(0), "{v:#}");
    assert!(t.stdout.contains("UDP sockets on 5350/5351: none"), "{t}");
    assert!(
        verdict_line(&t).starts_with("SAFE: no socket on UDP 5350/5351 is reachable"),
        "{t}"
    );
}

#[test]
fn a_wildcard_listener_is_reachable_and_5350_is_never_shielded() {
    require_root();
    let (link, _bpffs, root) = pinned_wan("audit-w");
    let any = bind(&link.router, "0.0.0.0", 5350);
    let (t, v) = audit_both(&link.router, &root);
    assert_eq!(t.code, 1, "{t}");
    let s = sockets_at(&v, "0.0.0.0", 5350);
    assert_eq!(s.len(), 1, "{v:#}");
    assert_eq!(s[0]["reachable_via"][0], "wan0", "{v:#}");
    assert!(has(s[0], "reason", "wildcard"), "{v:#}");
    assert!(has(s[0], "verdict", "5351 only"), "{v:#}");
    drop(any);
}

#[test]
fn bad_flags_and_a_missing_interface_exit_2() {
    require_root();
    let link = WanLink::new("audit-e");
    let r = audit(&link.router, &[]);
    assert_eq!(r.code, 2, "{r}");
    assert!(r.stderr.contains("--iface"), "names the missing flag: {r}");
    let r = audit(&link.router, &["--iface", "wan0", "--bogus"]);
    assert_eq!(r.code, 2, "{r}");
    assert!(r.stderr.contains("--bogus"), "{r}");
    let r = audit(&link.router, &["--iface", "nosuch0"]);
    assert_eq!(r.code, 2, "{r}");
    assert!(
        r.stderr.contains("interface \"nosuch0\" does not exist"),
        "a clear message: {r}"
    );
    assert!(r.stdout.is_empty(), "no verdict on an error: {r}");
}

#[test]
fn an_unprivileged_run_says_what_it_could_not_see() {
    require_root();
    let (link, bpffs, root) = pinned_wan("audit-u");
    // The pins are root's, as on a real router.
    std::fs::set_permissions(
        &bpffs.path,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .expect("chmod 700 the bpffs");
    // A socket of root's that the WAN cannot reach: its owner is hidden
    // from another user.
    let held: UdpSocket = bind(&link.router, "127.0.0.1", 5351);
    let setpriv = find_tool("setpriv", "util-linux");
    let out = link
        .router
        .command(setpriv)
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", AGENT])
        .args(["audit", "--iface", "wan0", "--pin-dir", &root, "--json"])
        .stdin(Stdio::null())
        .output()
        .expect("running the agent as nobody");
    let r = Run::of(&out);
    println!("$ setpriv --reuid=65534 ... nat-pmp-agent audit --iface wan0 --json\n{r}");
    assert_eq!(r.code, 2, "an incomplete audit is never 0:\n{r}");
    let v = r.json();
    assert_eq!(v["verdict"], "incomplete", "{v:#}");
    let gaps = v["gaps"].to_string();
    assert!(
        gaps.contains("pinned instances") && gaps.contains("permission denied"),
        "says it could not read the pins: {v:#}"
    );
    assert!(
        gaps.contains("127.0.0.1:5351"),
        "says whose owner it could not see: {v:#}"
    );
    // What it could see, it lists: sock_diag needs no privilege.
    let s = sockets_at(&v, "127.0.0.1", 5351);
    assert_eq!(s.len(), 1, "{v:#}");
    assert_eq!(s[0]["uid"], 0, "{v:#}");
    assert!(s[0]["owner_unknown"].is_string(), "{v:#}");

    let out = link
        .router
        .command(find_tool("setpriv", "util-linux"))
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", AGENT])
        .args(["audit", "--iface", "wan0", "--pin-dir", &root])
        .stdin(Stdio::null())
        .output()
        .expect("running the agent as nobody");
    let r = Run::of(&out);
    println!("{r}");
    assert_eq!(r.code, 2, "{r}");
    assert!(
        r.stdout.contains("could not check: the pinned instances"),
        "{r}"
    );
    assert!(verdict_line(&r).starts_with("INCOMPLETE"), "{r}");
    drop(held);
}

/// An agent running without `--pin` in monitor mode: the audit cannot vouch
/// for its mode, but it reads the answers its egress program counted (found
/// by the kernel's tcx query on the WAN), and a scan answered by miniupnpd
/// shows up there; in drop mode the same scan leaves the count at 0.
#[test]
fn a_running_unpinned_agents_answers_are_read() {
    let lab = Lab::new("audit-r");
    let bpffs = Bpffs::new("audit-r").expect("mounting a bpffs");
    let root = bpffs.pin_root();
    for drop in [false, true] {
        let agent = start_agent(&lab, drop);
        let before = audit_both(&lab.router, &root).1["wans"][0]["answered"]["packets"]
            .as_u64()
            .unwrap_or_else(|| panic!("answers of the running agent read (drop {drop})"));
        let nmap = lab.nmap(if drop { 8085 } else { 8084 });
        let (t, v) = audit_both(&lab.router, &root);
        let answered = &v["wans"][0]["answered"];
        assert_eq!(answered["state"], "counted", "drop {drop}: {v:#}");
        let after = answered["packets"].as_u64().expect("a count");
        assert_eq!(
            t.code, 1,
            "unpinned: never safe, and miniupnpd listens:\n{t}"
        );
        if drop {
            assert!(!nmap.contains("WAN IP:"), "drop mode: no answer: {nmap}");
            assert_eq!(after, before, "drop mode: no new answer: {v:#}");
        } else {
            assert!(nmap.contains(&format!("WAN IP: {ROUTER_ADDR}")), "{nmap}");
            assert!(after > before, "the scan's answers counted: {v:#}");
            assert!(
                v["exposures"].as_array().is_some_and(|e| e
                    .iter()
                    .any(|x| x.as_str().is_some_and(|x| x.contains("answers left wan0")))),
                "the exposures name the answers: {v:#}"
            );
        }
        agent.stop(libc::SIGTERM);
    }
}
