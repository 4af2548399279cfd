//! Operations end to end, as root in namespaces the tests create: pinning
//! (kill -9 keeps the filter dropping, a restart continues the counters,
//! `detach` removes everything), `status`, the runtime `mode` switch under
//! traffic (no packet lost from the counts), several interfaces in one
//! agent, the Prometheus endpoint (parsed, equal to the JSON report) and the
//! config file.
//!
//! Pins live on a bpffs each test mounts under /run ([`Bpffs`]): inside
//! `ip netns exec` /sys is remounted, and a mount the agent made there would
//! vanish with it. Guards unmount it (dropping the pins), delete the
//! namespaces and end the agents by PID even when an assertion fails.

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    path::Path,
    process::{Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use nat_pmp_ebpf_common::{Class, NATPMP_PORT};
use serde_json::Value;

use crate::support::{
    agent::{agent_ok, detach_wan0, last_report, pinned_wan, run_agent, status_json, AGENT},
    netns::NetNs,
    process::{sh, Agent},
    require_root,
    sentinel::Sentinel,
    wan::{bind, send, WanLink, INTERNET_ADDR, INTERNET_ADDR_1, ROUTER_ADDR, ROUTER_ADDR_1},
};

#[test]
fn pinned_agent_killed_keeps_dropping_restart_continues_detach_removes_all() {
    require_root();
    let (link, _bpffs, root) = pinned_wan("ops-pin");
    let args = ["--iface", "wan0", "--drop", "--pin", "--pin-dir", &root];
    let listener = bind(&link.router, ROUTER_ADDR, NATPMP_PORT);
    let scanner = bind(&link.internet, INTERNET_ADDR, 0);

    let mut first = Agent::start(&link.router, &args);
    send(
        &scanner,
        ROUTER_ADDR,
        Class::NatpmpExternalAddressRequest,
        50,
    );
    let r = first.wait_for_total(50);
    assert_eq!(r["total"]["dropped_packets"], 50, "{r}");

    // kill -9: no chance to clean up; the pins keep the filter in place.
    first.proc.signal(libc::SIGKILL);
    first
        .proc
        .wait_for(Duration::from_secs(5))
        .expect("the agent survived SIGKILL");
    assert!(
        link.router.xdp_attached("wan0"),
        "the pinned filter must stay attached after kill -9"
    );
    send(&scanner, ROUTER_ADDR, Class::NatpmpMapUdpRequest, 30);
    assert_eq!(
        link.received(&listener),
        0,
        "fail-closed: nothing may reach the listener while no agent runs"
    );
    let st = status_json(&link.router, &root);
    let inst = &st["instances"][0];
    assert_eq!(inst["iface"], "wan0", "{st}");
    assert_eq!(inst["attached"], true, "{st}");
    assert_eq!(inst["mode"], "drop", "{st}");
    assert_eq!(inst["xdp_mode"], "native", "{st}");
    assert_eq!(
        inst["total"]["packets"], 80,
        "counted while no agent ran: {st}"
    );
    assert_eq!(inst["total"]["dropped_packets"], 80, "{st}");
    assert_eq!(inst["iface_xdp"]["prog_id"], inst["prog_id"], "{st}");

    // A restarted agent picks up the pinned program: counters continue.
    let second = Agent::start(&link.router, &args);
    send(&scanner, ROUTER_ADDR, Class::Pcp, 20);
    let r = second.wait_for_total(100);
    assert_eq!(r["total"]["packets"], 100, "{r}");
    assert_eq!(
        r["counters"]["natpmp_external_address_request"]["dropped_packets"],
        50
    );
    assert_eq!(
        r["counters"]["natpmp_map_udp_request"]["dropped_packets"],
        30
    );
    assert_eq!(r["counters"]["pcp"]["dropped_packets"], 20);
    let err = second.stop(libc::SIGTERM).stderr;
    assert!(
        err.contains("picked up the filter pinned under") && err.contains("stays attached to wan0"),
        "the agent must say it picked up the pins and leaves the filter attached: {err}"
    );
    assert!(link.router.xdp_attached("wan0"));
    assert_eq!(link.received(&listener), 0);

    // detach removes program, link, maps and the directory.
    let out = detach_wan0(&link.router, &root);
    assert!(out.contains("wan0: detached"), "{out}");
    assert!(!link.router.xdp_attached("wan0"), "detach must detach");
    assert!(
        !Path::new(&root).join("wan0").exists(),
        "detach must remove the pin directory"
    );
    send(
        &scanner,
        ROUTER_ADDR,
        Class::NatpmpExternalAddressRequest,
        5,
    );
    assert_eq!(
        link.received(&listener),
        5,
        "after detach, datagrams pass again"
    );
    let st = status_json(&link.router, &root);
    assert_eq!(st["instances"], Value::Array(vec![]), "{st}");
    let (ok, _, err) = run_agent(
        &link.router,
        &["detach", "--iface", "wan0", "--pin-dir", &root],
    );
    assert!(!ok && err.contains("nothing is pinned for wan0"), "{err}");
}

/// `--no-sources` end to end: drop mode drops and counts every datagram
/// exactly, and the reports track no source.
#[test]
fn no_sources_counts_exactly_and_tracks_no_source() {
    require_root();
    let link = WanLink::new("ops-nosrc");
    let a = Agent::start(&link.router, &["--iface", "wan0", "--drop", "--no-sources"]);
    let from = bind(&link.internet, INTERNET_ADDR, 0);
    send(&from, ROUTER_ADDR, Class::NatpmpExternalAddressRequest, 7);
    let r = a.wait_for_total(7);
    assert_eq!(
        r["counters"]["natpmp_external_address_request"]["dropped_packets"], 7,
        "{r}"
    );
    assert_eq!(r["sources_tracked"], 0, "{r}");
    assert_eq!(r["sources"].as_array().map(Vec::len), Some(0), "{r}");
    a.stop(libc::SIGTERM);
}

/// Whether the kernel still has a program with this id.
fn program_loaded(id: u32) -> bool {
    aya::programs::loaded_programs().any(|p| p.is_ok_and(|p| p.id() == id))
}

#[test]
fn without_pin_nothing_is_left_behind() {
    require_root();
    let (link, _bpffs, root) = pinned_wan("ops-nopin");
    let a = Agent::start(&link.router, &["--iface", "wan0", "--drop"]);
    let id = link
        .router
        .xdp_prog_id("wan0")
        .expect("the agent's program on wan0");
    a.stop(libc::SIGTERM);
    assert!(!link.router.xdp_attached("wan0"));
    // Not "the pin root does not exist": the agent was never given that
    // path, so that held whatever it did. The program leaving the kernel
    // can fail: a pin anywhere, a link or a leaked descriptor would keep it.
    let end = Instant::now() + Duration::from_secs(5);
    while program_loaded(id) {
        assert!(
            Instant::now() < end,
            "program {id} is still loaded 5 s after the agent without --pin exited: \
             something holds it (a pin, a link)"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // status on an interface without pins says what runs there.
    let out = agent_ok(
        &link.router,
        &["status", "--iface", "wan0", "--pin-dir", &root],
    );
    assert!(
        out.contains("wan0: nothing pinned") && out.contains("no XDP program"),
        "{out}"
    );
}

#[test]
fn detach_while_the_agent_runs_stops_the_filter_at_once() {
    require_root();
    let (link, _bpffs, root) = pinned_wan("ops-det");
    let a = Agent::start(
        &link.router,
        &["--iface", "wan0", "--drop", "--pin", "--pin-dir", &root],
    );
    detach_wan0(&link.router, &root);
    // The running agent still holds the link open; BPF_LINK_DETACH must
    // have detached it anyway.
    assert!(!link.router.xdp_attached("wan0"));
    let listener = bind(&link.router, ROUTER_ADDR, NATPMP_PORT);
    let scanner = bind(&link.internet, INTERNET_ADDR, 0);
    send(
        &scanner,
        ROUTER_ADDR,
        Class::NatpmpExternalAddressRequest,
        3,
    );
    assert_eq!(link.received(&listener), 3);
    a.stop(libc::SIGTERM);
    assert!(!Path::new(&root).join("wan0").exists());
}

#[test]
fn pin_dir_not_on_bpffs_inside_ip_netns_exec_is_a_clear_error() {
    require_root();
    let link = WanLink::new("ops-nobpf");
    // A directory that does not exist yet, under /run: not a bpffs.
    let run = tempfile::Builder::new()
        .prefix("natpmp-test-nobpf-")
        .tempdir_in("/run")
        .expect("a directory under /run");
    let dir = run.path().join("pins").display().to_string();
    let (ok, _, err) = run_agent(
        &link.router,
        &[
            "--iface",
            "wan0",
            "--pin",
            "--pin-dir",
            &dir,
            "--duration",
            "1",
        ],
    );
    assert!(!ok, "pinning to a bpffs that would vanish must fail");
    assert!(
        err.contains("not on a BPF filesystem") && err.contains("mount -t bpf bpf"),
        "{err}"
    );
    assert!(
        !link.router.xdp_attached("wan0"),
        "nothing may stay attached"
    );
}

/// Datagrams the mode-switch test sends.
const SENT: u64 = 6000;

#[test]
fn runtime_mode_switch_under_traffic_loses_no_packet() {
    require_root();
    let (link, _bpffs, root) = pinned_wan("ops-switch");
    let a = Agent::start(
        &link.router,
        &["--iface", "wan0", "--pin", "--pin-dir", &root],
    );
    let listener = bind(&link.router, ROUTER_ADDR, NATPMP_PORT);
    let scanner = bind(&link.internet, INTERNET_ADDR, 0);
    // A reader drains the listener while the traffic runs, so its socket
    // buffer never overflows.
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            listener
                .set_read_timeout(Some(Duration::from_millis(200)))
                .expect("timeout");
            let mut buf = [0u8; 2048];
            let mut n = 0u64;
            loop {
                match listener.recv_from(&mut buf) {
                    Ok(_) => n += 1,
                    Err(_) if done.load(Ordering::SeqCst) => return n,
                    Err(_) => {}
                }
            }
        })
    };
    // Bounded: SENT datagrams at about 3000 per second, about 2 seconds.
    let sender = std::thread::spawn(move || {
        let payload = nat_pmp_agent::probe::sample_payload(Class::NatpmpMapTcpRequest);
        let start = Instant::now();
        for i in 0..SENT {
            scanner
                .send_to(&payload, (ROUTER_ADDR, NATPMP_PORT))
                .expect("sending");
            let due = start + Duration::from_micros(i * 333);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
    });
    let mut switches = 0;
    for mode in ["drop", "monitor", "drop", "monitor", "drop", "monitor"] {
        std::thread::sleep(Duration::from_millis(250));
        let out = agent_ok(
            &link.router,
            &["mode", mode, "--iface", "wan0", "--pin-dir", &root],
        );
        assert!(out.contains(&format!("-> {mode}")), "{out}");
        switches += 1;
    }
    sender.join().expect("sender");
    let r = a.wait_for_total(SENT);
    // Every passed datagram is queued on the listener once a sentinel has
    // arrived: the reader may stop at its next empty read, not after a
    // quiet window.
    Sentinel::new(&link.router, ROUTER_ADDR, &link.internet).sync();
    done.store(true, Ordering::SeqCst);
    let received = reader.join().expect("reader");
    let c = &r["counters"]["natpmp_map_tcp_request"];
    let passed =
        c["packets"].as_u64().expect("packets") - c["dropped_packets"].as_u64().expect("dropped");
    let dropped = c["dropped_packets"].as_u64().expect("dropped");
    assert_eq!(switches, 6);
    assert_eq!(
        passed + dropped,
        SENT,
        "every datagram sent must be counted once: {r}"
    );
    assert!(
        passed > 0 && dropped > 0,
        "the switches must have happened under traffic: {r}"
    );
    assert_eq!(
        received, passed,
        "the listener must get exactly the passed ones: {r}"
    );
    assert_eq!(r["mode"], "monitor", "the report shows the live mode");
    a.stop(libc::SIGTERM);
    detach_wan0(&link.router, &root);
}

/// The value of the one sample of `metric` with `labels`.
fn sample_value(scrape: &prometheus_parse::Scrape, metric: &str, labels: &[(&str, &str)]) -> u64 {
    let s = scrape
        .samples
        .iter()
        .find(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
        .unwrap_or_else(|| panic!("no sample {metric}{labels:?}"));
    let (prometheus_parse::Value::Counter(v)
    | prometheus_parse::Value::Gauge(v)
    | prometheus_parse::Value::Untyped(v)) = s.value
    else {
        panic!("{metric} is not a plain value");
    };
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "small counts, exact in f64"
    )]
    let v = v as u64;
    v
}

/// Parses the exposition text and checks every sample against the JSON
/// report `r` of interfaces wan0 and wan1.
fn check_metrics_match(report: &Value, body: &str) {
    let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned())))
        .expect("the exposition text parses");
    let value = |metric: &str, labels: &[(&str, &str)]| sample_value(&scrape, metric, labels);
    let mut checked = 0;
    let mut packets = 0;
    for iface in ["wan0", "wan1"] {
        let json = &report["interfaces"][iface];
        assert_eq!(value("natpmp_drop_mode", &[("iface", iface)]), 1);
        assert_eq!(
            Some(value("natpmp_sources_tracked", &[("iface", iface)])),
            json["sources_tracked"].as_u64(),
            "{iface}"
        );
        assert_eq!(
            Some(value(
                "natpmp_unattributed_packets_total",
                &[("iface", iface)]
            )),
            json["unattributed"].as_u64(),
            "{iface}"
        );
        // Its one sender, in the bounded top-10 per-source metric.
        let sender = &json["sources"][0];
        let address = sender["address"].as_str().expect("an address");
        assert_eq!(
            Some(value(
                "natpmp_source_packets_total",
                &[("iface", iface), ("source", address)]
            )),
            sender["packets"].as_u64(),
            "{iface}"
        );
        for class in nat_pmp_agent::output::metrics::exported_classes() {
            let counters = &json["counters"][class.name()];
            let n = |f: &str| counters[f].as_u64().expect("a counter");
            let l = |action| {
                [
                    ("iface", iface),
                    ("class", class.name()),
                    ("action", action),
                ]
            };
            let what = format!("{iface} {}\n{body}", class.name());
            assert_eq!(
                value("natpmp_packets_total", &l("dropped")),
                n("dropped_packets"),
                "{what}"
            );
            assert_eq!(
                value("natpmp_packets_total", &l("passed")),
                n("packets") - n("dropped_packets"),
                "{what}"
            );
            assert_eq!(
                value("natpmp_bytes_total", &l("dropped")),
                n("dropped_bytes"),
                "{what}"
            );
            assert_eq!(
                value("natpmp_bytes_total", &l("passed")),
                n("bytes") - n("dropped_bytes"),
                "{what}"
            );
            assert_eq!(
                value(
                    "natpmp_oversized_total",
                    &[("iface", iface), ("class", class.name())]
                ),
                n("oversized"),
                "{what}"
            );
            packets += value("natpmp_packets_total", &l("dropped"))
                + value("natpmp_packets_total", &l("passed"));
            checked += 5;
        }
    }
    let exported = nat_pmp_agent::output::metrics::exported_classes().count();
    assert_eq!(
        exported,
        Class::COUNT - 1,
        "every class but the aggregate `pcp`"
    );
    assert_eq!(checked, 5 * 2 * exported);
    assert!(
        !body.contains("class=\"pcp\""),
        "the aggregate must not be exported: it would count PCP twice in sums"
    );
    assert_eq!(
        Some(packets),
        report["total"]["packets"].as_u64(),
        "the metrics add up to the JSON total"
    );
}

/// The `sources` of the two-interface report: each interface saw exactly
/// one sender, with what it sent; the combined report lists both.
fn check_sources(r: &Value) {
    // Sources: each interface saw exactly one sender, with what it sent.
    let source = |w: &Value| {
        assert_eq!(w["sources_tracked"], 1, "{w}");
        assert_eq!(w["unattributed"], 0, "{w}");
        let s = &w["sources"][0];
        let classes: Vec<&str> = s["classes"]
            .as_array()
            .expect("classes")
            .iter()
            .map(|c| c.as_str().expect("a class name"))
            .collect();
        (
            s["address"].as_str().expect("address").to_owned(),
            s["packets"].as_u64().expect("packets"),
            classes.join(" "),
        )
    };
    assert_eq!(
        source(&r["interfaces"]["wan0"]),
        (
            INTERNET_ADDR.to_string(),
            9,
            "natpmp_external_address_request pcp_announce_request".to_owned()
        )
    );
    assert_eq!(
        source(&r["interfaces"]["wan1"]),
        (
            INTERNET_ADDR_1.to_string(),
            8,
            "natpmp_map_udp_request natpmp_external_address_response".to_owned()
        )
    );
    assert_eq!(
        r["interfaces"]["wan1"]["sources"][0]["bytes"], r["interfaces"]["wan1"]["total"]["bytes"],
        "one sender sent all of wan1's bytes"
    );
    // The combined report lists both, by packets.
    assert_eq!(r["sources_tracked"], 2, "{r}");
    assert_eq!(r["sources"][0]["address"], INTERNET_ADDR.to_string());
    assert_eq!(r["sources"][1]["address"], INTERNET_ADDR_1.to_string());
}

/// GET /metrics from inside `ns`.
fn scrape(ns: &NetNs, port: u16) -> String {
    ns.enter(|| {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connecting to /metrics");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        write!(s, "GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n").expect("request");
        let mut resp = String::new();
        s.read_to_string(&mut resp).expect("response");
        resp
    })
    .expect("entering the namespace")
}

#[test]
fn two_interfaces_count_apart_and_metrics_match_the_json() {
    require_root();
    let link = WanLink::new("ops-metrics");
    link.add_second_wan();
    let port = 19000 + u16::try_from(std::process::id() % 1000).expect("small");
    let addr = format!("127.0.0.1:{port}");
    let running = Agent::start(
        &link.router,
        &[
            "--iface",
            "wan0",
            "--iface",
            "wan1",
            "--drop",
            "--metrics",
            &addr,
        ],
    );
    let s0 = bind(&link.internet, INTERNET_ADDR, 0);
    let s1 = bind(&link.internet, INTERNET_ADDR_1, 0);
    send(&s0, ROUTER_ADDR, Class::NatpmpExternalAddressRequest, 7);
    send(&s0, ROUTER_ADDR, Class::Pcp, 2);
    send(&s1, ROUTER_ADDR_1, Class::NatpmpMapUdpRequest, 5);
    // Answers from port 5351 are counted and passed.
    let server = bind(&link.internet, INTERNET_ADDR_1, NATPMP_PORT);
    let answer = nat_pmp_agent::probe::sample_payload(Class::NatpmpExternalAddressResponse);
    for _ in 0..3 {
        server
            .send_to(&answer, (ROUTER_ADDR_1, 40000))
            .expect("answer");
    }
    let r = running.wait_for_total(17);
    assert_eq!(r["total"]["packets"], 17, "{r}");
    assert_eq!(r["iface"], "wan0,wan1");
    assert_eq!(r["mode"], "drop");
    let w0 = &r["interfaces"]["wan0"];
    let w1 = &r["interfaces"]["wan1"];
    assert_eq!(w0["total"]["packets"], 9, "{r}");
    assert_eq!(w1["total"]["packets"], 8, "{r}");
    assert_eq!(
        w1["counters"]["natpmp_external_address_response"]["packets"],
        3
    );
    assert_eq!(
        w1["counters"]["natpmp_external_address_response"]["dropped_packets"],
        0
    );
    assert_eq!(
        w0["counters"]["natpmp_map_udp_request"]["packets"], 0,
        "counted apart"
    );
    check_sources(&r);

    let resp = scrape(&link.router, port);
    let (head, body) = resp.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(
        head.starts_with("HTTP/1.") && head.contains(" 200 "),
        "{head}"
    );
    assert!(
        head.to_lowercase()
            .contains("content-type: application/openmetrics-text"),
        "{head}"
    );
    check_metrics_match(&r, body);

    let err = running.stop(libc::SIGTERM).stderr;
    assert!(
        err.contains(&format!(
            "serving Prometheus metrics on http://{addr}/metrics"
        )),
        "{err}"
    );
    assert!(!link.router.xdp_attached("wan0") && !link.router.xdp_attached("wan1"));
}

#[test]
fn metrics_refuse_a_remote_address_unless_allowed() {
    require_root();
    let ns = NetNs::new("ops-remote").expect("creating a namespace");
    let (ok, _, err) = run_agent(
        &ns,
        &[
            "--iface",
            "lo",
            "--metrics",
            "0.0.0.0:9351",
            "--duration",
            "1",
        ],
    );
    assert!(!ok);
    assert!(err.contains("--metrics-allow-remote"), "{err}");
    assert!(!ns.xdp_attached("lo"));
}

#[test]
fn config_file_sets_flags_and_bad_values_name_file_and_key() {
    require_root();
    let link = WanLink::new("ops-conf");
    let temp = tempfile::tempdir().expect("temp dir");
    let dir = temp.path();
    let good = dir.join("good.toml");
    std::fs::write(
        &good,
        "iface = \"wan0\"\ndrop = true\nxdp-mode = \"skb\"\noutput = \"json\"\nduration = 0.5\ninterval = 0.2\n",
    )
    .expect("writing the config");
    let (ok, out, err) = run_agent(&link.router, &["--config", good.to_str().expect("utf-8")]);
    assert!(ok, "{err}");
    let last = last_report(&out);
    assert_eq!(last["iface"], "wan0");
    assert_eq!(last["mode"], "drop");
    assert_eq!(last["xdp_mode"], "skb");
    assert_eq!(last["final"], true);
    // A flag wins over the file.
    let (ok, out, err) = run_agent(
        &link.router,
        &[
            "--config",
            good.to_str().expect("utf-8"),
            "--xdp-mode",
            "native",
        ],
    );
    assert!(ok, "{err}");
    let last = last_report(&out);
    assert_eq!(last["xdp_mode"], "native");

    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "iface = \"wan0\"\nxdp-mode = \"turbo\"\n").expect("writing");
    let (ok, _, err) = run_agent(&link.router, &["--config", bad.to_str().expect("utf-8")]);
    assert!(!ok);
    assert!(
        err.contains("bad.toml")
            && err.contains("key `xdp-mode` (line 2)")
            && err.contains("turbo"),
        "{err}"
    );
    assert!(!link.router.xdp_attached("wan0"));
}

/// The capabilities the systemd unit grants (and no others) are enough to
/// load, attach, pin, report and detach.
#[test]
fn the_units_capabilities_are_enough() {
    require_root();
    let (link, _bpffs, root) = pinned_wan("ops-caps");
    let caps = "-all,+bpf,+net_admin,+perfmon";
    let mut cmd = link.router.command("setpriv");
    cmd.args([
        &format!("--inh-caps={caps}"),
        &format!("--ambient-caps={caps}"),
        &format!("--bounding-set={caps}"),
        "--reuid=0",
    ])
    .args([
        AGENT,
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
        "--interval",
        "0.2",
    ]);
    let out = cmd.stderr(Stdio::piped()).output().expect("setpriv");
    assert!(
        out.status.success(),
        "with CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON only: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(link.router.xdp_attached("wan0"), "pinned and attached");
    let st = Command::new("ip")
        .args(["netns", "exec", &link.router.name, "setpriv"])
        .args([
            &format!("--inh-caps={caps}"),
            &format!("--ambient-caps={caps}"),
            &format!("--bounding-set={caps}"),
        ])
        .args([AGENT, "detach", "--iface", "wan0", "--pin-dir", &root])
        .output()
        .expect("detach");
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    assert!(!link.router.xdp_attached("wan0"));
}

#[test]
fn allowlist_from_the_flags_and_changed_at_runtime_without_reload() {
    require_root();
    let (link, _bpffs, root) = pinned_wan("ops-allow");
    let prefix = format!("{INTERNET_ADDR}/32");
    let a = Agent::start(
        &link.router,
        &[
            "--iface",
            "wan0",
            "--drop",
            "--pin",
            "--pin-dir",
            &root,
            "--allow",
            &prefix,
        ],
    );
    let listener = bind(&link.router, ROUTER_ADDR, NATPMP_PORT);
    let scanner = bind(&link.internet, INTERNET_ADDR, 0);
    let probe = |n| {
        send(&scanner, ROUTER_ADDR, Class::NatpmpMapUdpRequest, n);
        link.received(&listener)
    };
    let list = |ns: &NetNs| {
        agent_ok(
            ns,
            &["allow", "list", "--iface", "wan0", "--pin-dir", &root],
        )
    };
    assert_eq!(list(&link.router), format!("{prefix}\n"));
    assert_eq!(probe(4), 4, "an allowlisted source passes in drop mode");
    let out = agent_ok(
        &link.router,
        &[
            "allow",
            "del",
            &prefix,
            "--iface",
            "wan0",
            "--pin-dir",
            &root,
        ],
    );
    assert_eq!(out, format!("wan0: no longer allowing {prefix}\n"));
    assert_eq!(probe(3), 0, "dropped once the prefix is removed");
    assert_eq!(list(&link.router), "wan0: the allowlist is empty\n");
    agent_ok(
        &link.router,
        &[
            "allow",
            "add",
            "198.18.0.0/24",
            "--iface",
            "wan0",
            "--pin-dir",
            &root,
        ],
    );
    assert_eq!(probe(2), 2, "passes again after a runtime add");
    let (ok, _, err) = run_agent(
        &link.router,
        &[
            "allow",
            "del",
            "10.0.0.0/8",
            "--iface",
            "wan0",
            "--pin-dir",
            &root,
        ],
    );
    assert!(!ok && err.contains("is not in the allowlist"), "{err}");
    let prog_before = status_json(&link.router, &root)["instances"][0]["prog_id"].clone();
    let r = a.wait_for_total(9);
    let c = &r["counters"]["natpmp_map_udp_request"];
    assert_eq!(
        (c["packets"].as_u64(), c["dropped_packets"].as_u64()),
        (Some(9), Some(3)),
        "{r}"
    );
    assert_eq!(
        status_json(&link.router, &root)["instances"][0]["prog_id"],
        prog_before,
        "no reload"
    );
    a.stop(libc::SIGTERM);
    detach_wan0(&link.router, &root);
}

/// An instance pinned by an agent with another map layout (an earlier
/// version: here its config map is swapped for the old 16-byte one) is not
/// taken over: a new agent refuses to start on it and says to detach it
/// once; the old program keeps the WAN protected meanwhile; `status` shows
/// it (attached, its maps unreadable) instead of failing; `detach` removes
/// it.
#[test]
fn an_instance_pinned_with_another_layout_is_refused_and_keeps_protecting() {
    require_root();
    let (link, _bpffs, root) = pinned_wan("ops-old");
    let args = ["--iface", "wan0", "--drop", "--pin", "--pin-dir", &root];
    let listener = bind(&link.router, ROUTER_ADDR, NATPMP_PORT);
    let scanner = bind(&link.internet, INTERNET_ADDR, 0);
    let a = Agent::start(&link.router, &args);
    a.stop(libc::SIGTERM);
    let st = status_json(&link.router, &root);
    let dir = st["instances"][0]["pinned"]
        .as_str()
        .unwrap_or_else(|| panic!("a pinned instance: {st}"))
        .to_owned();
    let config = format!("{dir}/{}", nat_pmp_ebpf_common::MAP_CONFIG);
    std::fs::remove_file(&config).expect("removing the config pin");
    sh(&[
        "bpftool",
        "map",
        "create",
        &config,
        "type",
        "array",
        "key",
        "4",
        "value",
        "16",
        "entries",
        "1",
        "name",
        "NATPMP_CONFIG",
    ])
    .expect("creating an old-layout config map");

    let mut bounded = args.to_vec();
    bounded.extend(["--duration", "2"]);
    let (ok, _, err) = run_agent(&link.router, &bounded);
    assert!(!ok, "the agent must refuse the instance: {err}");
    assert!(
        err.contains("detach it once") && err.contains("nat-pmp-agent detach --iface wan0"),
        "{err}"
    );
    assert!(link.router.xdp_attached("wan0"), "the old instance stays");
    send(
        &scanner,
        ROUTER_ADDR,
        Class::NatpmpExternalAddressRequest,
        20,
    );
    assert_eq!(link.received(&listener), 0, "the WAN stays protected");

    let st = status_json(&link.router, &root);
    let inst = &st["instances"][0];
    assert_eq!(inst["attached"], true, "{st}");
    assert!(
        inst["unreadable"]
            .as_str()
            .is_some_and(|s| s.contains("detach it once")),
        "{st}"
    );
    let text = agent_ok(&link.router, &["status", "--pin-dir", &root]);
    assert!(text.contains("its maps are not this agent's"), "{text}");

    detach_wan0(&link.router, &root);
    assert!(!link.router.xdp_attached("wan0"));
}

/// Every pinned instance carries its layout version and the version of the
/// agent that pinned it (`NATPMP_LAYOUT`), and `status` shows both, in JSON
/// and in the table; `detach` removes that pin with the others.
#[test]
fn status_shows_each_instances_layout_and_agent_version() {
    require_root();
    let (link, _bpffs, root) = pinned_wan("ops-layout");
    agent_ok(
        &link.router,
        &[
            "--iface",
            "wan0",
            "--drop",
            "--pin",
            "--pin-dir",
            &root,
            "--duration",
            "0.3",
            "--output",
            "json",
            "--interval",
            "0.1",
        ],
    );
    let st = status_json(&link.router, &root);
    let inst = &st["instances"][0];
    assert_eq!(inst["iface"], "wan0", "{st}");
    assert_eq!(
        inst["layout_version"],
        nat_pmp_ebpf_common::LAYOUT_VERSION,
        "{st}"
    );
    assert_eq!(inst["agent_version"], env!("CARGO_PKG_VERSION"), "{st}");
    let text = agent_ok(&link.router, &["status", "--pin-dir", &root]);
    let expected = format!(
        "layout {} by agent {}",
        nat_pmp_ebpf_common::LAYOUT_VERSION,
        env!("CARGO_PKG_VERSION")
    );
    assert!(
        text.contains(&expected),
        "status lacks {expected:?}:\n{text}"
    );
    let pin = Path::new(inst["pinned"].as_str().expect("pin dir")).join("NATPMP_LAYOUT");
    assert!(pin.exists(), "{} is missing", pin.display());
    detach_wan0(&link.router, &root);
    assert!(!pin.exists(), "detach leaves {}", pin.display());
}
