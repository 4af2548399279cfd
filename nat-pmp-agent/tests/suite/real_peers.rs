//! Real peers: the product against software nobody on this team wrote.
//!
//! The lab, built in namespaces by each test ([`crate::support::peers`]):
//! the router runs Debian's miniupnpd with NAT-PMP/PCP, listening on the LAN
//! *and on the WAN veth*: the misconfiguration of the devices in
//! JVNVU#99291862, which answered NAT-PMP from the Internet.
//!
//! The story, one test each:
//! 1. exposure: nmap's `nat-pmp-info` leaks the external address to the
//!    internet host, `nat-pmp-mapport` and libnatpmp's `natpmpc -a` create
//!    mappings (seen in miniupnpd's nftables chain);
//! 2. monitor mode: with the agent on `wan0`, its per-class counters equal
//!    what Wireshark's own NAT-PMP and Port Control dissectors (tshark on the
//!    same interface) make of the same frames;
//!    The answers miniupnpd sends back out of `wan0` are counted by the
//!    egress program exactly as tshark on `wan0` sees them leave, per class
//!    and in bytes (exposure, issue 13), and the LAN host's answers (out of
//!    `lan0`) are never counted as WAN answers;
//! 3. drop mode: the same scans get no answer and create no mapping, the
//!    agent drops exactly what tshark saw leave the internet host, counts 0
//!    answers, and the LAN host's `natpmpc` is still served.
//!
//! A missing tool fails the test with the Debian package to install; every
//! external command runs under `timeout`; namespaces, processes (by PID) and
//! the temporary directory are removed even when an assertion fails.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::{Ipv4Addr, UdpSocket},
    path::PathBuf,
    time::{Duration, Instant},
};

use nat_pmp_ebpf_common::Class;
use serde_json::Value;

use crate::support::{
    netns::NetNs,
    peers::{
        mapping, read, spawn_in, start_agent, text, wan_scans_get_no_answer, Lab, LAN_HOST_ADDR,
        ROUTER_LAN_ADDR,
    },
    process::Proc,
    wan::{INTERNET_ADDR, ROUTER_ADDR},
};

/// The discard port (RFC 863): the sentinel datagrams that mark a point in
/// the traffic go there, and are neither NAT-PMP nor PCP.
const SENTINEL_PORT: u16 = 9;

/// The classes Wireshark's verdicts tell apart: every class but the pcp_*
/// ones (refereed through their aggregate `pcp`) and those decided by the
/// headers around the payload (none of the traffic here has them).
fn refereed() -> impl Iterator<Item = Class> {
    Class::ALL
        .into_iter()
        .filter(|c| c.parent().is_none() && !c.decided_by_headers())
}

/// Per-class answers out of an agent report's `answered` section (`field`:
/// `packets` or `bytes`), per refereed class (`pcp` sums the `pcp_*` ones);
/// a class nothing answered is 0.
fn answered_counts(report: &Value, field: &str) -> BTreeMap<Class, u64> {
    let classes = report["answered"]["classes"]
        .as_object()
        .unwrap_or_else(|| panic!("report has no answered.classes (no egress program?): {report}"));
    refereed()
        .map(|c| {
            let n = classes
                .iter()
                .filter(|(name, _)| {
                    *name == c.name() || (c == Class::Pcp && name.starts_with("pcp_"))
                })
                .map(|(_, v)| v[field].as_u64().expect("a count"))
                .sum();
            (c, n)
        })
        .collect()
}

/// Per-class counts out of an agent report: `field` of every class.
fn agent_counts(report: &Value, field: &str) -> BTreeMap<Class, u64> {
    refereed()
        .map(|c| {
            let n = report["counters"][c.name()][field]
                .as_u64()
                .unwrap_or_else(|| panic!("report has no counters.{}.{field}", c.name()));
            (c, n)
        })
        .collect()
}

/// What Wireshark made of one datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dissector {
    /// The NAT-PMP dissector (`nat-pmp.*`): version byte 0.
    NatPmp,
    /// The Port Control Protocol dissector (`portcontrol.*`): version 1 or 2.
    PortControl,
    /// Neither: Wireshark's port-5351 dispatcher declined the version byte
    /// and left the payload as `data`.
    Data,
    /// No payload at all.
    Empty,
}

/// An opcode pattern in [`REFEREE`].
#[derive(Clone, Copy, Debug)]
enum Op {
    Is(u8),
    Any,
}

/// Wireshark's verdict on one frame, from tshark's fields.
#[derive(Clone, Copy, Debug)]
struct Verdict {
    dissector: Dissector,
    version: Option<u8>,
    opcode: Option<u8>,
    /// `_ws.malformed`: the dissector ran out of bytes.
    malformed: bool,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let num = |b: Option<u8>| b.map_or_else(|| "-".to_owned(), |b| b.to_string());
        match self.dissector {
            Dissector::NatPmp => write!(
                f,
                "NAT-PMP v{} opcode {}",
                num(self.version),
                num(self.opcode)
            )?,
            Dissector::PortControl => write!(
                f,
                "Port Control v{} opcode {}",
                num(self.version),
                num(self.opcode)
            )?,
            Dissector::Data => f.write_str("data (no dissector)")?,
            Dissector::Empty => f.write_str("(empty)")?,
        }
        if self.malformed {
            f.write_str(" [Malformed]")?;
        }
        Ok(())
    }
}

/// One row of [`REFEREE`]: a pattern on Wireshark's verdict (`None`: any)
/// and the product's class for it.
type Row = (Dissector, Option<u8>, Op, Option<bool>, Class);

/// How the verdicts of Wireshark's dissectors correspond to the product's
/// classes; the first matching row wins. It covers the shapes these tests
/// send (the real scanners, and one datagram of each class); a frame that no
/// row matches fails the test rather than being guessed at.
#[rustfmt::skip]
const REFEREE: &[Row] = &[
    // dissector             version  opcode       malformed    class
    // NAT-PMP cut before its opcode's fields end (RFC 6886 §3.2, §3.3).
    (Dissector::NatPmp,      Some(0), Op::Any,     Some(true),  Class::MalformedTruncated),
    (Dissector::NatPmp,      Some(0), Op::Is(0),   Some(false), Class::NatpmpExternalAddressRequest),
    (Dissector::NatPmp,      Some(0), Op::Is(1),   Some(false), Class::NatpmpMapUdpRequest),
    (Dissector::NatPmp,      Some(0), Op::Is(2),   Some(false), Class::NatpmpMapTcpRequest),
    (Dissector::NatPmp,      Some(0), Op::Is(128), Some(false), Class::NatpmpExternalAddressResponse),
    (Dissector::NatPmp,      Some(0), Op::Is(129), Some(false), Class::NatpmpMapUdpResponse),
    (Dissector::NatPmp,      Some(0), Op::Is(130), Some(false), Class::NatpmpMapTcpResponse),
    // Any other opcode: Wireshark adds its "Unknown opcode" expert note.
    (Dissector::NatPmp,      Some(0), Op::Any,     Some(false), Class::NatpmpUnsupportedOpcode),
    // PCP (RFC 6887 §7), well formed or not: Wireshark tells PCP apart from
    // NAT-PMP but does not judge it as finely as the pcp_* classes, so PCP
    // is refereed as the `pcp` aggregate (the sum of every pcp_* class).
    (Dissector::PortControl, Some(2), Op::Any,     None,        Class::Pcp),
    // Pre-standard PCP version 1 (RFC 6887 §9): Wireshark still dissects it.
    (Dissector::PortControl, Some(1), Op::Any,     None,        Class::MalformedVersion),
    // A version byte that Wireshark's port-5351 dispatcher does not know.
    (Dissector::Data,        None,    Op::Any,     None,        Class::MalformedVersion),
    (Dissector::Empty,       None,    Op::Any,     None,        Class::MalformedTruncated),
];

fn referee(v: Verdict) -> Option<Class> {
    REFEREE
        .iter()
        .find(|(d, version, op, malformed, _)| {
            *d == v.dissector
                && (version.is_none() || *version == v.version)
                && match op {
                    Op::Is(o) => v.opcode == Some(*o),
                    Op::Any => true,
                }
                && malformed.is_none_or(|m| m == v.malformed)
        })
        .map(|row| row.4)
}

/// The tshark fields asked for, in order.
const TSHARK_FIELDS: [&str; 9] = [
    "udp.dstport",
    "udp.length",
    "nat-pmp.version",
    "nat-pmp.opcode",
    "portcontrol.version",
    "portcontrol.opcode",
    "_ws.malformed",
    "data.len",
    "frame.len",
];

/// tshark, live, printing one line of dissector fields per frame the
/// internet host sent (its MAC as source): on `wan0` that is exactly what
/// arrives at the router, XDP's (ingress-only) view; on `inet0`, what left
/// the internet host. (libpcap's `inbound` qualifier was seen to lose frames
/// on these veths; the source MAC says the same thing reliably.)
struct Capture {
    _proc: Proc,
    out: PathBuf,
}

impl Capture {
    fn start(lab: &Lab, ns: &NetNs, iface: &str, name: &str) -> Capture {
        let filter = format!(
            "ether src {} and udp and (dst port 5351 or src port 5351 or dst port {SENTINEL_PORT})",
            lab.internet_mac()
        );
        Capture::with_filter(lab, ns, iface, name, &filter)
    }

    /// The answers the router sends out of its `wan0` (its MAC as source,
    /// from port 5351: what the egress program sees), and the sentinels
    /// arriving there.
    fn answers(lab: &Lab, name: &str) -> Capture {
        let filter = format!(
            "udp and ((ether src {} and src port 5351) or (ether src {} and dst port \
             {SENTINEL_PORT}))",
            lab.mac(&lab.router, "wan0"),
            lab.internet_mac()
        );
        Capture::with_filter(lab, &lab.router, "wan0", name, &filter)
    }

    fn with_filter(lab: &Lab, ns: &NetNs, iface: &str, name: &str, filter: &str) -> Capture {
        let out = lab.path(name);
        let mut args = vec![
            "-l",
            "-n",
            "-i",
            iface,
            "-f",
            filter,
            "-T",
            "fields",
            "-E",
            "occurrence=f",
        ];
        for f in TSHARK_FIELDS {
            args.extend(["-e", f]);
        }
        let proc = spawn_in(ns, &lab.tools, &lab.tools.tshark, &args, &out);
        Capture { _proc: proc, out }
    }

    /// The field lines printed so far (tshark's notes on stderr share the
    /// file; field lines are the ones that start with a port number).
    fn lines(&self) -> Vec<Vec<String>> {
        read(&self.out)
            .lines()
            .filter(|l| l.starts_with(|c: char| c.is_ascii_digit()))
            .map(|l| l.split('\t').map(str::to_owned).collect())
            .filter(|f: &Vec<String>| f.len() == TSHARK_FIELDS.len())
            .collect()
    }

    /// Sentinels of UDP length `udp_length` printed so far.
    fn sentinels(&self, udp_length: &str) -> usize {
        self.lines()
            .iter()
            .filter(|f| f[0] == SENTINEL_PORT.to_string() && f[1] == udp_length)
            .count()
    }

    /// Wireshark's verdict on every NAT-PMP/PCP frame sent to 5351,
    /// tallied per class.
    fn tally(&self) -> Tally {
        self.tally_where(|f| f[0] == "5351")
    }

    /// The same for every frame of an [`Capture::answers`] capture but the
    /// sentinels: the answers.
    fn tally_answers(&self) -> Tally {
        self.tally_where(|f| f[0] != SENTINEL_PORT.to_string())
    }

    fn tally_where(&self, keep: impl Fn(&[String]) -> bool) -> Tally {
        let zero = || refereed().map(|c| (c, 0)).collect::<BTreeMap<_, _>>();
        let mut t = Tally {
            packets: zero(),
            bytes: zero(),
            listing: String::new(),
        };
        for f in self.lines().iter().filter(|f| keep(f)) {
            let byte = |s: &str| s.parse::<u8>().ok();
            let dissector = if !f[2].is_empty() {
                Dissector::NatPmp
            } else if !f[4].is_empty() {
                Dissector::PortControl
            } else if !f[7].is_empty() {
                Dissector::Data
            } else {
                Dissector::Empty
            };
            let v = Verdict {
                dissector,
                version: byte(&f[2]).or_else(|| byte(&f[4])),
                opcode: byte(&f[3]).or_else(|| byte(&f[5])),
                malformed: !f[6].is_empty(),
            };
            let class = referee(v)
                .unwrap_or_else(|| panic!("no REFEREE row for tshark's verdict {v:?} on {f:?}"));
            let frame_len: u64 = f[8].parse().expect("frame.len is a number");
            *t.packets.get_mut(&class).expect("every class") += 1;
            *t.bytes.get_mut(&class).expect("every class") += frame_len;
            let payload = f[1].parse::<u16>().map_or(0, |l| l.saturating_sub(8));
            let _ = writeln!(
                t.listing,
                "{payload:>3}-byte payload  {:<38} -> {}",
                v.to_string(),
                class.name()
            );
        }
        t
    }
}

/// What tshark saw, per class: frames, and frame bytes (`frame.len`, from
/// the Ethernet header on, as XDP counts them).
struct Tally {
    packets: BTreeMap<Class, u64>,
    bytes: BTreeMap<Class, u64>,
    /// One line per frame: the payload, Wireshark's verdict, the class.
    listing: String,
}

/// Sentinel datagrams from the internet host to the router's discard port:
/// once one has reached a socket in the router, XDP on `wan0` has seen every
/// frame sent before it (one veth queue, in order); once tshark printed it,
/// tshark has printed every frame before it. It also tells when tshark is
/// really capturing, which its start-up message does not.
struct Sentinel {
    tx: UdpSocket,
    rx: UdpSocket,
    /// Syncs so far: sync `n` sends payloads of `n` bytes, so its datagrams
    /// (tshark's `udp.length` = 8 + n) cannot be confused with the backlog
    /// of an earlier sync that tshark may still be printing.
    syncs: std::cell::Cell<usize>,
}

impl Sentinel {
    fn new(lab: &Lab) -> Sentinel {
        let router: Ipv4Addr = ROUTER_ADDR.parse().expect("an IPv4 address");
        let rx = lab
            .router
            .enter(|| UdpSocket::bind((router, SENTINEL_PORT)))
            .expect("entering the router's namespace")
            .expect("binding the sentinel receiver");
        rx.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("setting a read timeout");
        let tx = lab
            .internet
            .enter(|| UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)))
            .expect("entering the internet's namespace")
            .expect("binding the sentinel sender");
        tx.connect((router, SENTINEL_PORT))
            .expect("connecting the sentinel sender");
        Sentinel {
            tx,
            rx,
            syncs: std::cell::Cell::new(0),
        }
    }

    /// Sends sentinels until one has reached the router and `capture` has
    /// printed a new one.
    fn sync(&self, capture: &Capture) {
        let n = self.syncs.get() + 1;
        self.syncs.set(n);
        let payload = vec![b's'; n];
        let udp_length = (8 + n).to_string();
        let mut arrived = false;
        let end = Instant::now() + Duration::from_secs(20);
        let mut buf = [0u8; 64];
        // Paced: a flood of sentinels would bury what it is meant to mark.
        while Instant::now() < end {
            self.tx.send(&payload).expect("sending a sentinel");
            if self.rx.recv(&mut buf).is_ok() {
                arrived = true;
            }
            if arrived && capture.sentinels(&udp_length) > 0 {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "sentinel not seen within 20 s (reached the router: {arrived}); tshark said:\n{}",
            read(&capture.out)
        );
    }
}

/// Side by side, per class: the answers the agent counted and tshark's.
fn answer_comparison(report: &Value, tshark: &Tally) -> String {
    let packets = answered_counts(report, "packets");
    let bytes = answered_counts(report, "bytes");
    let mut s = format!(
        "{:<34} {:>16} {:>7} {:>14} {:>7}\n",
        "class", "agent answered", "tshark", "agent bytes", "tshark"
    );
    for class in refereed() {
        let _ = writeln!(
            s,
            "{:<34} {:>16} {:>7} {:>14} {:>7}",
            class.name(),
            packets[&class],
            tshark.packets[&class],
            bytes[&class],
            tshark.bytes[&class]
        );
    }
    s
}

/// Side by side, per class: the agent's frames and bytes (`field` and
/// `field_bytes` of its report) and tshark's.
fn comparison(report: &Value, field: &str, bytes_field: &str, tshark: &Tally) -> String {
    let agent = agent_counts(report, field);
    let agent_bytes = agent_counts(report, bytes_field);
    let mut s = format!(
        "{:<34} {:>21} {:>7} {:>19} {:>7}\n",
        "class",
        format!("agent {field}"),
        "tshark",
        format!("agent {bytes_field}"),
        "tshark"
    );
    for class in refereed() {
        let _ = writeln!(
            s,
            "{:<34} {:>21} {:>7} {:>19} {:>7}",
            class.name(),
            agent[&class],
            tshark.packets[&class],
            agent_bytes[&class],
            tshark.bytes[&class]
        );
    }
    s
}

#[test]
fn wan_exposed_gateway_serves_real_scanners() {
    let lab = Lab::new("peers-x");

    let nmap = lab.nmap(8080);
    println!("$ nmap -sU -p 5351 --script nat-pmp-info,nat-pmp-mapport {ROUTER_ADDR}\n{nmap}");
    assert!(
        nmap.contains(&format!("WAN IP: {ROUTER_ADDR}")),
        "nat-pmp-info must leak the external address:\n{nmap}"
    );
    assert!(
        nmap.contains(&format!(
            "Successfully mapped tcp {ROUTER_ADDR}:8080 -> {INTERNET_ADDR}:8080"
        )),
        "nat-pmp-mapport must create a mapping:\n{nmap}"
    );

    let natpmpc = lab.natpmpc(&lab.internet, ROUTER_ADDR, 9000, 10);
    let said = text(&natpmpc);
    println!("$ natpmpc -g {ROUTER_ADDR} -a 9000 9000 udp 600\n{said}");
    assert!(
        natpmpc.status.success(),
        "natpmpc from the Internet:\n{said}"
    );
    assert!(
        said.contains(&format!("Public IP address : {ROUTER_ADDR}")),
        "{said}"
    );
    assert!(
        said.contains("Mapped public port 9000 protocol UDP"),
        "{said}"
    );

    let rules = lab.nat_rules();
    println!("$ nft list chain inet miniupnpd prerouting_miniupnpd\n{rules}");
    for (port, proto) in [(8080, "tcp"), (9000, "udp")] {
        assert!(
            rules.contains(&mapping(port, proto, INTERNET_ADDR)),
            "miniupnpd must have mapped {proto} {port} for the internet host:\n{rules}"
        );
    }
}

#[test]
fn monitor_counts_equal_wiresharks_dissectors() {
    let lab = Lab::new("peers-m");
    let sentinel = Sentinel::new(&lab);
    let agent = start_agent(&lab, false);
    let capture = Capture::start(&lab, &lab.router, "wan0", "tshark-wan0.txt");
    let answers = Capture::answers(&lab, "tshark-wan0-answers.txt");
    sentinel.sync(&capture);
    sentinel.sync(&answers);

    let nmap = lab.nmap(8081);
    assert!(nmap.contains(&format!("WAN IP: {ROUTER_ADDR}")), "{nmap}");
    let natpmpc = lab.natpmpc(&lab.internet, ROUTER_ADDR, 9001, 10);
    assert!(natpmpc.status.success(), "{}", text(&natpmpc));
    let probe = lab.probe_every_class();
    assert_eq!(
        probe["exposed"], true,
        "monitor mode passes everything: {probe}"
    );
    // The LAN host is served too: its answers leave through lan0, never
    // counted as WAN answers.
    lan_is_served(&lab);

    sentinel.sync(&capture);
    sentinel.sync(&answers);
    let report = agent.stop(libc::SIGTERM).report;
    let answered = answers.tally_answers();
    let answer_table = answer_comparison(&report, &answered);
    println!(
        "tshark on wan0, answers the router sent:\n{}\n{answer_table}",
        answered.listing
    );
    assert_eq!(
        answered_counts(&report, "packets"),
        answered.packets,
        "the egress counters and Wireshark disagree on the answers:\n{answer_table}"
    );
    assert_eq!(
        answered_counts(&report, "bytes"),
        answered.bytes,
        "the egress counters and Wireshark disagree on the answers' bytes:\n{answer_table}"
    );
    assert!(
        answered.packets.values().sum::<u64>() >= 4,
        "nmap and natpmpc got answers:\n{answer_table}"
    );
    assert_eq!(report["exposed"], true, "{report}");
    let destinations: Vec<&str> = report["answered"]["top_destinations"]
        .as_array()
        .expect("top_destinations")
        .iter()
        .filter_map(|d| d["address"].as_str())
        .collect();
    // (miniupnpd may also announce to 224.0.0.1 from 5351 out of wan0: a
    // WAN answer too, counted by both.)
    assert!(
        destinations.contains(&INTERNET_ADDR) && !destinations.contains(&LAN_HOST_ADDR),
        "the internet host got WAN answers, the LAN host none on the WAN: {destinations:?}"
    );
    assert!(
        report["exposure"]
            .as_str()
            .is_some_and(|l| l.starts_with("EXPOSED: this router answered")),
        "{report}"
    );
    let tshark = capture.tally();
    let table = comparison(&report, "packets", "bytes", &tshark);
    println!(
        "tshark on wan0, frames from the internet host:\n{}\n{table}",
        tshark.listing
    );
    println!("agent's final report:\n{report}");

    let counted = agent_counts(&report, "packets");
    assert_eq!(
        counted,
        tshark.packets,
        "agent and Wireshark disagree:\n{table}\ntshark's output:\n{}",
        read(&capture.out)
    );
    assert_eq!(
        agent_counts(&report, "bytes"),
        tshark.bytes,
        "agent and Wireshark disagree on bytes:\n{table}"
    );
    assert!(
        agent_counts(&report, "dropped_packets")
            .values()
            .all(|&n| n == 0),
        "monitor mode drops nothing:\n{report}"
    );
    // The scans and the probe reached every class: nothing compared is
    // vacuous. nmap's port probe, both scripts and natpmpc each ask for the
    // external address.
    for class in refereed() {
        assert!(
            counted[&class] > 0,
            "no {} datagram seen:\n{table}",
            class.name()
        );
    }
    assert!(
        counted[&Class::NatpmpExternalAddressRequest] >= 4,
        "{table}"
    );
}

/// The LAN host's natpmpc against the router's LAN address: answered, mapped.
fn lan_is_served(lab: &Lab) {
    let lan = lab.natpmpc(&lab.lan, ROUTER_LAN_ADDR, 9100, 10);
    let lan_said = text(&lan);
    println!("$ natpmpc -g {ROUTER_LAN_ADDR} -a 9100 9100 udp 600  # from the LAN\n{lan_said}");
    assert!(
        lan.status.success(),
        "the LAN must still be served:\n{lan_said}"
    );
    assert!(
        lan_said.contains(&format!("Public IP address : {ROUTER_ADDR}")),
        "{lan_said}"
    );
    assert!(
        lan_said.contains("Mapped public port 9100 protocol UDP"),
        "{lan_said}"
    );
}

#[test]
fn drop_silences_wan_scans_and_keeps_the_lan_served() {
    let lab = Lab::new("peers-d");
    let sentinel = Sentinel::new(&lab);
    let agent = start_agent(&lab, true);
    // XDP runs before AF_PACKET: what it drops never reaches a capture on
    // wan0. Count what was sent instead, on the internet host's side.
    let capture = Capture::start(&lab, &lab.internet, "inet0", "tshark-inet0.txt");
    sentinel.sync(&capture);
    let log_before = lab.miniupnpd_log().len();

    wan_scans_get_no_answer(&lab);
    lan_is_served(&lab);

    sentinel.sync(&capture);
    let report = agent.stop(libc::SIGTERM).report;
    let sent = capture.tally();
    let table = comparison(&report, "dropped_packets", "dropped_bytes", &sent);
    println!(
        "tshark on inet0, frames the internet host sent:\n{}\n{table}",
        sent.listing
    );
    println!("agent's final report:\n{report}");

    assert_eq!(
        report["answered"]["packets"], 0,
        "drop mode: the same scans get no answer, and the LAN's answers leave through lan0: \
         {report}"
    );
    assert_eq!(report["exposed"], false, "{report}");
    let dropped = agent_counts(&report, "dropped_packets");
    assert_eq!(
        dropped, sent.packets,
        "the agent must drop every frame sent to 5351:\n{table}"
    );
    assert_eq!(
        agent_counts(&report, "dropped_bytes"),
        sent.bytes,
        "dropped bytes must equal the bytes sent:\n{table}"
    );
    assert_eq!(
        agent_counts(&report, "packets"),
        dropped,
        "every counted frame was dropped:\n{table}"
    );
    assert!(
        dropped.values().sum::<u64>() > 0,
        "nothing was sent:\n{table}"
    );

    let rules = lab.nat_rules();
    println!("$ nft list chain inet miniupnpd prerouting_miniupnpd\n{rules}");
    for (port, proto) in [(8082, "tcp"), (9002, "udp")] {
        assert!(
            !rules.contains(&format!("dport {port} ")),
            "no mapping for {proto} {port} may exist:\n{rules}"
        );
    }
    assert!(
        rules.contains(&mapping(9100, "udp", LAN_HOST_ADDR)),
        "{rules}"
    );
    let log = lab.miniupnpd_log();
    let during = &log[log_before..];
    assert!(
        !during.contains(&format!("from {INTERNET_ADDR}")),
        "miniupnpd must not have heard the internet host:\n{during}"
    );
    assert!(
        during.contains(&format!("from {LAN_HOST_ADDR}")),
        "{during}"
    );
}
