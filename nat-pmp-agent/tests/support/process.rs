//! Processes: whether this one runs as root ([`is_root`]), commands run to
//! completion ([`sh`]), children ended on drop by their own PID ([`Proc`]),
//! and the agent as such a child, its JSON reports and its stderr lines
//! read as they come ([`Agent`]).

use std::{
    io::{BufRead as _, BufReader},
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc::{self, Receiver},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use serde_json::Value;

/// Whether this process runs as root: the tests and the bench load XDP
/// programs and build network namespaces.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Runs a command (stdin closed) to completion and returns its stdout;
/// fails with its stderr.
pub fn sh(args: &[&str]) -> Result<String> {
    let (program, rest) = args.split_first().context("empty command")?;
    let out = Command::new(program)
        .args(rest)
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

/// A child process, ended on drop (SIGTERM, then SIGKILL) by its own PID.
pub struct Proc(pub Child);

impl Proc {
    pub fn signal(&self, sig: i32) {
        let pid = i32::try_from(self.0.id()).expect("pid fits i32");
        // SAFETY: kill has no memory preconditions; the PID is our child's,
        // not yet reaped.
        unsafe { libc::kill(pid, sig) };
    }

    /// Waits up to `limit` for the child to exit.
    pub fn wait_for(&mut self, limit: Duration) -> Option<ExitStatus> {
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

/// A running agent (`--output json`), ended by its PID on drop: its
/// reports arrive on `lines` and its stderr on `said`, a line at a time,
/// as it writes them.
pub struct Agent {
    pub proc: Proc,
    /// Its stdout, one JSON report a line.
    pub lines: Receiver<Value>,
    /// Its stderr lines.
    pub said: Receiver<String>,
}

impl Agent {
    /// Spawns `cmd`: the agent, in a namespace (`ip netns exec` and any
    /// wrapper before it exec it, or pass signals on: [`Proc`] signals the
    /// PID it started), stdin closed, stdout and stderr read by threads.
    pub fn spawn(cmd: &mut Command) -> Result<Agent> {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting the agent: {cmd:?}"))?;
        let stdout = child.stdout.take().context("the agent's stdout")?;
        let stderr = child.stderr.take().context("the agent's stderr")?;
        let proc = Proc(child);
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let v: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("agent printed a non-JSON line {line:?}: {e}"));
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        let (tx, said) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Agent { proc, lines, said })
    }

    /// What the agent wrote on stderr and nobody read from `said` yet, up to
    /// its exit: call it once the agent has exited (or it waits for that).
    pub fn stderr(&self) -> String {
        self.said.iter().map(|l| l + "\n").collect()
    }
}
