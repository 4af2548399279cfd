//! The real-peer lab (used by `real_peers` and `audit`): a router running
//! Debian's miniupnpd, an internet host and a LAN host in namespaces
//! ([`Lab`]); the external tools found by name ([`Tools`]) and run bounded
//! ([`run_in`]); the agent on the router's WAN ([`start_agent`]) and the
//! scans a drop-mode router must leave unanswered
//! ([`wan_scans_get_no_answer`]). Every call panics with what went wrong:
//! these are test steps.
//!
//! The lab (all addresses in 198.18.0.0/15, the benchmarking range of RFC
//! 2544, so nothing leaves the machine):
//!
//! ```text
//!  internet host          router                                LAN host
//!  inet0 198.18.0.2 ───── wan0 198.18.0.1   lan0 198.18.1.1 ─── lan1 198.18.1.2
//!                         ext0 198.18.2.1 ─ ext1 198.18.2.2 (both in the router)
//! ```
//!
//! miniupnpd insists that its `ext_ifname` is not one of its listening
//! interfaces, so `ext0` (one end of a second veth pair; there is no dummy
//! driver here) plays the external interface. It treats 198.18.0.0/15 as
//! reserved and refuses to serve with such an external address, except when
//! it learns the address through STUN: a small STUN responder inside the
//! router tells it that its public address is 198.18.0.1, the WAN address
//! the scanners target.

use std::{
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

use super::{
    agent::AGENT,
    netns::NetNs,
    process::{Agent, Proc},
    require_root,
    wan::{veth_pair, WanLink, ROUTER_ADDR},
};

pub const ROUTER_LAN_ADDR: &str = "198.18.1.1";
pub const LAN_HOST_ADDR: &str = "198.18.1.2";
const EXT_ADDR: &str = "198.18.2.1";
const EXT_PEER_ADDR: &str = "198.18.2.2";
/// Where the STUN responder listens: the router's WAN address, so that the
/// address miniupnpd learns (the source of its own requests) is 198.18.0.1.
const STUN_PORT: u16 = 3478;
/// Backstop for every long-lived child: gone by then even if this test
/// process is killed before its guards run.
pub const BACKSTOP_SECS: &str = "110";

/// The external tools, as absolute paths (their packages: [`TOOLS`]).
pub struct Tools {
    pub miniupnpd: PathBuf,
    pub nmap: PathBuf,
    pub natpmpc: PathBuf,
    pub tshark: PathBuf,
    pub nft: PathBuf,
    pub timeout: PathBuf,
    pub stdbuf: PathBuf,
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

pub fn find_program(name: &str) -> Option<PathBuf> {
    // sbin directories too: miniupnpd and nft live there, and a non-login
    // root shell does not always have them on PATH.
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// The program `name`, or a failure naming its Debian `package`.
pub fn find_tool(name: &str, package: &str) -> PathBuf {
    find_program(name).unwrap_or_else(|| {
        panic!(
            "this test needs `{name}` (Debian package {package}); install it with `cargo xtask \
             setup` (as root) or `apt-get install {package}`; refusing to skip"
        )
    })
}

impl Tools {
    /// Finds every tool, or fails naming each missing one and its package.
    pub fn find() -> Tools {
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
pub fn run_in(ns: &NetNs, tools: &Tools, secs: u32, program: &Path, args: &[&str]) -> Output {
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

pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A long-lived child inside `ns` (under the backstop timeout), its stdout
/// and stderr in files.
pub fn spawn_in(ns: &NetNs, tools: &Tools, program: &Path, args: &[&str], log: &Path) -> Proc {
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

pub fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Polls `done` every 50 ms until it holds or `limit` passes.
pub fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
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

/// miniupnpd's configuration: NAT-PMP/PCP only, listening on the
/// interfaces `listen` (the LAN and, the vulnerability, the WAN veth in
/// [`Lab::new`]), external address by STUN, nftables names of our own so
/// the test creates exactly the chains it expects.
fn miniupnpd_conf(listen: &[&str], extra: &str) -> String {
    let listening = listen.iter().fold(String::new(), |mut out, i| {
        let _ = writeln!(out, "listening_ip={i}");
        out
    });
    format!(
        "# Written by nat-pmp-agent/tests/support/peers.rs.\n\
         ext_ifname=ext0\n\
         # With wan0 listed: a gateway that answers NAT-PMP/PCP from the\n\
         # Internet, as the devices of JVNVU#99291862 did.\n\
         {listening}\
         {extra}\
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
pub fn start_miniupnpd(
    router: &NetNs,
    tools: &Tools,
    dir: &Path,
    (listen, extra): (&[&str], &str),
) -> (Proc, PathBuf) {
    let pidfile = dir.join("miniupnpd.pid");
    let conf = dir.join("miniupnpd.conf");
    fs::write(&conf, miniupnpd_conf(listen, extra)).expect("writing miniupnpd.conf");
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
pub struct Lab {
    _miniupnpd: Proc,
    _stun: StunResponder,
    pub tools: Tools,
    pub router: NetNs,
    pub internet: NetNs,
    pub lan: NetNs,
    pub dir: tempfile::TempDir,
    miniupnpd_log: PathBuf,
}

impl Lab {
    /// The lab with miniupnpd listening on the LAN and on the WAN veth: a
    /// gateway exposed on its WAN.
    pub fn new(tag: &str) -> Lab {
        Lab::listening_on(tag, &["lan0", "wan0"], "")
    }

    /// The lab with miniupnpd listening on the interfaces `listen`, with
    /// the configuration lines `extra` (each ending in a newline).
    pub fn listening_on(tag: &str, listen: &[&str], extra: &str) -> Lab {
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
        let (miniupnpd, miniupnpd_log) =
            start_miniupnpd(&router, &tools, dir.path(), (listen, extra));
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

    /// The pid miniupnpd wrote to its pidfile.
    pub fn miniupnpd_pid(&self) -> u32 {
        read(&self.path("miniupnpd.pid"))
            .trim()
            .parse()
            .expect("miniupnpd's pidfile holds its pid")
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// nmap's UDP scan of 5351 with the two NAT-PMP scripts, the mapping
    /// script asking for TCP `port` -> the scanner's own `port`.
    pub fn nmap(&self, port: u16) -> String {
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
    pub fn natpmpc(&self, ns: &NetNs, gateway: &str, port: u16, secs: u32) -> Output {
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
    pub fn probe_every_class(&self) -> Value {
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
    pub fn nat_rules(&self) -> String {
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

    pub fn miniupnpd_log(&self) -> String {
        read(&self.miniupnpd_log)
    }

    /// The MAC address of the internet host's `inet0`.
    pub fn internet_mac(&self) -> String {
        self.mac(&self.internet, "inet0")
    }

    /// The MAC address of `dev` in `ns`.
    pub fn mac(&self, ns: &NetNs, dev: &str) -> String {
        let out = run_in(
            ns,
            &self.tools,
            10,
            Path::new("ip"),
            &["-j", "link", "show", dev],
        );
        let links: Value = serde_json::from_slice(&out.stdout).expect("ip -j prints JSON");
        links[0]["address"]
            .as_str()
            .unwrap_or_else(|| panic!("{dev} has a MAC address"))
            .to_owned()
    }
}

/// The DNAT rule miniupnpd adds for a mapping, as nft prints it: the IP
/// protocol byte (bits 72..80 of the network header) then the port.
pub fn mapping(port: u16, proto: &str, to: &str) -> String {
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
pub fn start_agent(lab: &Lab, drop: bool) -> Agent {
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

/// The scans of the exposure test, against a router in drop mode: no
/// answer, nothing leaked.
pub fn wan_scans_get_no_answer(lab: &Lab) {
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
