//! Test support shared by the privileged tests: a root check that fails
//! loudly, RAII guards for network namespaces and child processes, and a
//! frame builder.
//!
//! Every guard removes what it made on drop, so a failing assertion still
//! cleans up (namespaces with their veths; processes by the PID we started).
#![allow(
    dead_code,
    reason = "each test binary uses a different part of this module"
)]

use std::{
    fs::File,
    os::fd::AsRawFd as _,
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

/// Panics with a clear reason unless the tests run as root: these tests load
/// XDP programs and create namespaces, and must not pass silently without.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert!(
        euid == 0,
        "this test loads XDP programs and builds network namespaces: run it as root \
         (`cargo xtask test` does); refusing to skip silently"
    );
}

/// Runs a command, panicking with its output if it fails.
pub fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("running {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A network namespace, deleted (with its interfaces) on drop.
pub struct NetNs {
    pub name: String,
}

impl NetNs {
    /// A new namespace named `natpmp-<tag>-<pid>-<n>`, loopback up.
    pub fn new(tag: &str) -> Self {
        let name = format!(
            "natpmp-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        sh(&["ip", "netns", "add", &name]);
        let ns = NetNs { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n <ns> ARGS`.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut v = vec!["ip", "-n", &self.name];
        v.extend_from_slice(args);
        sh(&v)
    }

    /// A command that runs `program` inside this namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Runs `f` on a thread that has entered this namespace; sockets made
    /// there stay in the namespace wherever they are used afterwards.
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::scope(|s| {
            s.spawn(|| {
                let fd = File::open(&path).unwrap_or_else(|e| panic!("opening {path}: {e}"));
                // SAFETY: `fd` is an open namespace file; setns only affects
                // this thread, which ends with the scope.
                let rc = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(
                    rc,
                    0,
                    "setns into {path}: {}",
                    std::io::Error::last_os_error()
                );
                f()
            })
            .join()
            .expect("the thread inside the namespace panicked")
        })
    }

    /// The XDP program id attached to `dev`, if any (`ip -d link`).
    pub fn xdp_attached(&self, dev: &str) -> bool {
        self.ip(&["link", "show", "dev", dev]).contains("prog/xdp")
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

/// Two namespaces joined by a veth pair: a router with its WAN interface
/// `wan0` (198.18.0.1/24) and an internet host on `inet0` (198.18.0.2/24).
pub struct WanLink {
    pub router: NetNs,
    pub internet: NetNs,
}

pub const ROUTER_ADDR: &str = "198.18.0.1";
pub const INTERNET_ADDR: &str = "198.18.0.2";

impl WanLink {
    pub fn new(tag: &str) -> Self {
        let router = NetNs::new(&format!("{tag}-r"));
        let internet = NetNs::new(&format!("{tag}-i"));
        let link = WanLink { router, internet };
        link.add_wan0();
        link
    }

    /// Creates the veth pair `wan0`/`inet0` (again, after a test deleted
    /// it: a reconnect), addressed and up.
    pub fn add_wan0(&self) {
        self.add_pair(("wan0", ROUTER_ADDR), ("inet0", INTERNET_ADDR));
    }

    /// A veth pair between the two namespaces: `(device, address)` on the
    /// router side and on the internet side, /24, both up.
    pub fn add_pair(&self, (r_dev, r_addr): (&str, &str), (i_dev, i_addr): (&str, &str)) {
        sh(&[
            "ip",
            "link",
            "add",
            r_dev,
            "netns",
            &self.router.name,
            "type",
            "veth",
            "peer",
            "name",
            i_dev,
            "netns",
            &self.internet.name,
        ]);
        self.router
            .ip(&["addr", "add", &format!("{r_addr}/24"), "dev", r_dev]);
        self.internet
            .ip(&["addr", "add", &format!("{i_addr}/24"), "dev", i_dev]);
        self.router.ip(&["link", "set", r_dev, "up"]);
        self.internet.ip(&["link", "set", i_dev, "up"]);
    }
}

/// A child process, ended on drop (SIGTERM, then SIGKILL) by its own PID.
pub struct Proc(pub Child);

impl Proc {
    pub fn signal(&self, sig: i32) {
        let pid = i32::try_from(self.0.id()).expect("pid fits i32");
        // SAFETY: kill has no memory preconditions; the PID is our child's.
        unsafe { libc::kill(pid, sig) };
    }

    /// Waits up to `limit` for the child to exit.
    pub fn wait_for(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if let Ok(Some(st)) = self.0.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            self.signal(libc::SIGTERM);
            if self.wait_for(Duration::from_secs(3)).is_none() {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
    }
}

/// The agent binary cargo built for these tests.
pub const AGENT: &str = env!("CARGO_BIN_EXE_nat-pmp-agent");

/// A bpffs mounted by the test in a fresh directory under /run: pins made
/// inside `ip netns exec` (which remounts /sys) must live on a bpffs mounted
/// in the test's own mount namespace to outlive the agent. Unmounted (which
/// drops every pin in it, detaching pinned links) and removed on drop.
pub struct Bpffs {
    pub path: std::path::PathBuf,
}

impl Bpffs {
    pub fn new(tag: &str) -> Self {
        let path = std::path::PathBuf::from(format!(
            "/run/natpmp-test-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&path).expect("creating the bpffs mount point");
        let p = path.to_str().expect("UTF-8 path");
        sh(&["mount", "-t", "bpf", "bpf", p]);
        Bpffs { path }
    }

    /// The pin root to pass as `--pin-dir`.
    pub fn pin_root(&self) -> String {
        self.path.join("pins").display().to_string()
    }
}

impl Drop for Bpffs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg(&self.path)
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir(&self.path);
    }
}

/// A second veth pair between the two namespaces of a [`WanLink`]:
/// `wan1` (198.19.0.1/24) in the router, `inet1` (198.19.0.2/24) outside.
pub const ROUTER_ADDR_1: &str = "198.19.0.1";
pub const INTERNET_ADDR_1: &str = "198.19.0.2";

impl WanLink {
    pub fn add_second_wan(&self) {
        self.add_pair(("wan1", ROUTER_ADDR_1), ("inet1", INTERNET_ADDR_1));
    }
}

/// A running agent (`--output json`, reports every 0.1 s) whose JSON lines
/// arrive on a channel; ended by its PID on drop.
pub struct Agent {
    pub proc: Proc,
    pub lines: std::sync::mpsc::Receiver<serde_json::Value>,
}

/// What a stopped agent left: its final report and its stderr.
pub struct Stopped {
    pub report: serde_json::Value,
    pub stderr: String,
}

impl Agent {
    /// Starts the agent in `ns` and waits for its first report (the program
    /// is loaded and attached by then).
    pub fn start(ns: &NetNs, args: &[&str]) -> Agent {
        use std::io::BufRead as _;
        let mut child = ns
            .command(AGENT)
            .args(args)
            .args(["--output", "json", "--interval", "0.1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting the agent");
        let stdout = child.stdout.take().expect("agent stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                let v: serde_json::Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("agent printed a non-JSON line {line:?}: {e}"));
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        let mut agent = Agent {
            proc: Proc(child),
            lines,
        };
        if agent.lines.recv_timeout(Duration::from_secs(20)).is_err() {
            let _ = agent.proc.wait_for(Duration::from_secs(1));
            panic!("no report from the agent: {}", agent.stderr());
        }
        agent
    }

    /// What the agent wrote on stderr (once it has exited).
    pub fn stderr(&mut self) -> String {
        let mut s = String::new();
        if let Some(mut e) = self.proc.0.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut s);
        }
        s
    }

    /// The first report whose total reaches `packets` (or the last one seen
    /// within 10 s).
    pub fn wait_for_total(&self, packets: u64) -> serde_json::Value {
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            let r = self
                .lines
                .recv_timeout(Duration::from_secs(5))
                .expect("no report from the agent in time");
            if r["total"]["packets"].as_u64() >= Some(packets) || Instant::now() > end {
                return r;
            }
        }
    }

    /// Sends `sig`, expects a clean exit and a final report.
    pub fn stop(mut self, sig: i32) -> Stopped {
        self.proc.signal(sig);
        let status = self
            .proc
            .wait_for(Duration::from_secs(10))
            .expect("the agent did not exit on the signal");
        let stderr = self.stderr();
        assert!(status.success(), "agent exited with {status}: {stderr}");
        let mut last = None;
        while let Ok(v) = self.lines.recv_timeout(Duration::from_secs(2)) {
            last = Some(v);
        }
        let report = last.expect("no final report");
        assert_eq!(
            report["final"], true,
            "the last report must be marked final"
        );
        Stopped { report, stderr }
    }
}

/// Runs `nat-pmp-agent ARGS` in `ns` to completion (stdin closed).
pub fn agent_output(ns: &NetNs, args: &[&str]) -> std::process::Output {
    ns.command(AGENT)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running the agent")
}

/// [`agent_output`] as (success, stdout, stderr).
pub fn run_agent(ns: &NetNs, args: &[&str]) -> (bool, String, String) {
    let out = agent_output(ns, args);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// [`run_agent`] that must succeed; its stdout.
pub fn agent_ok(ns: &NetNs, args: &[&str]) -> String {
    let (ok, out, err) = run_agent(ns, args);
    assert!(ok, "nat-pmp-agent {args:?} failed: {err}");
    out
}

/// `nat-pmp-agent status --json --pin-dir PIN_ROOT` in `ns`.
pub fn status_json(ns: &NetNs, pin_root: &str) -> serde_json::Value {
    let out = agent_ok(ns, &["status", "--json", "--pin-dir", pin_root]);
    serde_json::from_str(out.trim()).expect("status JSON")
}

/// A UDP socket bound in `ns`.
pub fn bind(ns: &NetNs, addr: &str, port: u16) -> std::net::UdpSocket {
    ns.enter(|| {
        std::net::UdpSocket::bind((addr, port))
            .unwrap_or_else(|e| panic!("binding {addr}:{port}: {e}"))
    })
}

/// Datagrams waiting on `sock`, read until it stays quiet for `quiet`.
pub fn drain_quiet(sock: &std::net::UdpSocket, quiet: Duration) -> u64 {
    sock.set_read_timeout(Some(quiet)).expect("timeout");
    let mut buf = [0u8; 2048];
    let mut n = 0;
    while sock.recv_from(&mut buf).is_ok() {
        n += 1;
    }
    n
}

/// [`drain_quiet`] for 300 ms.
pub fn drain(sock: &std::net::UdpSocket) -> u64 {
    drain_quiet(sock, Duration::from_millis(300))
}

/// Sends `n` datagrams of `class` to `to`:5351.
pub fn send(from: &std::net::UdpSocket, to: &str, class: nat_pmp_ebpf_common::Class, n: u64) {
    let payload = nat_pmp_agent::probe::sample_payload(class);
    for _ in 0..n {
        from.send_to(&payload, (to, nat_pmp_ebpf_common::NATPMP_PORT))
            .expect("sending");
    }
}

/// Opens (creates, not persistent: closing it deletes the device) the tun
/// device `tun0` of the current namespace (`IFF_TUN`, no packet
/// information header).
pub fn open_tun() -> File {
    const TUNSETIFF: libc::c_ulong = 0x4004_54ca; // _IOW('T', 202, int)
    const IFF_TUN: i16 = 0x0001;
    const IFF_NO_PI: i16 = 0x1000;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .expect("opening /dev/net/tun");
    // struct ifreq: the name, then the flags (a short) at offset 16.
    let mut ifr = [0u8; 40];
    ifr[..4].copy_from_slice(b"tun0");
    ifr[16..18].copy_from_slice(&(IFF_TUN | IFF_NO_PI).to_ne_bytes());
    // SAFETY: TUNSETIFF reads and writes a struct ifreq; `ifr` is at least as
    // large and lives across the call.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF, ifr.as_mut_ptr()) };
    assert_eq!(rc, 0, "TUNSETIFF tun0: {}", std::io::Error::last_os_error());
    file
}
