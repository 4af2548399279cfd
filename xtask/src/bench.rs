//! `cargo xtask bench`: builds the release agent, then runs the benchmark
//! binary (`nat-pmp-agent/benches/xdp`, through `cargo bench`) as root, which
//! measures and writes BENCHMARKS.md at the workspace root. Not part of
//! `cargo xtask test`: it takes a few minutes and its numbers are a report,
//! not a pass/fail gate.

use anyhow::Result;

use crate::util::{agent_binary, cargo, exec, workspace_root};

pub fn bench(extra: &[String]) -> Result<()> {
    let output = workspace_root().join("BENCHMARKS.md");
    exec(
        cargo()
            .args(["bench", "-p", "nat-pmp-agent", "--bench", "xdp", "--"])
            .arg("--agent")
            .arg(agent_binary()?)
            .arg("--output")
            .arg(&output)
            .args(extra),
    )?;
    eprintln!("xtask: wrote {}", output.display());
    Ok(())
}
