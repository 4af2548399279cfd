//! The re-attach gap: a WAN interface deleted and created again (a PPPoE
//! reconnect), the agent running in drop mode. For each return the agent
//! itself reports, on stderr, the time from the kernel's new-link event (as
//! its rtnetlink socket read it) to the filter attached again, and how much
//! of that was the attach itself (`BPF_LINK_CREATE`).

use std::{
    fmt::Write as _,
    io::BufRead as _,
    path::Path,
    process::{Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use anyhow::{bail, Context as _, Result};

use crate::env::{sh, NetNs};

/// One XDP mode's re-attach gaps, in milliseconds.
pub struct Gaps {
    pub xdp_mode: &'static str,
    /// Event to attached.
    pub total_ms: Vec<f64>,
    /// Of which the attach call.
    pub attach_ms: Vec<f64>,
}

fn make_wan(router: &NetNs, inet: &NetNs) -> Result<()> {
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
        &inet.name,
    ])?;
    router.ip(&["addr", "add", "198.18.0.1/24", "dev", "wan0"])?;
    inet.ip(&["addr", "add", "198.18.0.2/24", "dev", "inet0"])?;
    router.ip(&["link", "set", "wan0", "up"])?;
    inet.ip(&["link", "set", "inet0", "up"])?;
    Ok(())
}

/// `... 12.34 ms after its new-link event (11.90 ms of it attaching)`.
fn parse(line: &str) -> Option<(f64, f64)> {
    let (before, after) = line.split_once(" ms after its new-link event (")?;
    let total = before.rsplit(' ').next()?.parse().ok()?;
    let attach = after.split(' ').next()?.parse().ok()?;
    Some((total, attach))
}

/// Deletes and re-creates `wan0` `rounds` times under a running agent.
pub fn measure(agent: &Path, xdp_mode: &'static str, rounds: usize) -> Result<Gaps> {
    let router = NetNs::new("rar")?;
    let inet = NetNs::new("rai")?;
    make_wan(&router, &inet)?;
    let mut child = Command::new("ip")
        .args(["netns", "exec", &router.name])
        .arg(agent)
        .args(["--iface", "wan0", "--drop", "--xdp-mode", xdp_mode])
        .args(["--output", "json", "--interval", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting the agent")?;
    let stderr = child.stderr.take().context("the agent's stderr")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let result = (|| {
        // Let it load and attach the first time.
        std::thread::sleep(Duration::from_secs(2));
        let mut gaps = Gaps {
            xdp_mode,
            total_ms: Vec::new(),
            attach_ms: Vec::new(),
        };
        for _ in 0..rounds {
            router.ip(&["link", "del", "wan0"])?;
            std::thread::sleep(Duration::from_millis(200));
            make_wan(&router, &inet)?;
            let got = loop {
                let line = rx
                    .recv_timeout(Duration::from_secs(5))
                    .context("the agent reported no re-attach within 5 s")?;
                if let Some(g) = parse(&line) {
                    break g;
                }
            };
            gaps.total_ms.push(got.0);
            gaps.attach_ms.push(got.1);
            std::thread::sleep(Duration::from_millis(200));
        }
        if gaps.total_ms.len() != rounds {
            bail!("fewer re-attaches than rounds");
        }
        Ok(gaps)
    })();
    // SAFETY: kill has no memory preconditions; the PID is our child's.
    unsafe { libc::kill(i32::try_from(child.id()).unwrap_or(0), libc::SIGTERM) };
    let _ = child.wait();
    result
}

/// The Markdown section for BENCHMARKS.md.
pub fn render(gaps: &[Gaps], rcu_expedited: Option<&[Gaps]>) -> String {
    let stat = |v: &[f64]| {
        let mut s = v.to_vec();
        s.sort_by(f64::total_cmp);
        let med = s.get(s.len() / 2).copied().unwrap_or(f64::NAN);
        let max = s.last().copied().unwrap_or(f64::NAN);
        (med, max)
    };
    let mut out = String::from(
        "## Re-attach gap (an interface deleted and created again)\n\n\
         `wan0` (veth) deleted and created again under an agent in drop mode, as a PPPoE \
         reconnect does; the agent reports each re-attach on stderr: the time from the \
         kernel's new-link event (as its rtnetlink socket read it) to the filter attached \
         again, and how much of that the attach call (`BPF_LINK_CREATE`) took.\n\n\
         | XDP mode | rounds | event -> attached, median / max (ms) | of which the attach call (ms) | the agent's own part (ms) |\n\
         |---|---:|---:|---:|---:|\n",
    );
    let mut rows = |g: &Gaps, note: &str| {
        let (tm, tx) = stat(&g.total_ms);
        let (am, ax) = stat(&g.attach_ms);
        let own: Vec<f64> = g
            .total_ms
            .iter()
            .zip(&g.attach_ms)
            .map(|(t, a)| t - a)
            .collect();
        let (om, ox) = stat(&own);
        let _ = writeln!(
            out,
            "| {}{note} | {} | {tm:.2} / {tx:.2} | {am:.2} / {ax:.2} | {om:.2} / {ox:.2} |",
            g.xdp_mode,
            g.total_ms.len()
        );
    };
    for g in gaps {
        rows(g, "");
    }
    for g in rcu_expedited.unwrap_or_default() {
        rows(g, " (`rcu_expedited` = 1)");
    }
    out.push('\n');
    out
}
