//! `cargo xtask setup`: makes a fresh machine ready, idempotently.
//!
//! 1. nightly `rust-src` (for `-Z build-std=core`) and `clippy`;
//! 2. bpf-linker built against the nightly rustc's own shared libLLVM: no
//!    distribution ships the LLVM major a nightly uses, but the nightly
//!    toolchain carries it as `lib/libLLVM.so.<ver>-rust-<ver>`, and
//!    bpf-linker links `$LLVM_PREFIX/lib/libLLVM.so` dynamically. The prefix
//!    holds two symlinks to that file and must stay where it is (its path is
//!    the binary's rpath);
//! 3. cargo-fuzz (the test suite runs a short fuzz session); cargo-mutants
//!    (pinned) is installed by `cargo xtask mutants` when it first runs, not
//!    here: the test run does not need it;
//! 4. the musl targets of `cargo xtask dist` (`x86_64`, `aarch64`: rust-lld links
//!    them with the targets' self-contained CRT, no cross C toolchain) and
//!    cargo-deb, which packages them;
//! 5. the Debian packages the tests use (services they ship are not
//!    started: the tests run their own instances in their namespaces).
//!
//! Each step checks first and does nothing when it is already done.

use std::{fs, path::PathBuf};

use anyhow::{bail, Context as _, Result};

use crate::util::{cmd, exec, is_root, output};

/// bpf-linker release known to work with the pinned aya family.
const BPF_LINKER_VERSION: &str = "0.13.0";

/// cargo-deb release that builds with the stable rustc here (1.95; it needs
/// 1.85), installed `--locked`.
const CARGO_DEB_VERSION: &str = "3.8.0";

/// Debian packages the test suite and demo use, with why.
const PACKAGES: &[(&str, &str)] = &[
    (
        "iproute2",
        "ip: network namespaces and veth pairs for the end-to-end tests and the demo",
    ),
    ("util-linux", "setpriv: the unprivileged-start test"),
    (
        "coreutils",
        "timeout and stdbuf: every external command in the real-peer tests is bounded",
    ),
    (
        "miniupnpd",
        "a real NAT-PMP/PCP gateway for the real-peer tests (run by the tests in \
         their own namespace; never started as a service, see DEBCONF_SELECTIONS)",
    ),
    (
        "miniupnpd-nftables",
        "miniupnpd's nftables backend (rather than the iptables one)",
    ),
    (
        "nftables",
        "nft: the chains miniupnpd fills with its mappings, and reading them; \
         the netfilter drop rules `cargo xtask bench` measures against",
    ),
    (
        "nmap",
        "the scanner, with its nat-pmp-info and nat-pmp-mapport scripts",
    ),
    (
        "natpmpc",
        "libnatpmp's NAT-PMP client, on the WAN and the LAN side",
    ),
    (
        "tshark",
        "Wireshark's NAT-PMP and Port Control dissectors (the referee for the counters); \
         tshark/dumpcap also capture real client traffic for the replay tests",
    ),
    (
        "xdp-tools",
        "xdp-filter: the alternative XDP filter `cargo xtask bench` measures against",
    ),
    (
        "bpftool",
        "bpftool prog pin: the bench pins xdp-filter's program to test-run it",
    ),
    (
        "qemu-user-static",
        "qemu-aarch64-static: the dist tests run the aarch64 agent (--version, --help, probe)",
    ),
    (
        "prometheus",
        "the Prometheus server and promtool: the fleet tests run a real Prometheus in their own \
         namespace against the agents and unit-test the alert rules (installed with service \
         starts refused and the unit disabled: see install_without_starting)",
    ),
];

/// Packages that ship a service which must not run on this machine: the
/// tests start their own instance inside a test namespace.
const NO_SERVICE: &[(&str, &str)] = &[("prometheus", "prometheus.service")];

/// Where Debian's invoke-rc.d and deb-systemd-invoke ask whether a
/// maintainer script may start a service; exit 101 means "no".
const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";

/// Answers to the packages' debconf questions, given before installing so
/// that nothing asks and nothing starts: miniupnpd would otherwise offer to
/// run as a system service on the host's own interfaces (its default is
/// already "no"; this makes the intent explicit), and wireshark-common asks
/// whether to make dumpcap setuid (no: the tests run as root).
const DEBCONF_SELECTIONS: &str = "\
miniupnpd miniupnpd/start_daemon boolean false
wireshark-common wireshark-common/install-setuid boolean false
";

pub fn setup() -> Result<()> {
    nightly_components()?;
    bpf_linker()?;
    cargo_fuzz()?;
    musl_targets()?;
    cargo_deb()?;
    debian_packages()?;
    Ok(())
}

/// cargo-fuzz, for the short fuzz run of `cargo xtask test` (libFuzzer on the
/// host parser; it runs on the nightly toolchain).
fn cargo_fuzz() -> Result<()> {
    let installed = cmd("cargo")
        .args(["+nightly", "fuzz", "--version"])
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO")
        .output()
        .is_ok_and(|o| o.status.success());
    if installed {
        return Ok(());
    }
    eprintln!("setup: installing cargo-fuzz (a few minutes, once)");
    exec(
        cmd("cargo")
            .args(["install", "cargo-fuzz", "--locked"])
            .env_remove("RUSTUP_TOOLCHAIN")
            .env_remove("CARGO"),
    )
    .context("installing cargo-fuzz")
}

/// The cargo-mutants release `cargo xtask mutants` runs (pinned: its
/// output and its config keys change between releases; 27.1.0 needs rustc
/// 1.88, the stable toolchain here is 1.95).
pub const CARGO_MUTANTS_VERSION: &str = "27.1.0";

/// cargo-mutants, for the mutation tests of the walk and the classifier
/// (`cargo xtask mutants`, `.cargo/mutants.toml`).
pub fn cargo_mutants() -> Result<()> {
    let version = output(cmd("cargo").args(["mutants", "--version"])).unwrap_or_default();
    if version.contains(CARGO_MUTANTS_VERSION) {
        return Ok(());
    }
    eprintln!("setup: installing cargo-mutants {CARGO_MUTANTS_VERSION} (a few minutes, once)");
    exec(cmd("cargo").args([
        "install",
        "cargo-mutants",
        "--version",
        CARGO_MUTANTS_VERSION,
        "--locked",
    ]))
    .context("installing cargo-mutants")
}

/// cargo-deb, for the Debian packages of `cargo xtask dist`.
fn cargo_deb() -> Result<()> {
    let installed = output(cmd("cargo").args(["deb", "--version"]))
        .is_ok_and(|v| v.contains(CARGO_DEB_VERSION));
    if installed {
        return Ok(());
    }
    eprintln!("setup: installing cargo-deb {CARGO_DEB_VERSION} (a few minutes, once)");
    exec(
        cmd("cargo")
            .args([
                "install",
                "cargo-deb",
                "--locked",
                "--version",
                CARGO_DEB_VERSION,
            ])
            .env_remove("RUSTUP_TOOLCHAIN")
            .env_remove("CARGO"),
    )
    .context("installing cargo-deb")
}

/// Adds the musl targets of `cargo xtask dist` (and `build --static`) to the
/// toolchain building the agent.
fn musl_targets() -> Result<()> {
    let installed = output(cmd("rustup").args(["target", "list", "--installed"]))
        .context("listing the installed rustup targets")?;
    for t in &crate::dist::TARGETS {
        if !installed.lines().any(|l| l.trim() == t.triple) {
            eprintln!("setup: adding the {} target", t.triple);
            exec(cmd("rustup").args(["target", "add", t.triple]))?;
        }
    }
    Ok(())
}

fn nightly_components() -> Result<()> {
    let installed = output(cmd("rustup").args(["component", "list", "--toolchain", "nightly", "--installed"]))
        .context("listing the nightly toolchain's components; is rustup installed, with a nightly toolchain? (`rustup toolchain install nightly`)")?;
    for component in ["rust-src", "clippy", "rustfmt"] {
        if !installed.lines().any(|l| l.starts_with(component)) {
            eprintln!("setup: adding {component} to the nightly toolchain");
            exec(cmd("rustup").args(["component", "add", component, "--toolchain", "nightly"]))?;
        }
    }
    Ok(())
}

/// The LLVM major version of the nightly rustc, from `rustc +nightly -vV`.
fn nightly_llvm() -> Result<(u32, PathBuf)> {
    let vv = output(cmd("rustc").args(["+nightly", "-vV"]))?;
    let version = vv
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .context("`rustc +nightly -vV` printed no LLVM version")?;
    let major: u32 = version
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .with_context(|| format!("unexpected LLVM version {version:?}"))?;
    let sysroot =
        PathBuf::from(output(cmd("rustc").args(["+nightly", "--print", "sysroot"]))?.trim());
    let lib = sysroot.join("lib");
    let libllvm = fs::read_dir(&lib)
        .with_context(|| format!("reading {}", lib.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("libLLVM.so.{major}")))
        })
        .with_context(|| {
            format!(
                "the nightly toolchain has no libLLVM.so.{major}* in {}",
                lib.display()
            )
        })?;
    Ok((major, libllvm))
}

/// Is there a bpf-linker on PATH that runs and links LLVM `major`?
fn bpf_linker_ok(major: u32) -> bool {
    let Ok(path) = output(cmd("sh").args(["-c", "command -v bpf-linker"])) else {
        return false;
    };
    let path = path.trim();
    let runs = cmd(path)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let linked = output(cmd("ldd").arg(path)).is_ok_and(|ldd| {
        ldd.lines()
            .any(|l| l.contains(&format!("libLLVM.so.{major}")) && !l.contains("not found"))
    });
    runs && linked
}

fn bpf_linker() -> Result<()> {
    let (major, libllvm) = nightly_llvm()?;
    if bpf_linker_ok(major) {
        return Ok(());
    }
    let home = std::env::var_os("HOME").context("HOME is not set")?;
    let prefix = PathBuf::from(home)
        .join(".cache/nat-pmp-xdp")
        .join(format!("llvm-{major}"));
    let lib = prefix.join("lib");
    fs::create_dir_all(&lib).with_context(|| format!("creating {}", lib.display()))?;
    let soname = libllvm
        .file_name()
        .context("libLLVM path has no file name")?
        .to_owned();
    for name in [std::ffi::OsString::from("libLLVM.so"), soname] {
        let link = lib.join(name);
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(&libllvm, &link)
            .with_context(|| format!("linking {} -> {}", link.display(), libllvm.display()))?;
    }
    eprintln!(
        "setup: building bpf-linker {BPF_LINKER_VERSION} against the nightly's LLVM {major} \
         ({}); about a minute",
        libllvm.display()
    );
    exec(
        cmd("cargo")
            .args(["+nightly", "install", "bpf-linker", "--force"])
            .args(["--version", BPF_LINKER_VERSION, "--no-default-features"])
            .args(["--features", &format!("llvm-{major}")])
            .env("LLVM_PREFIX", &prefix)
            .env_remove("RUSTUP_TOOLCHAIN")
            .env_remove("CARGO"),
    )
    .context("building bpf-linker")?;
    if !bpf_linker_ok(major) {
        bail!(
            "bpf-linker was installed but does not run or does not link libLLVM.so.{major}; \
             is ~/.cargo/bin on PATH?"
        );
    }
    Ok(())
}

fn debian_packages() -> Result<()> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .map(|p| p.0)
        .filter(|pkg| {
            !output(cmd("dpkg-query").args(["-W", "-f=${Status}", pkg]))
                .is_ok_and(|s| s.contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!(
            "Debian packages missing: {}; install them as root (`sudo apt-get install {}`) \
             or run setup as root",
            missing.join(", "),
            missing.join(" ")
        );
    }
    eprintln!("setup: installing Debian packages {}", missing.join(", "));
    preseed_debconf()?;
    exec(cmd("apt-get").arg("update").arg("-q"))?;
    install_without_starting(&missing)
}

/// `apt-get install` with every service start refused (a `policy-rc.d`
/// that exits 101, put in place for the install only when the machine has
/// none), then the units of [`NO_SERVICE`] disabled so that a reboot does
/// not start them either, and a check that no such server listens.
fn install_without_starting(packages: &[&str]) -> Result<()> {
    let ours = !std::path::Path::new(POLICY_RC_D).exists();
    if ours {
        fs::write(
            POLICY_RC_D,
            "#!/bin/sh\n# cargo xtask setup: no service starts\nexit 101\n",
        )
        .with_context(|| format!("writing {POLICY_RC_D}"))?;
        exec(cmd("chmod").args(["0755", POLICY_RC_D]))?;
    }
    let installed = exec(
        cmd("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(packages)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    );
    if ours {
        fs::remove_file(POLICY_RC_D).with_context(|| format!("removing {POLICY_RC_D}"))?;
    }
    installed?;
    for (package, unit) in NO_SERVICE {
        if !packages.contains(package) {
            continue;
        }
        // `systemctl disable` works without a running systemd too.
        if cmd("systemctl").arg("--version").output().is_ok() {
            exec(cmd("systemctl").args(["disable", unit]))
                .with_context(|| format!("disabling {unit}"))?;
        }
        let listening = output(cmd("ss").args(["-ltnpH"]))?;
        if let Some(line) = listening
            .lines()
            .find(|l| l.contains(&format!("\"{package}\"")))
        {
            bail!(
                "{package} was installed for the tests and must not run as a service here, but \
                 it listens: {line}; stop it (`systemctl disable --now {unit}`)"
            );
        }
    }
    Ok(())
}

/// Feeds [`DEBCONF_SELECTIONS`] to `debconf-set-selections`.
fn preseed_debconf() -> Result<()> {
    use std::io::Write as _;
    let mut child = cmd("debconf-set-selections")
        .stdin(std::process::Stdio::piped())
        .spawn()
        .context("running debconf-set-selections (Debian's debconf package)")?;
    child
        .stdin
        .take()
        .context("debconf-set-selections has no stdin")?
        .write_all(DEBCONF_SELECTIONS.as_bytes())
        .context("writing to debconf-set-selections")?;
    let status = child.wait().context("waiting for debconf-set-selections")?;
    if !status.success() {
        bail!("debconf-set-selections failed ({status}) on:\n{DEBCONF_SELECTIONS}");
    }
    Ok(())
}
