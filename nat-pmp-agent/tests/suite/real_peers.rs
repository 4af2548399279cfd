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

use std::{collections::BTreeMap, fmt::Write as _, fs::File, path::PathBuf, time::Duration};

use nat_pmp_ebpf_common::Class;
use serde_json::Value;

use crate::support::{
    netns::NetNs,
    peers::{
        find_program, mapping, read, spawn_in, start_agent, text, wan_scans_get_no_answer, Lab,
        LAN_HOST_ADDR, ROUTER_LAN_ADDR,
    },
    process::Proc,
    require_root,
    sentinel::{Sentinel, SENTINEL_PORT},
    wan::{INTERNET_ADDR, ROUTER_ADDR},
};

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

impl Verdict {
    /// From tshark's fields: `nat-pmp.version` and `.opcode`,
    /// `portcontrol.version` and `.opcode`, `_ws.malformed`, `data.len`.
    fn from_fields(nat_pmp: [&str; 2], pcp: [&str; 2], malformed: &str, data_len: &str) -> Self {
        let byte = |s: &str| s.parse::<u8>().ok();
        let dissector = if !nat_pmp[0].is_empty() {
            Dissector::NatPmp
        } else if !pcp[0].is_empty() {
            Dissector::PortControl
        } else if !data_len.is_empty() {
            Dissector::Data
        } else {
            Dissector::Empty
        };
        Verdict {
            dissector,
            version: byte(nat_pmp[0]).or_else(|| byte(pcp[0])),
            opcode: byte(nat_pmp[1]).or_else(|| byte(pcp[1])),
            malformed: !malformed.is_empty(),
        }
    }
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
            let v = Verdict::from_fields([&f[2], &f[3]], [&f[4], &f[5]], &f[6], &f[7]);
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

impl Capture {
    /// Sends sentinels until one has reached the router and this capture
    /// has printed it ([`Sentinel::sync_seen`]).
    fn sync(&self, sentinel: &Sentinel) {
        sentinel.sync_seen(
            |len| self.sentinels(len) > 0,
            || format!("tshark said:\n{}", read(&self.out)),
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
    let sentinel = Sentinel::new(&lab.router, ROUTER_ADDR, &lab.internet);
    let agent = start_agent(&lab, false);
    let capture = Capture::start(&lab, &lab.router, "wan0", "tshark-wan0.txt");
    let answers = Capture::answers(&lab, "tshark-wan0-answers.txt");
    capture.sync(&sentinel);
    answers.sync(&sentinel);

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

    capture.sync(&sentinel);
    answers.sync(&sentinel);
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
    let sentinel = Sentinel::new(&lab.router, ROUTER_ADDR, &lab.internet);
    let agent = start_agent(&lab, true);
    // XDP runs before AF_PACKET: what it drops never reaches a capture on
    // wan0. Count what was sent instead, on the internet host's side.
    let capture = Capture::start(&lab, &lab.internet, "inet0", "tshark-inet0.txt");
    capture.sync(&sentinel);
    let log_before = lab.miniupnpd_log().len();

    wan_scans_get_no_answer(&lab);
    lan_is_served(&lab);

    capture.sync(&sentinel);
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

/// Wireshark's finer verdict on a well-formed PCP message (RFC 6887 §7:
/// version 2, the R bit, the opcode), as the product's pcp_* class; `None`
/// for a verdict the table does not judge finely (the `pcp` aggregate then
/// referees it).
fn pcp_referee(opcode: u8, response: bool) -> Option<Class> {
    Some(match (opcode, response) {
        (0, false) => Class::PcpAnnounceRequest,
        (0, true) => Class::PcpAnnounceResponse,
        (1, false) => Class::PcpMapRequest,
        (1, true) => Class::PcpMapResponse,
        (2, false) => Class::PcpPeerRequest,
        (2, true) => Class::PcpPeerResponse,
        _ => return None,
    })
}

/// Wireshark referees the walk, offline: one datagram of every class a
/// payload decides, in every encapsulation the product parses (untagged,
/// 802.1Q, QinQ, PPPoE with IPv4 and IPv6, IPv6, IPv6 extension headers,
/// IPv4 in IPv6), written to a pcap from the shared builders. tshark's
/// dissectors say what each frame is ([`REFEREE`], and [`pcp_referee`] for
/// each well-formed pcp_* class) and who sent it (the innermost IP
/// source); the compiled program in the kernel must say the same, frame by
/// frame. Independent of the walk: a wrong parsing rule in it would make
/// the two differ.
#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one linear check: frames, pcap, tshark, kernel"
)]
fn wireshark_referees_every_encapsulation_and_pcp_class() {
    use nat_pmp_agent::bpf::Filter;
    use nat_pmp_ebpf_common::{
        frames::{ethernet, ext, ipv4, ipv6, pppoe, udp, V4Frag, V4_SRC, V6_SRC},
        headers::{
            ETH_P_8021AD, ETH_P_8021Q, ETH_P_IP, ETH_P_IPV6, ETH_P_PPP_SES, IPPROTO_DSTOPTS,
            IPPROTO_HOPOPTS, IPPROTO_IPIP, IPPROTO_UDP, PPP_IP, PPP_IPV6,
        },
        samples::sample_payload,
        NATPMP_PORT,
    };
    use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
    /// Wraps a UDP payload into a frame of one encapsulation.
    type Wrap = Box<dyn Fn(&[u8]) -> Vec<u8>>;

    require_root();
    let tshark = find_program("tshark").unwrap_or_else(|| {
        panic!("tshark is missing: run `cargo xtask setup` (Debian package tshark)")
    });
    let v4 = |p: &[u8]| {
        ipv4(
            IPPROTO_UDP,
            V4Frag::default(),
            &[],
            &udp(40000, NATPMP_PORT, p),
        )
    };
    let v6 = |p: &[u8]| ipv6(IPPROTO_UDP, &udp(40000, NATPMP_PORT, p));
    let encapsulations: Vec<(&str, Wrap)> = vec![
        (
            "untagged IPv4",
            Box::new(move |p| ethernet(&[], ETH_P_IP, &v4(p))),
        ),
        (
            "802.1Q",
            Box::new(move |p| ethernet(&[ETH_P_8021Q], ETH_P_IP, &v4(p))),
        ),
        (
            "QinQ",
            Box::new(move |p| ethernet(&[ETH_P_8021AD, ETH_P_8021Q], ETH_P_IP, &v4(p))),
        ),
        (
            "PPPoE IPv4",
            Box::new(move |p| ethernet(&[], ETH_P_PPP_SES, &pppoe(PPP_IP, &v4(p)))),
        ),
        (
            "PPPoE IPv6",
            Box::new(move |p| ethernet(&[], ETH_P_PPP_SES, &pppoe(PPP_IPV6, &v6(p)))),
        ),
        ("IPv6", Box::new(move |p| ethernet(&[], ETH_P_IPV6, &v6(p)))),
        (
            "IPv6 extension headers",
            Box::new(move |p| {
                let udp = udp(40000, NATPMP_PORT, p);
                let chain = ext(IPPROTO_DSTOPTS, 0, &ext(IPPROTO_UDP, 0, &udp));
                ethernet(&[], ETH_P_IPV6, &ipv6(IPPROTO_HOPOPTS, &chain))
            }),
        ),
        (
            "IPv4 in IPv6",
            Box::new(move |p| ethernet(&[], ETH_P_IPV6, &ipv6(IPPROTO_IPIP, &v4(p)))),
        ),
    ];
    let classes: Vec<Class> = Class::ALL
        .into_iter()
        .filter(|c| !c.is_aggregate() && !c.decided_by_headers())
        .collect();
    let mut frames: Vec<(String, Vec<u8>)> = Vec::new();
    for (encap, wrap) in &encapsulations {
        for &class in &classes {
            frames.push((
                format!("{encap}, {} sample", class.name()),
                wrap(sample_payload(class)),
            ));
        }
    }
    let dir = tempfile::Builder::new()
        .prefix("natpmp-referee-")
        .tempdir()
        .expect("a temporary directory");
    let pcap = dir.path().join("encapsulations.pcap");
    let mut w = PcapWriter::with_header(
        File::create(&pcap).expect("creating the pcap"),
        PcapHeader::default(),
    )
    .expect("writing the pcap header");
    for (i, (_, f)) in frames.iter().enumerate() {
        let len = u32::try_from(f.len()).expect("a short frame");
        // 2025-06-01T00:00:00Z, a millisecond apart.
        let t = Duration::from_hours(485_760) + Duration::from_millis(i as u64);
        w.write_packet(&PcapPacket::new(t, len, f))
            .expect("writing a frame");
    }
    drop(w);
    let fields = [
        "nat-pmp.version",
        "nat-pmp.opcode",
        "portcontrol.version",
        "portcontrol.opcode",
        "portcontrol.r",
        "_ws.malformed",
        "data.len",
        "ip.src",
        "ipv6.src",
        "udp.dstport",
        "udp.length",
    ];
    let mut cmd = std::process::Command::new("timeout");
    cmd.args(["60", tshark.to_str().expect("a UTF-8 path"), "-n", "-r"])
        .arg(&pcap)
        .args(["-T", "fields", "-E", "occurrence=l"]);
    for f in fields {
        cmd.args(["-e", f]);
    }
    let out = cmd.output().expect("running tshark");
    assert!(out.status.success(), "tshark failed: {}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<Vec<&str>> = stdout.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(lines.len(), frames.len(), "one line per frame:\n{stdout}");

    let filter = Filter::load_traced().expect("loading the XDP program with tracing");
    let mut finely = 0;
    let mut mismatches = Vec::new();
    for ((what, frame), f) in frames.iter().zip(&lines) {
        assert_eq!(f.len(), fields.len(), "{what}: {f:?}");
        assert_eq!(
            f[9], "5351",
            "{what}: Wireshark must find the UDP header: {f:?}"
        );
        let v = Verdict::from_fields([f[0], f[1]], [f[2], f[3]], f[5], f[6]);
        let coarse = referee(v).unwrap_or_else(|| panic!("{what}: no REFEREE row for {v}"));
        // Wireshark's PCP dissector does not enforce RFC 6887 §7's 1,100-byte
        // limit (it dissects a longer ANNOUNCE as an ANNOUNCE): past it, the
        // `pcp` aggregate referees, and the classifier's own table tests
        // judge the limit.
        let payload_len = f[10].parse::<usize>().map_or(0, |l| l.saturating_sub(8));
        let fine = (coarse == Class::Pcp && !v.malformed && payload_len <= 1100)
            .then(|| pcp_referee(v.opcode.unwrap_or(u8::MAX), matches!(f[4], "1" | "True")))
            .flatten();
        let want_src: std::net::IpAddr = if f[7].is_empty() { f[8] } else { f[7] }
            .parse()
            .unwrap_or_else(|e| panic!("{what}: tshark's source {f:?}: {e}"));
        assert!(
            want_src == std::net::IpAddr::from(V4_SRC)
                || want_src == std::net::IpAddr::from(V6_SRC),
            "{what}: Wireshark reads the sender {want_src}, not the builders' own"
        );
        let t = filter.run_traced(frame).expect("BPF_PROG_TEST_RUN");
        let got = nat_pmp_ebpf_common::Class::from_index(t.class);
        let got_src = std::net::Ipv6Addr::from(t.src);
        let got_src = got_src
            .to_ipv4_mapped()
            .map_or(std::net::IpAddr::V6(got_src), std::net::IpAddr::V4);
        let class_ok = match fine {
            Some(c) => {
                finely += 1;
                got == Some(c)
            }
            None if coarse == Class::Pcp => got.and_then(Class::parent) == Some(Class::Pcp),
            None => got == Some(coarse),
        };
        if !class_ok || got_src != want_src {
            mismatches.push(format!(
                "{what}: Wireshark {v} -> {} from {want_src}; kernel {} from {got_src}",
                fine.unwrap_or(coarse).name(),
                got.map_or("(uncounted)", Class::name)
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "the kernel and Wireshark disagree:\n{}",
        mismatches.join("\n")
    );
    // Every well-formed pcp_* class was refereed finely, in every
    // encapsulation; and the sources were the builders' own.
    assert_eq!(
        finely,
        6 * encapsulations.len(),
        "pcp_* frames refereed finely"
    );
}
