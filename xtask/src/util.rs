//! Running commands with context, and where things are.

use std::{
    ffi::OsStr,
    path::PathBuf,
    process::{Command, Stdio},
};

use anyhow::{bail, Context as _, Result};

/// A command for `program`.
pub fn cmd(program: impl AsRef<OsStr>) -> Command {
    Command::new(program)
}

/// `cargo` as the one running xtask (same toolchain).
pub fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Runs `cmd` with inherited stdio; fails on a non-zero exit.
pub fn exec(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("failed to run {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

/// Runs `cmd` and returns its stdout; fails on a non-zero exit.
pub fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("failed to run {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", out.status);
    }
    String::from_utf8(out.stdout).with_context(|| format!("{cmd:?} printed non-UTF-8"))
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    // `id -u` avoids a libc dependency for one call.
    output(cmd("id").arg("-u")).is_ok_and(|s| s.trim() == "0")
}

/// Fails with a clear message unless running as root.
pub fn require_root(what: &str) -> Result<()> {
    if !is_root() {
        bail!(
            "{what} needs root (loading XDP programs, creating network namespaces); \
             run it as root, e.g. `sudo -E env PATH=$PATH cargo xtask ...`"
        );
    }
    Ok(())
}

/// The workspace root (xtask lives one level below it).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), PathBuf::from)
}

/// Cargo's target directory (`CARGO_TARGET_DIR` or the workspace's).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace_root().join("target"), PathBuf::from)
}

/// The release agent binary, which `build` produces.
pub fn agent_binary() -> Result<PathBuf> {
    let bin = target_dir().join("release").join("nat-pmp-agent");
    if !bin.exists() {
        bail!("{} is missing; run `cargo xtask build`", bin.display());
    }
    Ok(bin)
}
