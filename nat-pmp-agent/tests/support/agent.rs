//! The agent binary as the tests run it: in the background reporting JSON
//! every 0.1 s ([`Agent::start`], [`Agent::stop`]) or to completion
//! ([`run_agent`], [`agent_ok`], [`status_json`]). Every call panics with
//! what went wrong: these are test steps.

use std::{
    process::{Output, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

use super::{bpffs::Bpffs, netns::NetNs, process::Agent, schema, wan::WanLink};

/// The agent binary cargo built for these tests.
pub const AGENT: &str = env!("CARGO_BIN_EXE_nat-pmp-agent");

/// What a stopped agent left: its final report and its stderr.
pub struct Stopped {
    pub report: Value,
    pub stderr: String,
}

impl Agent {
    /// Starts the agent in `ns` (`--output json --interval 0.1` added) and
    /// waits for its first report (the program is loaded and attached by
    /// then).
    pub fn start(ns: &NetNs, args: &[&str]) -> Agent {
        let mut agent = Agent::spawn(ns.command(AGENT).args(args).args([
            "--output",
            "json",
            "--interval",
            "0.1",
        ]))
        .unwrap_or_else(|e| panic!("{e:#}"));
        if agent.lines.recv_timeout(Duration::from_secs(20)).is_err() {
            if agent.proc.wait_for(Duration::from_secs(1)).is_none() {
                let _ = agent.proc.0.kill();
            }
            panic!("no report from the agent: {}", agent.stderr());
        }
        agent
    }

    /// The first report whose total reaches `packets` (or the last one seen
    /// within 10 s); every report read is checked against the schema.
    pub fn wait_for_total(&self, packets: u64) -> Value {
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            let r = self
                .lines
                .recv_timeout(Duration::from_secs(5))
                .expect("no report from the agent in time");
            schema::assert_valid(&r);
            if r["total"]["packets"].as_u64() >= Some(packets) || Instant::now() > end {
                return r;
            }
        }
    }

    /// Sends `sig`, expects a clean exit and a final report (in the
    /// report schema).
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
        schema::assert_valid(&report);
        assert_eq!(
            report["final"], true,
            "the last report must be marked final"
        );
        Stopped { report, stderr }
    }
}

/// Runs `nat-pmp-agent ARGS` in `ns` to completion (stdin closed).
pub fn agent_output(ns: &NetNs, args: &[&str]) -> Output {
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

/// The last report of a run to completion with `--output json`, checked
/// against the report schema.
pub fn last_report(stdout: &str) -> Value {
    let report = serde_json::from_str(stdout.lines().last().expect("a report")).expect("JSON");
    schema::assert_valid(&report);
    report
}

/// `nat-pmp-agent status --json --pin-dir PIN_ROOT` in `ns`.
pub fn status_json(ns: &NetNs, pin_root: &str) -> Value {
    let out = agent_ok(ns, &["status", "--json", "--pin-dir", pin_root]);
    serde_json::from_str(out.trim()).expect("status JSON")
}

/// `nat-pmp-agent detach --iface wan0 --pin-dir PIN_ROOT` in `ns`, which
/// must succeed; its stdout.
pub fn detach_wan0(ns: &NetNs, pin_root: &str) -> String {
    agent_ok(ns, &["detach", "--iface", "wan0", "--pin-dir", pin_root])
}

/// A [`WanLink`] tagged `tag`, a [`Bpffs`] for the agent's pins and the pin
/// root to pass as `--pin-dir`. Keep the bpffs (as `_bpffs` if unused) to
/// the end of the test: dropping it unmounts the pins.
pub fn pinned_wan(tag: &str) -> (WanLink, Bpffs, String) {
    let link = WanLink::new(tag);
    let bpffs = Bpffs::new(tag).expect("mounting a bpffs");
    let root = bpffs.pin_root();
    (link, bpffs, root)
}

impl Bpffs {
    /// The pin root to pass as `--pin-dir`.
    pub fn pin_root(&self) -> String {
        self.path.join("pins").display().to_string()
    }
}
