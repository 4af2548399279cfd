//! The agent's own cost: the release agent attached in drop mode to the
//! receiving veth, reporting JSON every second, while the sender floods it;
//! CPU share from `/proc/<pid>/stat` (utime + stime) over the flood window
//! and peak RSS from `VmHWM` in `/proc/<pid>/status`.
//!
//! XDP work runs in softirq context on the CPU that receives (here: the
//! sender's), not in the agent: what this measures is the agent's own
//! userspace loop (map reads, formatting, writing), which is what an operator
//! pays for running it.

use std::{
    fs,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use nat_pmp_ebpf_common::SOURCES_MAX_ENTRIES;

use crate::{env::VethPair, flood::Sender, support::process::Agent};

pub struct AgentCost {
    pub hide_kernel_btf: bool,
    pub window_secs: f64,
    pub cpu_percent: f64,
    pub vm_hwm_kib: u64,
    pub reports: usize,
    pub frames: u64,
    /// Opcode-0 drops the agent's last report showed.
    pub reported_drops: Option<u64>,
    /// Sources in the table (`sources_tracked`) in its last report.
    pub reported_sources: Option<u64>,
}

fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat: did the agent exit?"))?;
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the whole line (proc(5)).
    let rest = stat
        .rsplit_once(')')
        .map(|x| x.1)
        .context("odd /proc/pid/stat")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11).and_then(|s| s.parse().ok()).context("no utime")?;
    let stime: u64 = f.get(12).and_then(|s| s.parse().ok()).context("no stime")?;
    Ok(utime + stime)
}

fn vm_hwm_kib(pid: u32) -> Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no VmHWM in /proc/pid/status")
}

pub fn measure(
    pair: &VethPair,
    agent: &Path,
    sender: &Sender,
    frame: &[u8],
    seconds: u64,
    hide_kernel_btf: bool,
) -> Result<AgentCost> {
    let mut cmd = if hide_kernel_btf {
        // In the private mount namespace `ip netns exec` makes: aya's
        // loader then finds no kernel BTF (the program needs none).
        let mut c = pair.rx.command("sh");
        c.args([
            "-c",
            "mount --bind /dev/null /sys/kernel/btf/vmlinux && exec \"$0\" \"$@\"",
        ])
        .arg(agent);
        c
    } else {
        pair.rx.command(agent)
    };
    cmd.args(["--iface", pair.rx_dev, "--drop", "--xdp-mode", "native"])
        .args(["--output", "json", "--interval", "1"])
        .args(["--duration", &(seconds + 6).to_string()]);
    let mut a = Agent::spawn(&mut cmd)?;
    // `ip netns exec` (and `sh`) exec the agent: same PID.
    let pid = a.proc.0.id();
    // Wait (bounded) for the agent to attach.
    let end = Instant::now() + Duration::from_secs(10);
    while pair.rx.xdp_prog(pair.rx_dev).is_err() {
        if Instant::now() > end {
            let _ = a.proc.0.kill();
            bail!(
                "the agent did not attach to {} within 10 s: {}",
                pair.rx_dev,
                a.stderr().trim()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // Fill the source table: one datagram from each of as many sources as
    // it holds, so that every report reads a full table.
    let mut fill = 0u64;
    for i in 0..u16::try_from(SOURCES_MAX_ENTRIES).unwrap_or(u16::MAX) {
        sender.send(pair, &crate::frames::opcode0_from(i), 1)?;
        fill += 1;
    }
    // Start-up (loading, verifying) is a one-off; measure the steady state.
    std::thread::sleep(Duration::from_millis(1500));
    let ticks0 = cpu_ticks(pid)?;
    let t0 = Instant::now();
    let mut frames = 0u64;
    // Bounded: by time, and by a chunk count far above what time allows.
    for _ in 0..10_000 {
        if t0.elapsed() >= Duration::from_secs(seconds) {
            break;
        }
        let n = 500_000;
        sender.send(pair, frame, n)?;
        frames += u64::from(n);
    }
    let ticks1 = cpu_ticks(pid)?;
    let window = t0.elapsed().as_secs_f64();
    let hwm = vm_hwm_kib(pid)?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    #[expect(clippy::cast_precision_loss, reason = "tick counts are small")]
    let cpu_secs = (ticks1 - ticks0) as f64 / hz as f64;
    // Let it print its last report after the flood, then end it; its
    // reports are all read once its stdout closes.
    std::thread::sleep(Duration::from_millis(1500));
    let Agent { proc, lines, .. } = a;
    drop(proc);
    let printed: Vec<serde_json::Value> = lines.iter().collect();
    let (reports, last) = (printed.len(), printed.last());
    let reported_drops = last
        .and_then(|v| v["counters"]["natpmp_external_address_request"]["dropped_packets"].as_u64())
        .map(|d| d.saturating_sub(fill));
    let reported_sources = last.and_then(|v| v["sources_tracked"].as_u64());
    Ok(AgentCost {
        hide_kernel_btf,
        window_secs: window,
        cpu_percent: cpu_secs / window * 100.0,
        vm_hwm_kib: hwm,
        reports,
        frames,
        reported_drops,
        reported_sources,
    })
}

/// What the agent said about a re-attach.
pub enum Reattached {
    /// Event to attached, of which the attach call (ms).
    Gap(f64, f64),
    /// Attached without a gap: its periodic check got there before it read
    /// the new-link event.
    ByCheck,
}

/// The agent's stderr line about a re-attach, if `line` is one.
pub fn reattached(line: &str) -> Option<Reattached> {
    if let Some((total, attach)) = parse(line) {
        return Some(Reattached::Gap(total, attach));
    }
    line.contains(": attached (ifindex")
        .then_some(Reattached::ByCheck)
}

/// `... 12.34 ms after its new-link event (11.90 ms of it attaching)`.
pub fn parse(line: &str) -> Option<(f64, f64)> {
    let (before, after) = line.split_once(" ms after its new-link event (")?;
    let total = before.rsplit(' ').next()?.parse().ok()?;
    let attach = after.split(' ').next()?.parse().ok()?;
    Some((total, attach))
}
