//! Builds the XDP program (`nat-pmp-ebpf`) for `bpfel-unknown-none` and puts
//! the object into `OUT_DIR`, where `src/ebpf.rs` embeds it. This is what
//! lets a plain `cargo build --release -p nat-pmp-agent` produce a complete
//! agent, as aya-template does.

use std::process::Command;

use anyhow::{bail, Context as _};

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=PATH");
    // aya-build's own error for a missing linker is a wall of cargo output;
    // say what is wrong and how to fix it first.
    let linker_ok = Command::new("bpf-linker")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !linker_ok && std::env::var_os("AYA_BUILD_SKIP").is_none() {
        bail!(
            "bpf-linker was not found on PATH (or does not run): it links the XDP program. \
             Run `cargo xtask setup` once to install it (with the nightly toolchain's rust-src), \
             then build again."
        );
    }
    let cargo_metadata::Metadata { packages, .. } = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("reading cargo metadata to find the nat-pmp-ebpf package")?;
    let ebpf = packages
        .into_iter()
        .find(|p| p.name.as_str() == "nat-pmp-ebpf")
        .context("the nat-pmp-ebpf package is missing from the workspace")?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .context("nat-pmp-ebpf's manifest has no parent directory")?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: ebpf.name.as_str(),
            root_dir: root_dir.as_str(),
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
    .context("building the XDP program nat-pmp-ebpf (needs `cargo xtask setup` once)")?;
    if std::env::var_os("CARGO_FEATURE_TEST_LAYOUTS").is_some() {
        previous_layout(ebpf.name.as_str(), root_dir.as_str())?;
    }
    Ok(())
}

/// Test-only (`--features test-layouts`): the same program built with
/// nat-pmp-ebpf's `previous-layout` feature (the pinned layout before this
/// one) into `OUT_DIR/previous`, where `bpf/object.rs` embeds it for the
/// upgrade tests. aya-build writes into `OUT_DIR`, so it is pointed at the
/// subfolder for this one build (its own cargo target dir comes with it).
fn previous_layout(name: &str, root_dir: &str) -> anyhow::Result<()> {
    let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").context("OUT_DIR not set")?);
    let sub = out.join("previous");
    std::fs::create_dir_all(&sub).with_context(|| format!("creating {}", sub.display()))?;
    std::env::set_var("OUT_DIR", &sub);
    let built = aya_build::build_ebpf(
        [aya_build::Package {
            name,
            root_dir,
            features: &["previous-layout"],
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    );
    std::env::set_var("OUT_DIR", &out);
    built.context("building nat-pmp-ebpf with the previous layout (test-layouts)")
}
