//! Project tasks: `cargo xtask setup|build|dist|run|test|demo|bench|gen-capture|fuzz-seeds|mutants`.
//!
//! xtask depends on none of the project's crates that build the XDP program
//! (only on the capture generator and the `no_std` common crate), so it builds
//! on a fresh machine before `setup` has installed bpf-linker.

mod bench;
mod demo;
mod dist;
mod gen_capture;
mod setup;
mod util;

use std::{path::PathBuf, process::ExitCode};

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "xtask",
    about = "Build, set up, run, test and demo nat-pmp-xdp"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Make this machine ready (idempotent): nightly rust-src and clippy,
    /// bpf-linker against the nightly's own LLVM, Debian packages the tests use.
    Setup,
    /// Build the agent with the XDP program embedded (release).
    Build {
        /// A statically linked agent for x86_64-unknown-linux-musl (adds
        /// that rustup target if missing), for copying to a router as one
        /// file: target/x86_64-unknown-linux-musl/release/nat-pmp-agent.
        #[arg(long = "static")]
        static_: bool,
    },
    /// Set up and build the release folder for routers: static (musl)
    /// agents for `x86_64` and `aarch64`, Debian packages for amd64 and arm64
    /// (unit installed disabled, sample config, dashboard, man pages,
    /// completions) and SHA256SUMS. Incremental; see docs/install.md.
    Dist {
        /// The folder to write [default: target/dist].
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Set up, build, and run the agent as root with the given arguments,
    /// e.g. `cargo xtask run -- --iface wan0 --drop`.
    Run {
        /// Arguments for nat-pmp-agent.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up, then run fmt and clippy checks and the whole test suite
    /// (unit, kernel `BPF_PROG_TEST_RUN`, end to end in namespaces; needs root).
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up, build, and show the filter on a throwaway veth "WAN" link in
    /// network namespaces while a bounded NAT-PMP scan runs; cleans up.
    Demo {
        /// Seconds the scan runs.
        #[arg(long, default_value_t = 8)]
        seconds: u32,
        /// Only count (monitor mode) instead of dropping.
        #[arg(long)]
        monitor: bool,
    },
    /// Set up, build, and measure: per-packet cost (`BPF_PROG_TEST_RUN`) of the
    /// product next to bare `XDP_PASS`/`XDP_DROP` and xdp-filter, flood drop rate
    /// against them and nftables, the agent's own cost; writes BENCHMARKS.md.
    /// Needs root; a few minutes.
    Bench {
        /// Extra arguments for the bench binary (e.g. `--runs 3`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Mutation testing of the walk and the classifier with cargo-mutants
    /// (scope and tests in .cargo/mutants.toml), one job at a time.
    Mutants {
        /// Extra arguments for cargo mutants (e.g. `--list`, or `--re
        /// 'classify\.rs'` for one file: `--file` adds to the config's
        /// files rather than narrowing them).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Regenerate the fuzz target's committed seed corpus
    /// (nat-pmp-ebpf-common/fuzz/seeds/walk) from the shared frame builders
    /// and the examples in docs/classes.md.
    FuzzSeeds,
    /// Write a capture of a NAT-PMP scan in the honeypot's mix with a known
    /// composition (written next to it as FILE.json), for
    /// `nat-pmp-agent replay`.
    GenCapture {
        /// The capture to write.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// NAT-PMP datagrams (background traffic comes on top, 20%).
        #[arg(long, default_value_t = 10_000)]
        count: u64,
        /// Random seed: the same seed writes the same file.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// File format (default: pcapng for a .pcapng file, else pcap).
        #[arg(long, value_enum)]
        format: Option<CapFormat>,
        /// Link type: ethernet (1) or raw IP (101).
        #[arg(long, value_enum, default_value_t = CapLink::Ethernet)]
        link: CapLink,
        /// Hours the capture spans.
        #[arg(long, default_value_t = 6)]
        hours: u32,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum CapFormat {
    Pcap,
    Pcapng,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum CapLink {
    Ethernet,
    Raw,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Setup => setup::setup(),
        Command::Build { static_ } => {
            setup::setup()?;
            if static_ {
                build_static()
            } else {
                build()
            }
        }
        Command::Dist { out } => {
            setup::setup()?;
            dist::dist(&out.unwrap_or_else(dist::default_out))
        }
        Command::Run { args } => {
            setup::setup()?;
            build()?;
            util::require_root("cargo xtask run")?;
            util::exec(util::cmd(util::agent_binary()?).args(&args))
        }
        Command::Test { args } => {
            setup::setup()?;
            test(&args)
        }
        Command::Demo { seconds, monitor } => {
            setup::setup()?;
            build()?;
            util::require_root("cargo xtask demo")?;
            demo::demo(seconds, monitor)
        }
        Command::GenCapture {
            out,
            count,
            seed,
            format,
            link,
            hours,
        } => gen_capture::gen_capture(
            &out,
            count,
            seed,
            format.map(|f| match f {
                CapFormat::Pcap => nat_pmp_ebpf_common::capgen::Format::Pcap,
                CapFormat::Pcapng => nat_pmp_ebpf_common::capgen::Format::Pcapng,
            }),
            match link {
                CapLink::Ethernet => nat_pmp_ebpf_common::capgen::Link::Ethernet,
                CapLink::Raw => nat_pmp_ebpf_common::capgen::Link::Raw,
            },
            hours,
        ),
        Command::FuzzSeeds => fuzz_seeds(),
        Command::Mutants { args } => {
            setup::setup()?;
            mutants(&args)
        }
        Command::Bench { args } => {
            setup::setup()?;
            build()?;
            util::require_root("cargo xtask bench")?;
            bench::bench(&args)
        }
    }
}

fn build() -> Result<()> {
    util::exec(util::cargo().args(["build", "--release", "-p", "nat-pmp-agent"]))
}

/// The target of the static build. aya-build needs nothing for it: the XDP
/// object is built for bpfel-unknown-none whatever the host target is, and
/// the agent is pure Rust (no C library to link but musl's own).
pub const MUSL_TARGET: &str = dist::TARGETS[0].triple;

fn build_static() -> Result<()> {
    util::exec(util::cargo().args([
        "build",
        "--release",
        "-p",
        "nat-pmp-agent",
        "--target",
        MUSL_TARGET,
    ]))?;
    let bin = util::workspace_root()
        .join("target")
        .join(MUSL_TARGET)
        .join("release")
        .join("nat-pmp-agent");
    eprintln!("xtask: static agent at {}", bin.display());
    Ok(())
}

/// The test-only feature the suite needs: the agent also embeds the eBPF
/// object of the previous pinned layout, for the upgrade tests (never in a
/// release build).
const TEST_FEATURES: [&str; 2] = ["--features", "nat-pmp-agent/test-layouts"];

fn test(extra: &[String]) -> Result<()> {
    util::exec(util::cargo().args(["fmt", "--all", "--", "--check"]))?;
    util::exec(
        util::cargo()
            .args(["clippy", "--all-targets"])
            .args(TEST_FEATURES)
            .args(["--", "-D", "warnings"]),
    )?;
    util::exec(
        util::cmd("cargo")
            .args(["+nightly", "clippy", "-p", "nat-pmp-ebpf"])
            .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core"])
            .args(["--", "-D", "warnings"])
            .env_remove("RUSTUP_TOOLCHAIN")
            .env_remove("CARGO"),
    )?;
    util::require_root("the kernel and end-to-end tests (cargo xtask test)")?;
    // The dist:: tests check the release folder: build it first (incremental).
    dist::dist(&dist::default_out())?;
    // Tests share kernel state (interfaces, XDP attachments): one at a time.
    util::exec(
        util::cargo()
            // Doc tests are left out: the crates have none, and an empty last
            // block would read as "no test ran".
            .args(["test", "--release", "--lib", "--bins", "--tests"])
            .args(TEST_FEATURES)
            .args(extra)
            .args(["--", "--test-threads=1"]),
    )?;
    if extra.is_empty() {
        fuzz(FUZZ_SECONDS)?;
    }
    Ok(())
}

/// Seconds of the fuzz session `cargo xtask test` runs.
const FUZZ_SECONDS: u32 = 30;

/// Runs the libFuzzer target on the host parser and classifier for
/// `seconds` (docs/testing.md, "Fuzzing", for a long run).
/// libFuzzer writes what it finds to the first corpus directory (git
/// ignores it) and only reads the committed seeds (`fuzz/seeds/walk`, see
/// `nat_pmp_ebpf_common::fuzzing`), so a session never starts empty.
fn fuzz(seconds: u32) -> Result<()> {
    let fuzz_dir = util::workspace_root().join("nat-pmp-ebpf-common/fuzz");
    let corpus = fuzz_dir.join("corpus/walk");
    std::fs::create_dir_all(&corpus)
        .with_context(|| format!("creating the fuzz corpus {}", corpus.display()))?;
    util::exec(
        util::cmd("cargo")
            .args(["+nightly", "fuzz", "run", "walk"])
            .arg(&corpus)
            .arg(fuzz_dir.join("seeds/walk"))
            .arg("--")
            .arg(format!("-max_total_time={seconds}"))
            .current_dir(util::workspace_root().join("nat-pmp-ebpf-common"))
            .env_remove("RUSTUP_TOOLCHAIN")
            .env_remove("CARGO"),
    )
}

/// Runs cargo-mutants from the workspace root: `.cargo/mutants.toml` says
/// what it mutates and which tests judge the mutants. `-j1`: one mutant
/// builds at a time on this shared machine.
fn mutants(extra: &[String]) -> Result<()> {
    setup::cargo_mutants()?;
    util::exec(
        util::cmd("cargo")
            .args(["mutants", "-j1"])
            .args(extra)
            .current_dir(util::workspace_root()),
    )
}

/// Rewrites the committed seed corpus of the fuzz target from the frame
/// builders and docs/classes.md (the test `fuzzing_seed_corpus_is_current`
/// fails until this has run after either changed).
fn fuzz_seeds() -> Result<()> {
    util::exec(
        util::cargo()
            .args(["test", "-p", "nat-pmp-ebpf-common", "--lib"])
            .args(["fuzzing::tests::fuzzing_seed_corpus_is_current"])
            .env("UPDATE_SEEDS", "1"),
    )
}
