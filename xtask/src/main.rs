//! Project tasks: `cargo xtask setup|build|run|test|demo`.
//!
//! xtask depends on nothing of the project's own crates, so it builds on a
//! fresh machine before `setup` has installed bpf-linker.

mod demo;
mod setup;
mod util;

use std::process::ExitCode;

use anyhow::Result;
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
                setup::musl_target()?;
                build_static()
            } else {
                build()
            }
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
    }
}

fn build() -> Result<()> {
    util::exec(util::cargo().args(["build", "--release", "-p", "nat-pmp-agent"]))
}

/// The target of the static build. aya-build needs nothing for it: the XDP
/// object is built for bpfel-unknown-none whatever the host target is, and
/// the agent is pure Rust (no C library to link but musl's own).
pub const MUSL_TARGET: &str = "x86_64-unknown-linux-musl";

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

fn test(extra: &[String]) -> Result<()> {
    util::exec(util::cargo().args(["fmt", "--all", "--", "--check"]))?;
    util::exec(util::cargo().args(["clippy", "--all-targets", "--", "-D", "warnings"]))?;
    util::exec(
        util::cmd("cargo")
            .args(["+nightly", "clippy", "-p", "nat-pmp-ebpf"])
            .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core"])
            .args(["--", "-D", "warnings"])
            .env_remove("RUSTUP_TOOLCHAIN")
            .env_remove("CARGO"),
    )?;
    util::require_root("the kernel and end-to-end tests (cargo xtask test)")?;
    // Tests share kernel state (interfaces, XDP attachments): one at a time.
    util::exec(
        util::cargo()
            // Doc tests are left out: the crates have none, and an empty last
            // block would read as "no test ran".
            .args(["test", "--release", "--lib", "--bins", "--tests"])
            .args(extra)
            .args(["--", "--test-threads=1"]),
    )
}
