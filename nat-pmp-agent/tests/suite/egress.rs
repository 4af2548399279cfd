//! The tc egress program (answers leaving the WAN from port 5351: exposure,
//! issue 13): the compiled program under `BPF_PROG_TEST_RUN` on a table of
//! frames, with exact per-class deltas and the destination of each answer;
//! then the agent in namespaces: `status` shows it attached, answers sent
//! from the router are counted, a restart over the pins keeps counting, and
//! `detach` removes both programs.

use std::{net::IpAddr, time::Duration};

use nat_pmp_agent::{bpf::Filter, probe::sample_payload, stats::answered::Answered};
use nat_pmp_ebpf_common::{
    frames::{ethernet, ipv4, udp, V4Frag, V4_DST, V6_DST},
    headers::{ETH_P_IP, IPPROTO_UDP},
    Class, NATPMP_PORT,
};

use crate::support::{
    agent::{agent_ok, detach_wan0, pinned_wan, status_json},
    frames::{tcp4, udp4, udp6},
    process::Agent,
    require_root,
    wan::{bind, INTERNET_ADDR, ROUTER_ADDR},
};

/// tcx's "next" (`TC_ACT_UNSPEC`): what the program returns for every frame.
const TCX_NEXT: i32 = -1;

fn answered(f: &Filter) -> Answered {
    f.answered()
        .expect("the filter has the egress maps")
        .expect("reading the answers")
}

/// Classes a payload alone makes, sent from 5351 (the two classes the
/// headers make cannot come from a payload).
fn payload_classes() -> impl Iterator<Item = Class> {
    Class::ALL.into_iter().filter(|c| {
        !c.is_aggregate() && !matches!(c, Class::FragmentNonfirst | Class::Ipv6ExtChainTooLong)
    })
}

#[test]
fn every_answer_is_counted_by_class_with_its_destination() {
    require_root();
    let f = Filter::load().expect("loading the eBPF object");
    let mut frames = 0u64;
    for class in payload_classes() {
        for (family, frame, dst) in [
            (
                "IPv4",
                udp4(NATPMP_PORT, 40000, &sample_payload(class)),
                IpAddr::from(V4_DST),
            ),
            (
                "IPv6",
                udp6(NATPMP_PORT, 40000, &sample_payload(class)),
                IpAddr::from(V6_DST),
            ),
        ] {
            let before = answered(&f);
            let verdict = f.run_egress(&frame).expect("test run");
            let after = answered(&f);
            frames += 1;
            assert_eq!(verdict, TCX_NEXT, "{class:?} over {family}: {frame:02x?}");
            let delta = after.classes.since(&before.classes);
            for c in Class::ALL.into_iter().filter(|c| !c.is_aggregate()) {
                let want = if c == class {
                    (1, frame.len() as u64)
                } else {
                    (0, 0)
                };
                let got = delta.get(c);
                assert_eq!(
                    (got.packets(), got.bytes()),
                    want,
                    "answer of class {class:?} over {family}: counter of {c:?}\nframe {frame:02x?}"
                );
                assert_eq!(got.dropped_packets, 0, "egress never drops");
            }
            let last = after.last.expect("a last answer");
            assert_eq!(last.addr, dst, "{class:?} over {family}");
            assert_eq!(last.class, class);
            assert!(
                after.top.iter().any(|d| d.addr == dst),
                "{dst} among the destinations: {:?}",
                after.top
            );
        }
    }
    let a = answered(&f);
    assert_eq!(a.packets(), frames);
    assert_eq!(a.destinations, 2, "two destinations: {:?}", a.top);
    assert_eq!(
        a.top.iter().map(|d| d.packets).sum::<u64>(),
        frames,
        "the destinations add up to every answer"
    );
    assert!(a.exposed());
}

#[test]
fn everything_else_passes_uncounted() {
    require_root();
    let f = Filter::load().expect("loading the eBPF object");
    let answer = [0u8, 128, 0, 0, 0, 0, 0, 60, 198, 18, 0, 1];
    let rows: Vec<(&str, Vec<u8>)> = vec![
        (
            "a NAT-PMP request to 5351 (the router asking a gateway)",
            udp4(
                40000,
                NATPMP_PORT,
                &sample_payload(Class::NatpmpExternalAddressRequest),
            ),
        ),
        (
            "a PCP request to 5351 over IPv6",
            udp6(40000, NATPMP_PORT, &sample_payload(Class::PcpMapRequest)),
        ),
        ("DNS", udp4(53, 40000, &answer)),
        ("other UDP", udp4(40000, 40001, &answer)),
        ("TCP from 5351", tcp4(NATPMP_PORT, &answer)),
        ("ARP (not IP)", ethernet(&[], 0x0806, &[0; 28])),
        (
            "a first fragment from 5351 (the fast path hands it on)",
            ethernet(
                &[],
                ETH_P_IP,
                &ipv4(
                    IPPROTO_UDP,
                    V4Frag::first(9),
                    &[],
                    &udp(NATPMP_PORT, 40000, &answer),
                ),
            ),
        ),
        ("a runt", vec![0u8; 14]),
    ];
    let before = answered(&f);
    for (what, frame) in rows {
        let verdict = f.run_egress(&frame).expect("test run");
        assert_eq!(verdict, TCX_NEXT, "{what}: {frame:02x?}");
        assert_eq!(answered(&f), before, "{what}: nothing may be counted");
    }
    assert!(!before.exposed());
}

/// The agent on a veth WAN with `--pin`: `status` shows the egress program
/// attached; the router's own answers from 5351 are counted in the JSON
/// report, with `exposed` and the exposure line; a restart over the pins
/// keeps counting; `detach` removes both programs from `wan0`.
#[test]
fn agent_attaches_counts_keeps_and_detaches_egress() {
    require_root();
    let (link, _bpffs, root) = pinned_wan("egress");
    let mut agent = Agent::start(
        &link.router,
        &["--iface", "wan0", "--pin", "--pin-dir", &root],
    );
    let st = status_json(&link.router, &root);
    let inst = &st["instances"][0];
    assert_eq!(inst["egress"]["attached"], true, "status: {st:#}");
    let link_id = inst["egress"]["link_id"].as_u64().expect("a link id");
    let text = agent_ok(&link.router, &["status", "--pin-dir", &root]);
    assert!(
        text.contains(&format!("egress: attached (tcx link id {link_id})")),
        "{text}"
    );
    // The kernel's word (a tcx query: Debian's bpftool 7.1 predates tcx).
    assert_eq!(
        link.router.tcx_egress("wan0"),
        ["nat_pmp_egress"],
        "the egress program on wan0's tcx egress"
    );
    assert!(link.router.xdp_attached("wan0"));

    // The router answers from 5351 (a stand-in for a WAN-exposed server).
    let server = bind(&link.router, ROUTER_ADDR, NATPMP_PORT);
    let peer = bind(&link.internet, INTERNET_ADDR, 40000);
    let payload = sample_payload(Class::NatpmpExternalAddressResponse);
    for _ in 0..3 {
        server
            .send_to(&payload, (INTERNET_ADDR, 40000))
            .expect("sending an answer");
    }
    let report = wait_for_answers(&mut agent, 3);
    assert_eq!(report["exposed"], true, "{report:#}");
    assert_eq!(
        report["answered"]["classes"]["natpmp_external_address_response"]["packets"],
        3
    );
    // Ethernet + IPv4 + UDP + the 12-byte response.
    assert_eq!(
        report["answered"]["classes"]["natpmp_external_address_response"]["bytes"],
        3 * (14 + 20 + 8 + 12)
    );
    assert_eq!(
        report["answered"]["top_destinations"][0]["address"],
        INTERNET_ADDR
    );
    let exposure = report["exposure"].as_str().expect("an exposure line");
    assert!(
        exposure.starts_with(
            "EXPOSED: this router answered 3 NAT-PMP/PCP requests on wan0 (last to 198.18.0.2,"
        ),
        "{exposure}"
    );
    assert_eq!(
        report["total"]["packets"], 0,
        "the XDP path on wan0 counts what arrives; answers leaving are counted apart: {report:#}"
    );
    let _ = agent.stop(libc::SIGTERM);
    let mut buf = [0u8; 64];
    peer.set_read_timeout(Some(Duration::from_secs(1)))
        .expect("timeout");
    assert!(
        peer.recv_from(&mut buf).is_ok(),
        "the answers arrived untouched"
    );

    // Restart over the pins: the same link, and counting continues.
    let mut agent = Agent::start(
        &link.router,
        &["--iface", "wan0", "--pin", "--pin-dir", &root],
    );
    let st = status_json(&link.router, &root);
    assert_eq!(
        st["instances"][0]["egress"]["link_id"].as_u64(),
        Some(link_id),
        "{st:#}"
    );
    server
        .send_to(&payload, (INTERNET_ADDR, 40000))
        .expect("sending an answer");
    let report = wait_for_answers(&mut agent, 4);
    assert_eq!(report["answered"]["packets"], 4, "{report:#}");
    let _ = agent.stop(libc::SIGTERM);

    let out = detach_wan0(&link.router, &root);
    assert!(out.contains("detached"), "{out}");
    assert!(
        link.router.tcx_egress("wan0").is_empty(),
        "detach removes the egress program"
    );
    assert!(
        !link.router.xdp_attached("wan0"),
        "detach removes the XDP program"
    );
    let st = agent_ok(&link.router, &["status", "--pin-dir", &root]);
    assert!(st.contains("no pinned instances"), "{st}");
}

/// The first report whose `answered.packets` reaches `n` (10 s at most).
fn wait_for_answers(agent: &mut Agent, n: u64) -> serde_json::Value {
    let end = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = agent
            .lines
            .recv_timeout(Duration::from_secs(5))
            .expect("no report from the agent in time");
        crate::support::schema::assert_valid(&r);
        if r["answered"]["packets"].as_u64() >= Some(n) || std::time::Instant::now() > end {
            return r;
        }
    }
}
