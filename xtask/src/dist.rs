//! `cargo xtask dist [--out DIR]`: the release folder for routers.
//!
//! Into DIR (default `target/dist`):
//! - `nat-pmp-agent-VERSION-x86_64-linux-musl` and `...-aarch64-linux-musl`:
//!   static agents with the XDP program embedded (the object is `bpfel`, the
//!   same bytes for both: aya-build builds it for `bpfel-unknown-none`
//!   whatever the agent's target). aarch64 is cross-built here with rust-lld
//!   and the target's self-contained musl CRT: no cross C toolchain;
//! - `nat-pmp-agent_VERSION-1_{amd64,arm64}.deb`: cargo-deb packages of those
//!   binaries with the unit (installed disabled, never started), the sample
//!   config (a conffile), the Grafana dashboard and Prometheus files, man
//!   pages and shell completions generated from the agent's clap
//!   definitions (`nat-pmp-agent dist-assets`, run from the host's binary);
//! - `SHA256SUMS` over all of them (`sha256sum -c SHA256SUMS` checks it).
//!
//! Every step is incremental (cargo's own), so a second run costs seconds.

use std::{
    fs,
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::{bail, Context as _, Result};

use crate::util::{cargo, cmd, exec, output, target_dir};

/// A release target: Rust's triple, Debian's architecture, and the name used
/// in the static binary's file name.
pub struct Target {
    pub triple: &'static str,
    pub deb_arch: &'static str,
    pub arch: &'static str,
}

/// What `dist` builds, in order. The first one that runs on the build host
/// generates the man pages and completions.
pub const TARGETS: [Target; 2] = [
    Target {
        triple: "x86_64-unknown-linux-musl",
        deb_arch: "amd64",
        arch: "x86_64",
    },
    Target {
        triple: "aarch64-unknown-linux-musl",
        deb_arch: "arm64",
        arch: "aarch64",
    },
];

/// The workspace version (xtask shares it with the agent).
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Where `dist` writes unless `--out` says otherwise.
pub fn default_out() -> PathBuf {
    target_dir().join("dist")
}

/// The environment variable naming the linker of a target, for cargo.
fn linker_var(triple: &str) -> String {
    format!(
        "CARGO_TARGET_{}_LINKER",
        triple.to_uppercase().replace('-', "_")
    )
}

/// Builds the static agent for `t` (release). aarch64 links with rust-lld
/// (rustc's own, with the target's self-contained musl objects); `x86_64` keeps
/// the linker `cargo xtask build --static` has always used.
fn build(t: &Target) -> Result<PathBuf> {
    let mut c = cargo();
    c.args([
        "build",
        "--release",
        "-p",
        "nat-pmp-agent",
        "--target",
        t.triple,
    ]);
    if t.arch != std::env::consts::ARCH {
        c.env(linker_var(t.triple), "rust-lld");
    }
    exec(&mut c).with_context(|| {
        format!(
            "building the static agent for {} (the target comes from `cargo xtask setup`)",
            t.triple
        )
    })?;
    Ok(release_dir(t).join("nat-pmp-agent"))
}

fn release_dir(t: &Target) -> PathBuf {
    target_dir().join(t.triple).join("release")
}

/// Copies `from` (a tree of files) to `to`, replacing what `to` held.
fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    if to.exists() {
        fs::remove_dir_all(to).with_context(|| format!("removing {}", to.display()))?;
    }
    fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    for entry in fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry.with_context(|| format!("reading {}", from.display()))?;
        let dest = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &dest)?;
        } else {
            fs::copy(entry.path(), &dest).with_context(|| {
                format!("copying {} to {}", entry.path().display(), dest.display())
            })?;
        }
    }
    Ok(())
}

pub fn dist(out: &Path) -> Result<()> {
    let started = Instant::now();
    let mut binaries = Vec::new();
    for t in &TARGETS {
        binaries.push((t, build(t)?));
    }
    let (_, host_bin) = binaries
        .iter()
        .find(|(t, _)| t.arch == std::env::consts::ARCH)
        .with_context(|| {
            format!(
                "no release target runs on this {} host to generate the man pages and \
                 completions; build the packages on x86_64 or aarch64",
                std::env::consts::ARCH
            )
        })?;
    let assets = target_dir().join("dist-assets");
    if assets.exists() {
        fs::remove_dir_all(&assets).with_context(|| format!("removing {}", assets.display()))?;
    }
    exec(cmd(host_bin).arg("dist-assets").arg("--out").arg(&assets))
        .context("generating the man pages and shell completions")?;
    // Debian installs man pages compressed (-n: no name or time stamp, so
    // the same pages give the same bytes).
    let pages: Vec<PathBuf> = fs::read_dir(assets.join("man"))
        .context("reading the generated man pages")?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    exec(cmd("gzip").args(["-9", "-n", "-f"]).args(&pages)).context("compressing the man pages")?;

    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    // Leave nothing of an earlier version behind: SHA256SUMS covers the folder.
    for entry in fs::read_dir(out).with_context(|| format!("reading {}", out.display()))? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with("nat-pmp-agent") || name == "SHA256SUMS" {
            fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
    }
    let mut files = Vec::new();
    for (t, bin) in &binaries {
        // cargo-deb reads `target/release/dist-assets/...` as
        // target/<triple>/release/dist-assets/...
        copy_tree(&assets, &release_dir(t).join("dist-assets"))?;
        let name = format!("nat-pmp-agent-{VERSION}-{}-linux-musl", t.arch);
        fs::copy(bin, out.join(&name))
            .with_context(|| format!("copying {} into {}", bin.display(), out.display()))?;
        files.push(name);
        // --no-strip: the release profile already leaves no debug info,
        // and the host's strip cannot read an aarch64 binary.
        exec(
            cargo()
                .args(["deb", "-p", "nat-pmp-agent", "--no-build", "--no-strip"])
                .args(["--target", t.triple, "--output"])
                .arg(out),
        )
        .with_context(|| {
            format!(
                "packaging {} with cargo-deb (installed by `cargo xtask setup`)",
                t.deb_arch
            )
        })?;
        let deb = format!("nat-pmp-agent_{VERSION}-1_{}.deb", t.deb_arch);
        if !out.join(&deb).exists() {
            bail!(
                "cargo-deb did not write {} (the name dist expects)",
                out.join(&deb).display()
            );
        }
        files.push(deb);
    }
    let sums = output(cmd("sha256sum").args(&files).current_dir(out))
        .context("checksumming the release files (coreutils' sha256sum)")?;
    fs::write(out.join("SHA256SUMS"), sums)
        .with_context(|| format!("writing {}", out.join("SHA256SUMS").display()))?;
    eprintln!(
        "xtask: dist: {} files and SHA256SUMS in {} ({:.0} s)",
        files.len(),
        out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
