//! Real peers: the product against software nobody on this team wrote.
//!
//! The lab, built in namespaces by each test (all addresses in 198.18.0.0/15,
//! the benchmarking range of RFC 2544, so nothing leaves the machine):
//!
//! ```text
//!  internet host          router                                LAN host
//!  inet0 198.18.0.2 ───── wan0 198.18.0.1   lan0 198.18.1.1 ─── lan1 198.18.1.2
//!                         ext0 198.18.2.1 ─ ext1 198.18.2.2 (both in the router)
//! ```
//!
//! The router runs Debian's miniupnpd with NAT-PMP/PCP, listening on the LAN
//! *and on the WAN veth*: the misconfiguration of the devices in JVNVU#99291862,
//! which answered NAT-PMP from the Internet. miniupnpd insists that its
//! `ext_ifname` is not one of its listening interfaces, so `ext0` (one end of
//! a second veth pair; there is no dummy driver here) plays the external
//! interface. It treats 198.18.0.0/15 as reserved and refuses to serve with
//! such an external address, except when it learns the address through STUN:
//! a small STUN responder inside the router tells it that its public address
//! is 198.18.0.1, the WAN address the scanners target.
//!
//! The story, one test each:
//! 1. exposure: nmap's `nat-pmp-info` leaks the external address to the
//!    internet host, `nat-pmp-mapport` and libnatpmp's `natpmpc -a` create
//!    mappings (seen in miniupnpd's nftables chain);
//! 2. monitor mode: with the agent on `wan0`, its per-class counters equal
//!    what Wireshark's own NAT-PMP and Port Control dissectors (tshark on the
//!    same interface) make of the same frames;
//! 3. drop mode: the same scans get no answer and create no mapping, the
//!    agent drops exactly what tshark saw leave the internet host, and the LAN
//!    host's `natpmpc` is still served.
//!
//! A missing tool fails the test with the Debian package to install; every
//! external command runs under `timeout`; namespaces, processes (by PID) and
//! the temporary directory are removed even when an assertion fails.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    fs::{self, File},
    net::{SocketAddr, SocketAddrV4, UdpSocket},
    path::{Path, PathBuf},
    process::{Output, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use nat_pmp_ebpf_common::Class;
use serde_json::Value;

use crate::support::{
    agent::AGENT,
    netns::NetNs,
    process::{Agent, Proc},
    require_root,
    sentinel::{Sentinel, SENTINEL_PORT},
    wan::{veth_pair, WanLink, INTERNET_ADDR, ROUTER_ADDR},
};

const ROUTER_LAN_ADDR: &str = "198.18.1.1";
const LAN_HOST_ADDR: &str = "198.18.1.2";
const EXT_ADDR: &str = "198.18.2.1";
const EXT_PEER_ADDR: &str = "198.18.2.2";
/// Where the STUN responder listens: the router's WAN address, so that the
/// address miniupnpd learns (the source of its own requests) is 198.18.0.1.
const STUN_PORT: u16 = 3478;
/// Backstop for every long-lived child: gone by then even if this test
/// process is killed before its guards run.
const BACKSTOP_SECS: &str = "110";

/// The external tools, as absolute paths (their packages: [`TOOLS`]).
struct Tools {
    miniupnpd: PathBuf,
    nmap: PathBuf,
    natpmpc: PathBuf,
    tshark: PathBuf,
    nft: PathBuf,
    timeout: PathBuf,
    stdbuf: PathBuf,
}

/// `(program, Debian package)` for every tool the tests run.
const TOOLS: [(&str, &str); 7] = [
    ("miniupnpd", "miniupnpd miniupnpd-nftables"),
    ("nmap", "nmap"),
    ("natpmpc", "natpmpc"),
    ("tshark", "tshark"),
    ("nft", "nftables"),
    ("timeout", "coreutils"),
    ("stdbuf", "coreutils"),
];

fn find_program(name: &str) -> Option<PathBuf> {
    // sbin directories too: miniupnpd and nft live there, and a non-login
    // root shell does not always have them on PATH.
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

impl Tools {
    /// Finds every tool, or fails naming each missing one and its package.
    fn find() -> Tools {
        let found: Vec<Option<PathBuf>> = TOOLS.iter().map(|t| find_program(t.0)).collect();
        let missing: Vec<String> = TOOLS
            .iter()
            .zip(&found)
            .filter(|(_, p)| p.is_none())
            .map(|((name, pkg), _)| format!("`{name}` (Debian package {pkg})"))
            .collect();
        assert!(
            missing.is_empty(),
            "the real-peer tests need {}; install them with `cargo xtask setup` \
             (as root) or `apt-get install` the packages named; refusing to skip",
            missing.join(", ")
        );
        let mut it = found.into_iter().map(|p| p.expect("checked above"));
        let mut next = || it.next().expect("one path per tool");
        Tools {
            miniupnpd: next(),
            nmap: next(),
            natpmpc: next(),
            tshark: next(),
            nft: next(),
            timeout: next(),
            stdbuf: next(),
        }
    }
}

/// Runs `program ARGS` inside `ns` under `timeout SECS`, returning its
/// output whatever its exit status (callers assert on what they expect).
fn run_in(ns: &NetNs, tools: &Tools, secs: u32, program: &Path, args: &[&str]) -> Output {
    let out = ns
        .command(tools.timeout.to_str().expect("UTF-8 path"))
        .args(["-k", "2", &secs.to_string()])
        .arg(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {} in {}: {e}", program.display(), ns.name));
    out
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A long-lived child inside `ns` (under the backstop timeout), its stdout
/// and stderr in files.
fn spawn_in(ns: &NetNs, tools: &Tools, program: &Path, args: &[&str], log: &Path) -> Proc {
    let out = File::create(log).unwrap_or_else(|e| panic!("creating {}: {e}", log.display()));
    let err = out.try_clone().expect("cloning a file handle");
    // `timeout` passes SIGTERM on to the program, so `Proc`'s orderly stop
    // still reaches it.
    let child = ns
        .command(tools.timeout.to_str().expect("UTF-8 path"))
        .arg(BACKSTOP_SECS)
        .arg(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {} in {}: {e}", program.display(), ns.name));
    Proc(child)
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Polls `done` every 50 ms until it holds or `limit` passes.
fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A STUN responder (RFC 5389) in the router namespace, for miniupnpd's
/// external-address discovery; stopped and joined on drop, and gone after
/// the backstop in any case.
///
/// Hand-rolled on purpose: the answer is one fixed 32-byte Binding success
/// response, and miniupnpd's requests carry RFC 5780's CHANGE-REQUEST, a
/// comprehension-required attribute that a strict RFC 5389 codec must refuse
/// (§7.3.1, error 420); a codec crate would bring a full attribute registry
/// to be told to ignore it. This is test scaffolding, not product code.
struct StunResponder {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// RFC 5389 §6: the magic cookie in every message.
const STUN_MAGIC: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];

/// The Binding success response to `request` from `from`: header with the
/// request's transaction id, and one XOR-MAPPED-ADDRESS (§15.2) holding the
/// source address and port the request came from. `None` for anything that
/// is not an IPv4 Binding request.
fn stun_binding_success(request: &[u8], from: SocketAddr) -> Option<[u8; 32]> {
    let SocketAddr::V4(from) = from else {
        return None;
    };
    // Type 0x0001 = Binding request (§6, §18.1); the cookie marks RFC 5389.
    if request.len() < 20 || request[0..2] != [0, 1] || request[4..8] != STUN_MAGIC {
        return None;
    }
    let mut a = [0u8; 32];
    a[0..2].copy_from_slice(&0x0101u16.to_be_bytes()); // Binding success response
    a[2..4].copy_from_slice(&12u16.to_be_bytes()); // attribute bytes after the header
    a[4..20].copy_from_slice(&request[4..20]); // cookie and transaction id
    a[20..22].copy_from_slice(&0x0020u16.to_be_bytes()); // XOR-MAPPED-ADDRESS
    a[22..24].copy_from_slice(&8u16.to_be_bytes());
    a[25] = 0x01; // IPv4
    let port = from.port() ^ u16::from_be_bytes([STUN_MAGIC[0], STUN_MAGIC[1]]);
    a[26..28].copy_from_slice(&port.to_be_bytes());
    let addr = u32::from(*from.ip()) ^ u32::from_be_bytes(STUN_MAGIC);
    a[28..32].copy_from_slice(&addr.to_be_bytes());
    Some(a)
}

impl StunResponder {
    fn start(ns: &NetNs, at: SocketAddrV4) -> StunResponder {
        let sock = ns
            .enter(|| UdpSocket::bind(at))
            .expect("entering the router's namespace")
            .unwrap_or_else(|e| panic!("binding the STUN responder to {at}: {e}"));
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("setting a read timeout");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let end = Instant::now() + Duration::from_secs(110);
            let mut buf = [0u8; 1500];
            while !flag.load(Ordering::Relaxed) && Instant::now() < end {
                if let Ok((n, from)) = sock.recv_from(&mut buf) {
                    if let Some(answer) = stun_binding_success(&buf[..n], from) {
                        let _ = sock.send_to(&answer, from);
                    }
                }
            }
        });
        StunResponder {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for StunResponder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// miniupnpd's configuration: NAT-PMP/PCP only, listening on the LAN and
/// (the vulnerability) on the WAN veth, external address by STUN, nftables
/// names of our own so the test creates exactly the chains it expects.
fn miniupnpd_conf() -> String {
    format!(
        "# Written by nat-pmp-agent/tests/suite/real_peers.rs.\n\
         ext_ifname=ext0\n\
         # The LAN, and the WAN veth: a gateway that answers NAT-PMP/PCP from the\n\
         # Internet, as the devices of JVNVU#99291862 did.\n\
         listening_ip=lan0\n\
         listening_ip=wan0\n\
         enable_natpmp=yes\n\
         enable_upnp=no\n\
         # 198.18.0.0/15 is reserved to miniupnpd: it serves with such an\n\
         # external address only when it learned it through STUN.\n\
         ext_perform_stun=yes\n\
         ext_stun_host={ROUTER_ADDR}\n\
         ext_stun_port={STUN_PORT}\n\
         secure_mode=yes\n\
         upnp_table_name=miniupnpd\n\
         upnp_nat_table_name=miniupnpd\n\
         upnp_forward_chain=miniupnpd\n\
         upnp_nat_chain=prerouting_miniupnpd\n\
         upnp_nat_postrouting_chain=postrouting_miniupnpd\n\
         # Permission rules see addresses only, not interfaces: the WAN side's\n\
         # 198.18.0.0/24 is allowed along with the LAN.\n\
         allow 1024-65535 198.18.0.0/15 1024-65535\n\
         deny 0-65535 0.0.0.0/0 0-65535\n"
    )
}

/// The nftables skeleton miniupnpd fills (what Debian's `nft_init.sh` makes,
/// under our own names and with an accepting forward policy).
const NFT_SKELETON: &str = "table inet miniupnpd {
    chain forward { type filter hook forward priority 0; policy accept; jump miniupnpd; }
    chain miniupnpd { }
    chain prerouting { type nat hook prerouting priority -100; policy accept; jump prerouting_miniupnpd; }
    chain postrouting { type nat hook postrouting priority 100; policy accept; jump postrouting_miniupnpd; }
    chain prerouting_miniupnpd { }
    chain postrouting_miniupnpd { }
}
";

/// Starts miniupnpd in the foreground in `router`, with its configuration,
/// pidfile and log in `dir`, and waits until it serves; returns it and its
/// log's path.
fn start_miniupnpd(router: &NetNs, tools: &Tools, dir: &Path) -> (Proc, PathBuf) {
    let pidfile = dir.join("miniupnpd.pid");
    let conf = dir.join("miniupnpd.conf");
    fs::write(&conf, miniupnpd_conf()).expect("writing miniupnpd.conf");
    let log_path = dir.join("miniupnpd.log");
    let mut miniupnpd = spawn_in(
        router,
        tools,
        &tools.miniupnpd,
        &[
            "-d",
            "-f",
            conf.to_str().expect("UTF-8 path"),
            "-P",
            pidfile.to_str().expect("UTF-8 path"),
        ],
        &log_path,
    );
    let ready = wait_until(Duration::from_secs(10), || {
        read(&log_path).contains("Listening for NAT-PMP/PCP traffic on port 5351")
            || matches!(miniupnpd.0.try_wait(), Ok(Some(_)))
    });
    let log = read(&log_path);
    assert!(
        ready && log.contains("Listening for NAT-PMP/PCP traffic"),
        "miniupnpd did not start serving within 10 s:\n{log}"
    );
    assert!(
        log.contains(&format!("public IP address {ROUTER_ADDR}")),
        "miniupnpd did not learn {ROUTER_ADDR} through STUN:\n{log}"
    );
    (miniupnpd, log_path)
}

/// The lab. Field order is drop order: processes and the STUN thread end
/// before the namespaces they live in are deleted, the directory goes last.
struct Lab {
    _miniupnpd: Proc,
    _stun: StunResponder,
    tools: Tools,
    router: NetNs,
    internet: NetNs,
    lan: NetNs,
    dir: tempfile::TempDir,
    miniupnpd_log: PathBuf,
}

impl Lab {
    fn new(tag: &str) -> Lab {
        require_root();
        let tools = Tools::find();
        let dir = tempfile::Builder::new()
            .prefix("nat-pmp-peers-")
            .tempdir()
            .expect("creating a temporary directory");
        let WanLink { router, internet } = WanLink::new(tag);
        let lan = NetNs::new(&format!("{tag}-l")).expect("creating the LAN's namespace");
        veth_pair(
            (&router, "lan0", ROUTER_LAN_ADDR),
            (&lan, "lan1", LAN_HOST_ADDR),
        );
        veth_pair(
            (&router, "ext0", EXT_ADDR),
            (&router, "ext1", EXT_PEER_ADDR),
        );
        lan.ip(&["route", "add", "default", "via", ROUTER_LAN_ADDR])
            .expect("routing the LAN through the router");

        let skeleton = dir.path().join("miniupnpd.nft");
        fs::write(&skeleton, NFT_SKELETON).expect("writing the nftables skeleton");
        let nft = run_in(
            &router,
            &tools,
            10,
            &tools.nft,
            &["-f", skeleton.to_str().expect("UTF-8 path")],
        );
        assert!(nft.status.success(), "nft -f: {}", text(&nft));

        let stun = StunResponder::start(
            &router,
            SocketAddrV4::new(ROUTER_ADDR.parse().expect("an IPv4 address"), STUN_PORT),
        );
        let (miniupnpd, miniupnpd_log) = start_miniupnpd(&router, &tools, dir.path());
        Lab {
            _miniupnpd: miniupnpd,
            _stun: stun,
            tools,
            router,
            internet,
            lan,
            dir,
            miniupnpd_log,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// nmap's UDP scan of 5351 with the two NAT-PMP scripts, the mapping
    /// script asking for TCP `port` -> the scanner's own `port`.
    fn nmap(&self, port: u16) -> String {
        let args = format!(
            "nat-pmp-mapport.op=map,nat-pmp-mapport.protocol=tcp,\
             nat-pmp-mapport.privport={port},nat-pmp-mapport.pubport={port}"
        );
        let out = run_in(
            &self.internet,
            &self.tools,
            40,
            &self.tools.nmap,
            &[
                "-sU",
                "-p",
                "5351",
                "-Pn",
                "-n",
                "--script",
                "nat-pmp-info,nat-pmp-mapport",
                "--script-args",
                &args,
                ROUTER_ADDR,
            ],
        );
        assert!(out.status.success(), "nmap failed: {}", text(&out));
        text(&out)
    }

    /// `natpmpc -g gateway -a port port udp 600` from `ns`, bounded: natpmpc
    /// retries for about 128 s when nothing answers.
    fn natpmpc(&self, ns: &NetNs, gateway: &str, port: u16, secs: u32) -> Output {
        let p = port.to_string();
        // Line-buffered, so that what it printed survives `timeout`.
        let natpmpc = self.tools.natpmpc.to_str().expect("UTF-8 path");
        run_in(
            ns,
            &self.tools,
            secs,
            &self.tools.stdbuf,
            &["-oL", natpmpc, "-g", gateway, "-a", &p, &p, "udp", "600"],
        )
    }

    /// One datagram of every class from the internet host, with the agent's
    /// own probe; returns its JSON result.
    fn probe_every_class(&self) -> Value {
        let mut args = vec![
            "probe",
            ROUTER_ADDR,
            "--count",
            "1",
            "--wait",
            "0.5",
            "--json",
        ];
        for class in Class::ALL
            .into_iter()
            .filter(|c| !c.decided_by_headers() && !c.is_aggregate())
        {
            args.extend(["--class", class.name()]);
        }
        let out = run_in(&self.internet, &self.tools, 20, Path::new(AGENT), &args);
        assert!(out.status.success(), "probe failed: {}", text(&out));
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("probe printed no JSON ({e}): {}", text(&out)))
    }

    /// miniupnpd's NAT rules (`nft list chain`).
    fn nat_rules(&self) -> String {
        let out = run_in(
            &self.router,
            &self.tools,
            10,
            &self.tools.nft,
            &["list", "chain", "inet", "miniupnpd", "prerouting_miniupnpd"],
        );
        assert!(out.status.success(), "nft list chain: {}", text(&out));
        text(&out)
    }

    fn miniupnpd_log(&self) -> String {
        read(&self.miniupnpd_log)
    }

    /// The MAC address of the internet host's `inet0`.
    fn internet_mac(&self) -> String {
        let out = run_in(
            &self.internet,
            &self.tools,
            10,
            Path::new("ip"),
            &["-j", "link", "show", "inet0"],
        );
        let links: Value = serde_json::from_slice(&out.stdout).expect("ip -j prints JSON");
        links[0]["address"]
            .as_str()
            .expect("inet0 has a MAC address")
            .to_owned()
    }
}

/// The DNAT rule miniupnpd adds for a mapping, as nft prints it: the IP
/// protocol byte (bits 72..80 of the network header) then the port.
fn mapping(port: u16, proto: &str, to: &str) -> String {
    let number = match proto {
        "tcp" => "0x6",
        "udp" => "0x11",
        _ => panic!("no protocol number for {proto}"),
    };
    format!("@nh,72,8 {number} th dport {port} dnat ip to {to}:{port}")
}

/// Starts the agent on the router's `wan0` (in drop mode if `drop`),
/// reporting JSON lines, under the backstop timeout; returns once its
/// program is attached.
fn start_agent(lab: &Lab, drop: bool) -> Agent {
    let mut args = vec![
        "--iface",
        "wan0",
        "--output",
        "json",
        "--interval",
        "1",
        "--duration",
        "100",
    ];
    if drop {
        args.push("--drop");
    }
    // `timeout` passes SIGTERM on to the agent, so `Agent::stop` reaches it.
    let mut agent = Agent::spawn(
        lab.router
            .command(&lab.tools.timeout)
            .arg(BACKSTOP_SECS)
            .arg(AGENT)
            .args(&args),
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    // The agent writes its policy before it attaches: once the program is
    // on wan0, the mode holds from the first frame.
    let attached = wait_until(Duration::from_secs(10), || {
        lab.router.xdp_attached("wan0") || matches!(agent.proc.0.try_wait(), Ok(Some(_)))
    });
    if !(attached && lab.router.xdp_attached("wan0")) {
        let _ = agent.proc.0.kill();
        panic!(
            "the agent did not attach to wan0 within 10 s:\n{}",
            agent.stderr()
        );
    }
    agent
}

/// The classes Wireshark's verdicts tell apart: every class but the pcp_*
/// ones (refereed through their aggregate `pcp`) and those decided by the
/// headers around the payload (none of the traffic here has them).
fn refereed() -> impl Iterator<Item = Class> {
    Class::ALL
        .into_iter()
        .filter(|c| c.parent().is_none() && !c.decided_by_headers())
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
        let out = lab.path(name);
        let filter = format!(
            "ether src {} and udp and (dst port 5351 or src port 5351 or dst port {SENTINEL_PORT})",
            lab.internet_mac()
        );
        let mut args = vec![
            "-l",
            "-n",
            "-i",
            iface,
            "-f",
            &filter,
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

    /// Wireshark's verdict on every NAT-PMP/PCP frame, tallied per class.
    fn tally(&self) -> Tally {
        let zero = || refereed().map(|c| (c, 0)).collect::<BTreeMap<_, _>>();
        let mut t = Tally {
            packets: zero(),
            bytes: zero(),
            listing: String::new(),
        };
        for f in self.lines().iter().filter(|f| f[0] == "5351") {
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
    capture.sync(&sentinel);

    let nmap = lab.nmap(8081);
    assert!(nmap.contains(&format!("WAN IP: {ROUTER_ADDR}")), "{nmap}");
    let natpmpc = lab.natpmpc(&lab.internet, ROUTER_ADDR, 9001, 10);
    assert!(natpmpc.status.success(), "{}", text(&natpmpc));
    let probe = lab.probe_every_class();
    assert_eq!(
        probe["exposed"], true,
        "monitor mode passes everything: {probe}"
    );

    capture.sync(&sentinel);
    let report = agent.stop(libc::SIGTERM).report;
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

/// The scans of the exposure test, against a router in drop mode: no
/// answer, nothing leaked.
fn wan_scans_get_no_answer(lab: &Lab) {
    let nmap = lab.nmap(8082);
    println!(
        "$ nmap -sU -p 5351 --script nat-pmp-info,nat-pmp-mapport {ROUTER_ADDR}  # --drop\n{nmap}"
    );
    assert!(
        nmap.contains("5351/udp open|filtered"),
        "nmap must get no answer:\n{nmap}"
    );
    assert!(
        !nmap.contains("WAN IP"),
        "no external address may leak:\n{nmap}"
    );
    assert!(!nmap.contains("Successfully mapped"), "no mapping:\n{nmap}");

    // natpmpc waits 250 ms and doubles (RFC 6886 §3.1): 5 s is four tries.
    let natpmpc = lab.natpmpc(&lab.internet, ROUTER_ADDR, 9002, 5);
    let said = text(&natpmpc);
    println!(
        "$ timeout 5 natpmpc -g {ROUTER_ADDR} -a 9002 9002 udp 600  # --drop\n{said}exit: {}",
        natpmpc
            .status
            .code()
            .map_or_else(|| natpmpc.status.to_string(), |c| c.to_string())
    );
    assert_eq!(
        natpmpc.status.code(),
        Some(124),
        "natpmpc must time out:\n{said}"
    );
    assert!(!said.contains("Public IP address"), "{said}");

    let probe = lab.probe_every_class();
    assert_eq!(
        probe["exposed"], false,
        "drop mode answers nothing: {probe}"
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
