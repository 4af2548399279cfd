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
        sh(&[
            "ip",
            "link",
            "add",
            "wan0",
            "netns",
            &router.name,
            "type",
            "veth",
            "peer",
            "name",
            "inet0",
            "netns",
            &internet.name,
        ]);
        router.ip(&["addr", "add", &format!("{ROUTER_ADDR}/24"), "dev", "wan0"]);
        internet.ip(&[
            "addr",
            "add",
            &format!("{INTERNET_ADDR}/24"),
            "dev",
            "inet0",
        ]);
        router.ip(&["link", "set", "wan0", "up"]);
        internet.ip(&["link", "set", "inet0", "up"]);
        WanLink { router, internet }
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
        sh(&[
            "ip",
            "link",
            "add",
            "wan1",
            "netns",
            &self.router.name,
            "type",
            "veth",
            "peer",
            "name",
            "inet1",
            "netns",
            &self.internet.name,
        ]);
        self.router
            .ip(&["addr", "add", &format!("{ROUTER_ADDR_1}/24"), "dev", "wan1"]);
        self.internet.ip(&[
            "addr",
            "add",
            &format!("{INTERNET_ADDR_1}/24"),
            "dev",
            "inet1",
        ]);
        self.router.ip(&["link", "set", "wan1", "up"]);
        self.internet.ip(&["link", "set", "inet1", "up"]);
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
