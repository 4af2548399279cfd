//! `cargo xtask demo`: the filter on a throwaway veth "WAN" link.
//!
//! Two network namespaces joined by a veth pair stand for a router (its WAN
//! interface `wan0`, 198.18.0.1) and the internet (`inet0`, 198.18.0.2;
//! 198.18.0.0/15 is the benchmarking range, never routed). The agent attaches
//! to `wan0`, the internet side sends a bounded scan in the honeypot's mix
//! with `nat-pmp-agent probe`, and the agent's live view (on a terminal;
//! plain tables otherwise) shows the counters. The namespaces are deleted at
//! the end, on error, and on Ctrl-C.

use std::{
    io::IsTerminal as _,
    process::{Child, Command},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};

use crate::util::{agent_binary, cmd, exec};

const ROUTER: &str = "natpmp-demo-router";
const INTERNET: &str = "natpmp-demo-inet";
/// Probes per second the demo's scanner sends.
const RATE: u32 = 200;

/// Deletes the demo's namespaces (and with them the veth pair) on drop.
struct Namespaces;

impl Namespaces {
    fn create() -> Result<Self> {
        // Leftovers of an interrupted run go first.
        Self::delete();
        let guard = Namespaces;
        for ns in [ROUTER, INTERNET] {
            exec(cmd("ip").args(["netns", "add", ns]))?;
        }
        exec(
            cmd("ip")
                .args(["link", "add", "wan0", "netns", ROUTER, "type", "veth"])
                .args(["peer", "name", "inet0", "netns", INTERNET]),
        )?;
        for (ns, dev, addr) in [
            (ROUTER, "wan0", "198.18.0.1/24"),
            (INTERNET, "inet0", "198.18.0.2/24"),
        ] {
            exec(cmd("ip").args(["-n", ns, "addr", "add", addr, "dev", dev]))?;
            exec(cmd("ip").args(["-n", ns, "link", "set", dev, "up"]))?;
            exec(cmd("ip").args(["-n", ns, "link", "set", "lo", "up"]))?;
        }
        Ok(guard)
    }

    fn delete() {
        for ns in [ROUTER, INTERNET] {
            let _ = cmd("ip")
                .args(["netns", "del", ns])
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        Self::delete();
    }
}

/// Ends the child it holds (by its PID, SIGINT then SIGKILL) on drop.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = cmd("kill")
                .args(["-INT", &self.0.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline && matches!(self.0.try_wait(), Ok(None)) {
                thread::sleep(Duration::from_millis(50));
            }
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

pub fn demo(seconds: u32, monitor: bool) -> Result<()> {
    let agent = agent_binary()?;
    // Ctrl-C reaches the agent and the scanner too (same process group); the
    // demo itself keeps going so that it can clean up.
    let interrupted = Arc::new(AtomicBool::new(false));
    {
        let flag = Arc::clone(&interrupted);
        ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
            .context("installing the Ctrl-C handler")?;
    }
    let _ns = Namespaces::create().context("creating the demo's namespaces")?;

    let mut agent_cmd = Command::new("ip");
    agent_cmd.args(["netns", "exec", ROUTER]).arg(&agent).args([
        "--iface",
        "wan0",
        "--interval",
        "1",
        // The live view on a terminal (`q` ends the agent early), plain
        // tables otherwise (not JSON lines: the demo is read by people).
        "--output",
        if std::io::stdout().is_terminal() {
            "auto"
        } else {
            "table"
        },
    ]);
    if !monitor {
        agent_cmd.arg("--drop");
    }
    agent_cmd.args(["--duration", &(seconds + 3).to_string()]);
    let mut agent_proc = Reaped(
        agent_cmd
            .spawn()
            .context("starting the agent in the router namespace")?,
    );
    thread::sleep(Duration::from_millis(1500));
    if let Ok(Some(status)) = agent_proc.0.try_wait() {
        anyhow::bail!("the agent exited before the scan started: {status}");
    }

    let count = u64::from(seconds) * u64::from(RATE);
    let scan = Command::new("ip")
        .args(["netns", "exec", INTERNET])
        .arg(&agent)
        .args(["probe", "198.18.0.1", "--count", &count.to_string()])
        .args(["--rate", &RATE.to_string(), "--wait", "0.5"])
        .output()
        .context("running the scanner (nat-pmp-agent probe) in the internet namespace")?;
    let status = agent_proc.0.wait().context("waiting for the agent")?;
    println!("\nThe scanner's view (nat-pmp-agent probe 198.18.0.1 in the internet namespace):");
    print!("{}", String::from_utf8_lossy(&scan.stdout));
    eprint!("{}", String::from_utf8_lossy(&scan.stderr));
    if interrupted.load(Ordering::SeqCst) {
        println!("interrupted; cleaning up");
    }
    if !status.success() {
        anyhow::bail!("the agent failed: {status}");
    }
    println!("namespaces {ROUTER} and {INTERNET} removed; nothing is left attached");
    Ok(())
}
