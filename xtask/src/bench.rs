//! `cargo xtask bench`: builds the release agent, then runs the benchmark
//! binary (`nat-pmp-agent/benches/xdp`, through `cargo bench`) as root, which
//! measures and writes BENCHMARKS.md at the workspace root. Not part of
//! `cargo xtask test`: it takes a few minutes and its numbers are a report,
//! not a pass/fail gate. With `--cost-only` the bench prints the per-packet
//! table and writes nothing: BENCHMARKS.md is neither passed nor touched.

use anyhow::Result;

use crate::util::{agent_binary, cargo, exec, workspace_root};

pub fn bench(extra: &[String]) -> Result<()> {
    let cost_only = extra.iter().any(|a| a == "--cost-only");
    let output = workspace_root().join("BENCHMARKS.md");
    let mut cmd = cargo();
    cmd.args(["bench", "-p", "nat-pmp-agent", "--bench", "xdp", "--"]);
    if !cost_only {
        cmd.arg("--agent")
            .arg(agent_binary()?)
            .arg("--output")
            .arg(&output);
    }
    exec(cmd.args(extra))?;
    if !cost_only {
        eprintln!("xtask: wrote {}", output.display());
    }
    Ok(())
}
