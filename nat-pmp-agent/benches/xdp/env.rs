//! The bench's own sandbox: network namespaces, a private bpffs, child
//! processes and CPU pinning. Every guard removes what it made on drop, so an
//! error or a panic half-way still cleans up; stale leftovers of a bench that
//! was killed are swept at start (only ours: names carry a dead PID).

use std::{
    fs::{self, File},
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{anyhow, bail, Context as _, Result};

/// Prefix of every namespace and bpffs this bench creates.
const PREFIX: &str = "natpmp-bench";

/// Runs a command, returning its stdout; fails with its stderr.
pub fn sh(args: &[&str]) -> Result<String> {
    sh_env(args, &[])
}

/// [`sh`] with extra environment variables.
pub fn sh_env(args: &[&str], env: &[(&str, &str)]) -> Result<String> {
    let (program, rest) = args.split_first().context("empty command")?;
    let out = Command::new(program)
        .args(rest)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .with_context(|| {
            format!("running {args:?}: is {program} installed? (`cargo xtask setup`)")
        })?;
    if !out.status.success() {
        bail!(
            "{args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Deletes namespaces and bpffs mounts left by a bench process that no
/// longer exists (killed before its guards ran).
pub fn sweep_stale() {
    let alive = |pid: &str| Path::new("/proc").join(pid).exists();
    // Names look like natpmp-bench-<pid>-<tag>.
    let pid_of = |name: &str| -> Option<String> {
        let rest = name.strip_prefix(PREFIX)?.strip_prefix('-')?;
        Some(rest.split('-').next()?.to_owned())
    };
    if let Ok(entries) = fs::read_dir("/run/netns") {
        for e in entries.filter_map(Result::ok) {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(pid) = pid_of(&name) {
                if !alive(&pid) {
                    eprintln!("bench: removing stale namespace {name}");
                    let _ = sh(&["ip", "netns", "del", &name]);
                }
            }
        }
    }
    if let Ok(entries) = fs::read_dir("/run") {
        for e in entries.filter_map(Result::ok) {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(pid) = pid_of(&name) {
                if !alive(&pid) {
                    eprintln!("bench: removing stale bpffs /run/{name}");
                    let path = e.path();
                    let _ = Command::new("umount").arg(&path).status();
                    let _ = fs::remove_dir(&path);
                }
            }
        }
    }
}

/// A network namespace `natpmp-bench-<pid>-<tag>`, deleted (with its
/// interfaces, their XDP programs and nftables tables) on drop.
pub struct NetNs {
    pub name: String,
}

impl NetNs {
    pub fn new(tag: &str) -> Result<Self> {
        let name = format!("{PREFIX}-{}-{tag}", std::process::id());
        sh(&["ip", "netns", "add", &name])?;
        let ns = NetNs { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        // No IPv6 autoconfiguration chatter (router solicitations, DAD) on
        // the veths: the flood counts every frame the receiver sees.
        ns.exec(&["sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1"])?;
        ns.exec(&["sysctl", "-q", "-w", "net.ipv6.conf.default.disable_ipv6=1"])?;
        Ok(ns)
    }

    /// `ip -n <ns> ARGS`.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut v = vec!["ip", "-n", &self.name];
        v.extend_from_slice(args);
        sh(&v)
    }

    /// `ip netns exec <ns> ARGS`.
    pub fn exec(&self, args: &[&str]) -> Result<String> {
        let mut v = vec!["ip", "netns", "exec", &self.name];
        v.extend_from_slice(args);
        sh(&v)
    }

    /// Runs `f` on a thread that has entered this namespace (the thread
    /// inherits the caller's CPU affinity). `BPF_PROG_TEST_RUN` with live
    /// frames resolves redirect targets in the caller's namespace, and
    /// `Filter::attach` looks interfaces up there.
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
        let path = format!("/run/netns/{}", self.name);
        std::thread::scope(|s| {
            s.spawn(|| {
                let fd = File::open(&path).with_context(|| format!("opening {path}"))?;
                // SAFETY: `fd` is an open namespace file; setns only affects
                // this thread, which ends with the scope.
                let rc = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
                if rc != 0 {
                    bail!("setns into {path}: {}", std::io::Error::last_os_error());
                }
                f()
            })
            .join()
            .map_err(|_| anyhow!("the bench thread inside {path} panicked"))?
        })
    }

    /// The id of the XDP program attached to `dev` (`ip -j link show`).
    pub fn xdp_prog(&self, dev: &str) -> Result<(u32, String)> {
        let out = self.ip(&["-j", "link", "show", "dev", dev])?;
        let v: serde_json::Value =
            serde_json::from_str(&out).with_context(|| format!("parsing `ip -j link`: {out}"))?;
        let prog = &v[0]["xdp"]["prog"];
        let id = prog["id"]
            .as_u64()
            .and_then(|id| u32::try_from(id).ok())
            .with_context(|| format!("no XDP program attached to {dev} in {}", self.name))?;
        Ok((id, prog["name"].as_str().unwrap_or("?").to_owned()))
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

/// Two namespaces joined by a veth pair, with fixed MAC and IPv4 addresses:
/// `tx` holds the sending end, `rx` the receiving end (the "WAN interface").
pub struct VethPair {
    pub tx: NetNs,
    pub rx: NetNs,
    pub tx_dev: &'static str,
    pub rx_dev: &'static str,
}

pub const TX_MAC: [u8; 6] = [0x02, 0, 0, 0, 0xbe, 0x02];
pub const RX_MAC: [u8; 6] = [0x02, 0, 0, 0, 0xbe, 0x01];
pub const TX_ADDR: [u8; 4] = [198, 18, 0, 2];
pub const RX_ADDR: [u8; 4] = [198, 18, 0, 1];

fn mac(m: [u8; 6]) -> String {
    m.map(|b| format!("{b:02x}")).join(":")
}

fn ipv4(a: [u8; 4]) -> String {
    a.map(|b| b.to_string()).join(".")
}

impl VethPair {
    pub fn new(tag: &str) -> Result<Self> {
        let tx = NetNs::new(&format!("{tag}tx"))?;
        let rx = NetNs::new(&format!("{tag}rx"))?;
        let (tx_dev, rx_dev) = ("btx0", "brx0");
        sh(&[
            "ip",
            "link",
            "add",
            tx_dev,
            "netns",
            &tx.name,
            "address",
            &mac(TX_MAC),
            "type",
            "veth",
            "peer",
            "name",
            rx_dev,
            "netns",
            &rx.name,
            "address",
            &mac(RX_MAC),
        ])?;
        tx.ip(&[
            "addr",
            "add",
            &format!("{}/24", ipv4(TX_ADDR)),
            "dev",
            tx_dev,
        ])?;
        rx.ip(&[
            "addr",
            "add",
            &format!("{}/24", ipv4(RX_ADDR)),
            "dev",
            rx_dev,
        ])?;
        tx.ip(&["link", "set", tx_dev, "up"])?;
        rx.ip(&["link", "set", rx_dev, "up"])?;
        Ok(VethPair {
            tx,
            rx,
            tx_dev,
            rx_dev,
        })
    }
}

/// A bpffs mounted at `/run/natpmp-bench-<pid>`: the bench pins programs
/// there, and xdp-filter keeps its maps there (bind-mounted over
/// `/sys/fs/bpf` inside `ip netns exec`, which remounts `/sys`). Unmounting
/// it on drop releases every pin.
pub struct Bpffs {
    pub path: PathBuf,
}

impl Bpffs {
    pub fn new() -> Result<Self> {
        let path = PathBuf::from(format!("/run/{PREFIX}-{}", std::process::id()));
        fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        let p = path.to_string_lossy().into_owned();
        if let Err(e) = sh(&["mount", "-t", "bpf", "bpf", &p]) {
            let _ = fs::remove_dir(&path);
            return Err(e.context(format!("mounting a bpffs at {p}")));
        }
        Ok(Bpffs { path })
    }

    pub fn path_str(&self) -> String {
        self.path.to_string_lossy().into_owned()
    }
}

impl Drop for Bpffs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
        let _ = fs::remove_dir(&self.path);
    }
}

/// Pins the calling thread to `cpu` (threads it spawns inherit the mask).
pub fn pin_to_cpu(cpu: usize) -> Result<()> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET writes inside it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` is checked against the set's capacity by CPU_SET's callers
    // here: the bench only passes indices of online CPUs.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: pid 0 is the calling thread; `set` is a valid cpu_set_t.
    let rc = unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &raw const set) };
    if rc != 0 {
        bail!(
            "pinning the measuring thread to CPU {cpu} (sched_setaffinity): {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// Online CPUs (of the machine: not limited by this thread's affinity,
/// which the bench narrows to one CPU).
pub fn cpus() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    usize::try_from(n).unwrap_or(1).max(1)
}

/// CPU time this thread has used, in nanoseconds.
pub fn thread_cpu_ns() -> u128 {
    // SAFETY: a zeroed timespec is valid; clock_gettime writes into it.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: CLOCK_THREAD_CPUTIME_ID is always available on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &raw mut ts) };
    u128::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u128::try_from(ts.tv_nsec).unwrap_or(0)
}

impl VethPair {
    /// Switches threaded NAPI on or off for the receiving veth: on, its
    /// receive work runs in a kernel thread (`napi/brx0-N`) that can be
    /// pinned to another CPU than the sender's.
    pub fn set_threaded(&self, on: bool) -> Result<()> {
        let path = format!("/sys/class/net/{}/threaded", self.rx_dev);
        self.rx
            .exec(&["sh", "-c", &format!("echo {} > {path}", u8::from(on))])
            .with_context(|| format!("writing {path} (threaded NAPI, Linux 5.12+)"))?;
        Ok(())
    }

    /// Pins the receiving veth's NAPI threads to `cpu`; returns how many
    /// there were (none unless threaded NAPI is on and the veth's NAPI is
    /// enabled, i.e. an XDP program is attached).
    pub fn pin_napi_threads(&self, cpu: usize) -> Result<usize> {
        let prefix = format!("napi/{}-", self.rx_dev);
        let mut n = 0;
        for entry in fs::read_dir("/proc").context("listing /proc")? {
            let Ok(entry) = entry else { continue };
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|p| p.parse::<libc::pid_t>().ok())
            else {
                continue;
            };
            let comm = fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
            if !comm.trim_end().starts_with(&prefix) {
                continue;
            }
            // SAFETY: as in `pin_to_cpu`, for the kernel thread `pid`.
            let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
            // SAFETY: `cpu` is an online CPU's index.
            unsafe { libc::CPU_SET(cpu, &mut set) };
            // SAFETY: `set` is a valid cpu_set_t; a NAPI thread accepts
            // an affinity change.
            let rc = unsafe {
                libc::sched_setaffinity(pid, size_of::<libc::cpu_set_t>(), &raw const set)
            };
            if rc != 0 {
                bail!(
                    "pinning NAPI thread {pid} ({}) to CPU {cpu}: {}",
                    comm.trim_end(),
                    std::io::Error::last_os_error()
                );
            }
            n += 1;
        }
        Ok(n)
    }

    /// Frames the receiving veth took in (`rx_packets`; for a veth with XDP
    /// this counts every frame its XDP program saw, dropped or not).
    pub fn rx_packets(&self) -> Result<u64> {
        let out = self
            .rx
            .ip(&["-j", "-s", "link", "show", "dev", self.rx_dev])?;
        let v: serde_json::Value = serde_json::from_str(&out).context("parsing `ip -j -s link`")?;
        v[0]["stats64"]["rx"]["packets"]
            .as_u64()
            .with_context(|| format!("no rx packet count for {}: {out}", self.rx_dev))
    }
}
