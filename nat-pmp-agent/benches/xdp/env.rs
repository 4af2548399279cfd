//! The bench's own sandbox, on the guards the tests use too
//! (`tests/support`): network namespaces without IPv6 chatter, a veth pair
//! with fixed addresses, a private bpffs, the agent's stderr read line by
//! line, CPU pinning. Every guard removes what it made on drop, so an error
//! or a panic half-way still cleans up; stale leftovers of a bench that was
//! killed are swept at start (only ours: names carry a dead PID).

use std::{
    fs,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use crate::support::{
    bpffs::Bpffs,
    netns::{veth, NetNs, VethEnd},
    process::{sh, Agent},
};

/// The tag of every namespace and bpffs this bench creates: their names are
/// `natpmp-bench[-<tag>]-<pid>-<n>` (`support::netns::unique_name`).
const TAG: &str = "bench";

/// Deletes namespaces and bpffs mounts left by a bench process that no
/// longer exists (killed before its guards ran).
pub fn sweep_stale() {
    let alive = |pid: &str| Path::new("/proc").join(pid).exists();
    // The PID is the second-to-last part of the name.
    let pid_of = |name: &str| -> Option<String> {
        name.strip_prefix(&format!("natpmp-{TAG}-"))?;
        let pid = name.rsplit('-').nth(1)?;
        pid.parse::<u32>().is_ok().then(|| pid.to_owned())
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

/// A network namespace `natpmp-bench-<tag>-...` without IPv6: no
/// autoconfiguration chatter (router solicitations, DAD) on its veths, as
/// the flood counts every frame the receiver sees.
pub fn netns(tag: &str) -> Result<NetNs> {
    let ns = NetNs::new(&format!("{TAG}-{tag}"))?;
    ns.exec(&["sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1"])?;
    ns.exec(&["sysctl", "-q", "-w", "net.ipv6.conf.default.disable_ipv6=1"])?;
    Ok(ns)
}

/// The bench's bpffs, `/run/natpmp-bench-...`: the bench pins programs
/// there, and xdp-filter keeps its maps there.
pub fn bpffs() -> Result<Bpffs> {
    Bpffs::new(TAG)
}

impl NetNs {
    /// `ip netns exec <ns> ARGS`, to completion; its stdout.
    pub fn exec(&self, args: &[&str]) -> Result<String> {
        let mut v = vec!["ip", "netns", "exec", &self.name];
        v.extend_from_slice(args);
        sh(&v)
    }
}

impl Agent {
    /// The first stderr line (from now) that `want` picks, within `limit`.
    pub fn wait_line<T>(
        &self,
        what: &str,
        limit: Duration,
        mut want: impl FnMut(&str) -> Option<T>,
    ) -> Result<T> {
        let end = Instant::now() + limit;
        let mut seen = Vec::new();
        loop {
            let left = end.saturating_duration_since(Instant::now());
            let Ok(line) = self.said.recv_timeout(left) else {
                bail!(
                    "the agent did not say {what} within {limit:?} (or exited); it said: {seen:?}"
                );
            };
            if let Some(v) = want(&line) {
                return Ok(v);
            }
            seen.push(line);
        }
    }

    /// Discards the stderr lines read so far.
    pub fn discard_said(&self) {
        while self.said.try_recv().is_ok() {}
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

fn ipv4(a: [u8; 4]) -> String {
    a.map(|b| b.to_string()).join(".")
}

impl VethPair {
    pub fn new(tag: &str) -> Result<Self> {
        let tx = netns(&format!("{tag}tx"))?;
        let rx = netns(&format!("{tag}rx"))?;
        let (tx_dev, rx_dev) = ("btx0", "brx0");
        veth(
            &VethEnd {
                ns: &tx,
                dev: tx_dev,
                addr: &ipv4(TX_ADDR),
                mac: Some(TX_MAC),
            },
            &VethEnd {
                ns: &rx,
                dev: rx_dev,
                addr: &ipv4(RX_ADDR),
                mac: Some(RX_MAC),
            },
        )?;
        Ok(VethPair {
            tx,
            rx,
            tx_dev,
            rx_dev,
        })
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
