//! End to end: the agent binary attached to a veth "WAN" in namespaces the
//! test creates, real datagrams sent across, the JSON counters compared with
//! what was sent, exactly; drop mode keeps them from a listener behind the
//! veth, monitor mode does not; the agent exits cleanly on SIGTERM/SIGINT and
//! leaves nothing attached; start-up errors say what is wrong.

use std::{
    collections::BTreeMap,
    net::UdpSocket,
    process::Command,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use nat_pmp_ebpf_common::{
    frames::{ipv4_sent, udp},
    headers::IPPROTO_UDP,
    Class, NATPMP_PORT,
};
use serde_json::Value;

use crate::support::{
    agent::{last_report, run_agent, AGENT},
    netns::NetNs,
    process::Agent,
    require_root,
    sentinel::{queued, Sentinel},
    wan::{open_tun, WanLink, INTERNET_ADDR, ROUTER_ADDR},
};

/// Ethernet + IPv4 + UDP headers in front of every payload sent here.
const HEADERS: u64 = 14 + 20 + 8;

/// How many datagrams of each class the tests send: all different, so a
/// class counted as another cannot go unnoticed. Every class a UDP payload
/// alone decides; the aggregate `pcp` is checked as the sum of its parts.
fn plan() -> Vec<(Class, u64)> {
    Class::ALL
        .iter()
        .filter(|c| !c.decided_by_headers() && !c.is_aggregate())
        .zip(1u64..)
        .map(|(&c, i)| (c, i + 2))
        .collect()
}

fn payload(class: Class) -> Vec<u8> {
    nat_pmp_agent::probe::sample_payload(class)
}

/// Sends the plan to the router's port 5351 and `answers` datagrams from port
/// 5351 to the router's port 40000; returns what the router's listeners got.
fn exchange(link: &WanLink, answers: u64) -> (u64, u64) {
    let (listener, answer_listener) = link
        .router
        .enter(|| {
            let l =
                UdpSocket::bind((ROUTER_ADDR, NATPMP_PORT)).expect("binding 5351 on the router");
            let a = UdpSocket::bind((ROUTER_ADDR, 40000)).expect("binding 40000 on the router");
            (l, a)
        })
        .expect("entering the router's namespace");
    let (scanner, server) = link
        .internet
        .enter(|| {
            (
                UdpSocket::bind((INTERNET_ADDR, 0)).expect("binding the scanner"),
                UdpSocket::bind((INTERNET_ADDR, NATPMP_PORT))
                    .expect("binding 5351 on the internet side"),
            )
        })
        .expect("entering the internet's namespace");
    // Big buffers: every datagram the filter passes stays queued until the
    // sentinel below says that all have arrived, and a burst of over-long
    // PCP datagrams would overflow a default receive buffer.
    for sock in [&listener, &answer_listener] {
        big_receive_buffer(sock);
    }
    let sentinel = Sentinel::new(&link.router, ROUTER_ADDR, &link.internet);
    for (class, n) in plan() {
        for _ in 0..n {
            scanner
                .send_to(&payload(class), (ROUTER_ADDR, NATPMP_PORT))
                .expect("sending");
        }
    }
    let answer = payload(Class::NatpmpExternalAddressResponse);
    for _ in 0..answers {
        server
            .send_to(&answer, (ROUTER_ADDR, 40000))
            .expect("sending an answer");
    }
    // Not a quiet window: once the sentinel has arrived, everything sent
    // before it has been through the filter and what passed is queued.
    sentinel.sync();
    (queued(&listener), queued(&answer_listener))
}

/// `v` without its `pps` fields (rates change while totals stand still).
fn without_rates(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| k.as_str() != "pps")
                .map(|(k, v)| (k.clone(), without_rates(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Gives `sock` a 4 MiB receive buffer (`SO_RCVBUFFORCE`: root may exceed
/// `net.core.rmem_max`).
fn big_receive_buffer(sock: &UdpSocket) {
    use std::os::fd::AsRawFd as _;
    let size: libc::c_int = 4 << 20;
    // SAFETY: a valid socket fd and a pointer to a c_int of the given length.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            std::ptr::from_ref(&size).cast(),
            libc::socklen_t::try_from(std::mem::size_of::<libc::c_int>()).unwrap(),
        )
    };
    assert_eq!(rc, 0, "SO_RCVBUFFORCE: {}", std::io::Error::last_os_error());
}

fn run_mode(drop: bool, stop_signal: i32) {
    require_root();
    let link = WanLink::new(if drop { "e2e-drop" } else { "e2e-mon" });
    let mut args = vec!["--iface", "wan0"];
    if drop {
        args.push("--drop");
    }
    let agent = Agent::start(&link.router, &args);
    assert!(
        link.router.xdp_attached("wan0"),
        "the agent must have attached XDP to wan0"
    );
    let answers = 3;
    let (received, answers_received) = exchange(&link, answers);
    let sent: u64 = plan().iter().map(|p| p.1).sum();
    let live = agent.wait_for_total(sent + answers);
    let report = agent.stop(stop_signal).report;
    assert_eq!(
        without_rates(&live["counters"]),
        without_rates(&report["counters"]),
        "no packet may arrive after the scan"
    );

    // The listener behind the filter.
    if drop {
        assert_eq!(
            received, 0,
            "drop mode: the 5351 listener must receive nothing"
        );
    } else {
        assert_eq!(
            received, sent,
            "monitor mode: the 5351 listener must receive everything"
        );
    }
    assert_eq!(
        answers_received, answers,
        "answers from port 5351 are never dropped"
    );

    // The counters, exactly.
    let mut want: BTreeMap<Class, (u64, u64, u64, u64)> = BTreeMap::new();
    for (class, n) in plan() {
        let bytes = n * (HEADERS + payload(class).len() as u64);
        let (dp, db) = if drop { (n, bytes) } else { (0, 0) };
        want.insert(class, (n, bytes, dp, db));
    }
    let mut pcp = (0, 0, 0, 0);
    for (class, w) in &want {
        if class.parent() == Some(Class::Pcp) {
            pcp = (pcp.0 + w.0, pcp.1 + w.1, pcp.2 + w.2, pcp.3 + w.3);
        }
    }
    want.insert(Class::Pcp, pcp);
    for class in Class::ALL.iter().filter(|c| c.decided_by_headers()) {
        want.insert(*class, (0, 0, 0, 0));
    }
    let a = want
        .entry(Class::NatpmpExternalAddressResponse)
        .or_default();
    a.0 += answers;
    a.1 += answers * (HEADERS + payload(Class::NatpmpExternalAddressResponse).len() as u64);
    for (class, (packets, bytes, dropped_packets, dropped_bytes)) in want {
        let c = &report["counters"][class.name()];
        let got = (
            c["packets"].as_u64(),
            c["bytes"].as_u64(),
            c["dropped_packets"].as_u64(),
            c["dropped_bytes"].as_u64(),
        );
        assert_eq!(
            got,
            (
                Some(packets),
                Some(bytes),
                Some(dropped_packets),
                Some(dropped_bytes)
            ),
            "{}: (packets, bytes, dropped_packets, dropped_bytes)\nreport: {report}",
            class.name()
        );
    }
    assert_eq!(report["oversized"].as_u64(), Some(0));
    assert_eq!(report["iface"], "wan0");
    assert_eq!(report["mode"], if drop { "drop" } else { "monitor" });
    assert_eq!(report["xdp_mode"], "native", "veth supports native XDP");
    assert!(report["time"].is_string() && report["uptime_secs"].is_number());
    assert!(
        !link.router.xdp_attached("wan0"),
        "the agent must detach on exit"
    );
}

#[test]
fn drop_mode_counts_exactly_and_blocks_5351() {
    run_mode(true, libc::SIGTERM);
}

#[test]
fn monitor_mode_counts_exactly_and_passes_everything() {
    run_mode(false, libc::SIGINT);
}

fn run_cmd(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd.output().expect("running the agent");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn refuses_to_replace_another_xdp_program() {
    require_root();
    let link = WanLink::new("e2e-busy");
    let first = Agent::start(&link.router, &["--iface", "wan0", "--drop"]);
    let (ok, _, err) = run_agent(&link.router, &["--iface", "wan0", "--duration", "1"]);
    assert!(!ok, "a second agent on the same interface must fail");
    assert!(
        err.contains("another XDP program is already attached to wan0") && err.contains("refusing"),
        "unexpected error: {err}"
    );
    // The first one is untouched and still filtering.
    assert!(link.router.xdp_attached("wan0"));
    let report = first.stop(libc::SIGTERM).report;
    assert_eq!(report["mode"], "drop");
    assert!(!link.router.xdp_attached("wan0"));
}

#[test]
fn missing_interface_is_a_clear_error() {
    require_root();
    let ns = NetNs::new("e2e-noif").expect("creating a namespace");
    let (ok, _, err) = run_agent(&ns, &["--iface", "wan9", "--duration", "1"]);
    assert!(!ok);
    assert!(
        err.contains("interface \"wan9\" does not exist") && err.contains("ip link show"),
        "unexpected error: {err}"
    );
}

#[test]
fn unprivileged_start_says_it_needs_root_and_attaches_nothing() {
    require_root();
    let link = WanLink::new("e2e-user");
    let mut cmd = link.router.command("setpriv");
    cmd.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all",
    ])
    .args([AGENT, "--iface", "wan0", "--duration", "1"]);
    let (ok, _, err) = run_cmd(&mut cmd);
    assert!(!ok, "an unprivileged agent must fail");
    assert!(
        err.contains("needs root") && err.contains("sudo"),
        "unexpected error: {err}"
    );
    assert!(!link.router.xdp_attached("wan0"));
}

#[test]
fn auto_mode_falls_back_to_skb_where_native_is_missing() {
    require_root();
    // The loopback driver has no native XDP.
    let ns = NetNs::new("e2e-lo").expect("creating a namespace");
    let (ok, _, err) = run_agent(
        &ns,
        &["--iface", "lo", "--xdp-mode", "native", "--duration", "1"],
    );
    assert!(!ok, "native mode on lo must fail");
    assert!(
        err.contains("no native XDP support") && err.contains("--xdp-mode skb"),
        "{err}"
    );
    assert!(!ns.xdp_attached("lo"));

    let (ok, out, err) = run_agent(
        &ns,
        &[
            "--iface",
            "lo",
            "--output",
            "json",
            "--duration",
            "0.5",
            "--interval",
            "0.2",
        ],
    );
    assert!(ok, "auto mode on lo must work: {err}");
    assert!(
        err.contains("note:") && err.contains("skb"),
        "the fallback must be noted: {err}"
    );
    let last = last_report(&out);
    assert_eq!(last["xdp_mode"], "skb");
    assert_eq!(last["final"], true);
    assert!(!ns.xdp_attached("lo"), "nothing may stay attached");
}

/// A stand-in for a WAN-exposed gateway on the router's port 5351: answers
/// every datagram with an opcode-0 response, as miniupnpd listening on the
/// WAN would. Without it nothing listens there and "no answer came back"
/// would hold with or without the filter.
struct Gateway {
    sock: UdpSocket,
}

impl Gateway {
    fn new(link: &WanLink) -> Gateway {
        let sock = crate::support::wan::bind(&link.router, ROUTER_ADDR, NATPMP_PORT);
        sock.set_nonblocking(true).expect("non-blocking");
        Gateway { sock }
    }

    /// Answers what is queued now; returns how many it answered.
    fn answer(&self) -> u64 {
        let reply = payload(Class::NatpmpExternalAddressResponse);
        let mut buf = [0u8; 2048];
        let mut n = 0;
        while let Ok((_, from)) = self.sock.recv_from(&mut buf) {
            self.sock.send_to(&reply, from).expect("answering");
            n += 1;
        }
        n
    }

    /// Answers while `f` runs (the probe waits for answers meanwhile).
    fn serve<T>(&self, f: impl FnOnce() -> T) -> (T, u64) {
        let done = AtomicBool::new(false);
        std::thread::scope(|s| {
            let server = s.spawn(|| {
                let mut n = 0;
                while !done.load(Ordering::SeqCst) {
                    n += self.answer();
                    std::thread::sleep(Duration::from_millis(1));
                }
                n
            });
            let out = f();
            done.store(true, Ordering::SeqCst);
            (out, server.join().expect("the gateway thread"))
        })
    }
}

fn probe_json(link: &WanLink, count: &str) -> Value {
    let (ok, out, err) = run_cmd(link.internet.command(AGENT).args([
        "probe",
        ROUTER_ADDR,
        "--count",
        count,
        "--rate",
        "5000",
        "--wait",
        "0.2",
        "--json",
    ]));
    assert!(ok, "probe failed: {err}");
    serde_json::from_str(out.trim()).expect("probe JSON")
}

#[test]
fn probe_reports_what_it_sent_and_the_agent_counts_it() {
    require_root();
    let link = WanLink::new("e2e-probe");
    let gateway = Gateway::new(&link);
    // The control: without the filter the gateway answers, so the probe's
    // `exposed == false` below can fail (it did, before the gateway, hold
    // whatever the filter did: nothing listened on 5351).
    let (control, answered) = gateway.serve(|| probe_json(&link, "5"));
    assert_eq!(answered, 5, "the stand-in gateway must answer every probe");
    assert_eq!(control["exposed"], true, "no filter yet: {control}");

    let agent = Agent::start(&link.router, &["--iface", "wan0", "--drop"]);
    let (probe, answered) = gateway.serve(|| probe_json(&link, "1000"));
    assert_eq!(
        probe["exposed"], false,
        "drop mode: no answer may come back"
    );
    let report = agent.wait_for_total(1000);
    let sentinel = Sentinel::new(&link.router, ROUTER_ADDR, &link.internet);
    sentinel.sync();
    assert_eq!(
        answered + gateway.answer(),
        0,
        "drop mode: the gateway must receive none of the probes"
    );
    let report_final = agent.stop(libc::SIGTERM).report;
    assert_eq!(
        without_rates(&report["total"]),
        without_rates(&report_final["total"])
    );
    // Every class, not only the ones sent: a probe counted as another
    // class (or twice) shows up as a class that should be zero. `pcp` is
    // the sum of its parts.
    let sent = probe["sent"].as_object().expect("sent map");
    let want = |class: Class| {
        let n = |c: Class| sent.get(c.name()).and_then(Value::as_u64).unwrap_or(0);
        if class.is_aggregate() {
            Class::ALL
                .iter()
                .filter(|c| c.parent() == Some(class))
                .map(|&c| n(c))
                .sum()
        } else {
            n(class)
        }
    };
    for class in Class::ALL {
        let c = &report_final["counters"][class.name()];
        assert_eq!(
            (c["packets"].as_u64(), c["dropped_packets"].as_u64()),
            (Some(want(class)), Some(want(class))),
            "{}: the agent must have dropped exactly what the probe sent\n{report_final}",
            class.name()
        );
    }
    // The honeypot mix of 1000: 828 / 140 / 25 / 4 / 3.
    assert_eq!(probe["sent"]["natpmp_external_address_request"], 828);
    assert_eq!(probe["sent"]["natpmp_map_udp_request"], 140);
}

/// A tun device has no link-layer header: `--link-type auto` must find that
/// out from the interface (`ARPHRD_NONE`) and tell the program, or the raw IP
/// packets written into the tun would not be recognised at all.
#[test]
fn link_type_auto_counts_raw_ip_on_a_tun_device() {
    require_root();
    let ns = NetNs::new("e2e-tun").expect("creating a namespace");
    for args in [
        ["tuntap", "add", "dev", "tun0", "mode", "tun"].as_slice(),
        &["addr", "add", "198.18.9.1/24", "dev", "tun0"],
        &["link", "set", "tun0", "up"],
    ] {
        ns.ip(args).expect("setting up tun0");
    }
    // The packets below reach tun0 as received traffic once written to the
    // device's file descriptor, opened inside the namespace.
    let tun = ns.enter(open_tun).expect("entering the namespace");
    let agent = Agent::start(&ns, &["--iface", "tun0", "--drop"]);
    let classes = [
        (Class::NatpmpExternalAddressRequest, 5u64),
        (Class::NatpmpMapTcpRequest, 3),
        (Class::PcpMapRequest, 2),
    ];
    for (class, n) in classes {
        let packet = ipv4_sent(
            [198, 18, 9, 2],
            [198, 18, 9, 1],
            IPPROTO_UDP,
            &udp(40000, NATPMP_PORT, &payload(class)),
        );
        for _ in 0..n {
            std::io::Write::write_all(&mut &tun, &packet).expect("writing into the tun");
        }
    }
    let report = agent.wait_for_total(10);
    let report_final = agent.stop(libc::SIGTERM).report;
    assert_eq!(
        without_rates(&report["total"]),
        without_rates(&report_final["total"])
    );
    for (class, n) in classes {
        let c = &report_final["counters"][class.name()];
        let bytes = n * (20 + 8 + payload(class).len() as u64);
        assert_eq!(
            (c["dropped_packets"].as_u64(), c["dropped_bytes"].as_u64()),
            (Some(n), Some(bytes)),
            "{}: raw IP bytes, no link-layer header\n{report_final}",
            class.name()
        );
    }
    assert!(!ns.xdp_attached("tun0"), "nothing may stay attached");
}

/// Sends `sends` UDP GSO super-packets of `segments` copies of `payload`
/// each (`UDP_SEGMENT`, Linux 4.18): the kernel segments them only where it
/// must, so a veth peer may see each as one super-packet.
fn send_gso(from: &UdpSocket, to: (&str, u16), payload: &[u8], segments: usize, sends: usize) {
    use std::os::fd::AsRawFd as _;
    const UDP_SEGMENT: libc::c_int = 103;
    let size = libc::c_int::try_from(payload.len()).expect("small payload");
    // SAFETY: a valid socket fd and a c_int option value of the given size.
    let rc = unsafe {
        libc::setsockopt(
            from.as_raw_fd(),
            libc::SOL_UDP,
            UDP_SEGMENT,
            std::ptr::from_ref(&size).cast(),
            libc::socklen_t::try_from(std::mem::size_of::<libc::c_int>()).expect("fits"),
        )
    };
    assert_eq!(rc, 0, "UDP_SEGMENT: {}", std::io::Error::last_os_error());
    let buf = payload.repeat(segments);
    for _ in 0..sends {
        from.send_to(&buf, to).expect("sending a GSO super-packet");
    }
}

/// What skb (generic) mode counts for GSO: generic XDP runs once per
/// super-packet, so it counts (and drops) a train of segments as one
/// datagram, while native mode sees every segment. Measured here, and the
/// JSON says which it is (`counts`). Every segment is dropped either way.
#[test]
fn gso_super_packets_count_once_in_skb_mode_and_per_segment_in_native_mode() {
    require_root();
    let payload = nat_pmp_agent::probe::sample_payload(Class::NatpmpMapUdpRequest);
    for (xdp_mode, expected, counts) in [
        ("skb", 10, "gso_super_packets"),
        ("native", 100, "datagrams"),
    ] {
        let link = WanLink::new(&format!("e2e-gso-{xdp_mode}"));
        let listener = link
            .router
            .enter(|| UdpSocket::bind((ROUTER_ADDR, NATPMP_PORT)).expect("binding the listener"))
            .expect("entering the router's namespace");
        let agent = Agent::start(
            &link.router,
            &["--iface", "wan0", "--drop", "--xdp-mode", xdp_mode],
        );
        let scanner = link
            .internet
            .enter(|| UdpSocket::bind((INTERNET_ADDR, 0)).expect("binding the scanner"))
            .expect("entering the internet's namespace");
        send_gso(&scanner, (ROUTER_ADDR, NATPMP_PORT), &payload, 10, 10);
        let r = agent.wait_for_total(expected);
        assert_eq!(
            r["counters"]["natpmp_map_udp_request"]["packets"], expected,
            "{xdp_mode} mode: {r}"
        );
        assert_eq!(r["total"]["dropped_packets"], expected, "{r}");
        assert_eq!(r["counts"], counts, "{r}");
        assert_eq!(r["xdp_mode"], xdp_mode, "{r}");
        assert_eq!(
            link.received(&listener),
            0,
            "{xdp_mode} mode: every segment must be dropped"
        );
        let stopped = agent.stop(libc::SIGTERM);
        assert_eq!(
            stopped.report["counters"]["natpmp_map_udp_request"]["packets"],
            expected
        );
    }
}

/// A jumbo MTU above what veth's native XDP takes: `auto` falls back to skb
/// mode and names the MTU; `native` fails and says why.
#[test]
fn jumbo_mtu_falls_back_to_skb_in_auto_mode_and_names_the_mtu() {
    require_root();
    let link = WanLink::new("e2e-jumbo");
    link.internet
        .ip(&["link", "set", "inet0", "mtu", "9000"])
        .expect("setting inet0's MTU");
    link.router
        .ip(&["link", "set", "wan0", "mtu", "9000"])
        .expect("setting wan0's MTU");
    let (ok, _, err) = run_agent(
        &link.router,
        &[
            "--iface",
            "wan0",
            "--xdp-mode",
            "native",
            "--duration",
            "0.5",
        ],
    );
    assert!(!ok, "native XDP at MTU 9000 on veth must fail");
    assert!(err.contains("MTU of 9000"), "{err}");
    assert!(!link.router.xdp_attached("wan0"));
    let (ok, out, err) = run_agent(
        &link.router,
        &[
            "--iface",
            "wan0",
            "--drop",
            "--output",
            "json",
            "--duration",
            "0.5",
            "--interval",
            "0.2",
        ],
    );
    assert!(ok, "auto mode must fall back to skb: {err}");
    assert!(
        err.contains("MTU of 9000") && err.contains("skb (generic) mode instead"),
        "the fallback must name the MTU: {err}"
    );
    let last = last_report(&out);
    assert_eq!(last["xdp_mode"], "skb", "{last}");
    assert!(!link.router.xdp_attached("wan0"));
}
