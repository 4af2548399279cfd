//! `nat-pmp-agent dist-assets --out DIR` (hidden): the man pages and shell
//! completions that `cargo xtask dist` packages, generated from the clap
//! definitions above, so that they can never disagree with `--help`.
//!
//! It is a subcommand of the agent rather than code in xtask because xtask
//! must build before `cargo xtask setup` has installed bpf-linker (it depends
//! on no crate that builds the XDP program), and the clap derives live here
//! only.

use std::{fs, path::Path};

use anyhow::{Context as _, Result};
use clap::CommandFactory as _;
use clap_complete::Shell;

use super::Cli;

/// The binary's name, as installed.
const BIN: &str = "nat-pmp-agent";

/// The man section: system administration commands (the agent needs root or
/// `CAP_BPF`/`CAP_NET_ADMIN`).
const MAN_SECTION: &str = "8";

/// Shells with a completion file, and the file name each one's loader looks
/// for in its vendor directory.
const SHELLS: [(Shell, &str); 3] = [
    (Shell::Bash, "nat-pmp-agent"),
    (Shell::Zsh, "_nat-pmp-agent"),
    (Shell::Fish, "nat-pmp-agent.fish"),
];

/// Writes `DIR/man/*.8` (one page for the agent and one per visible
/// subcommand, as `git` does) and `DIR/completions/{bash,zsh,fish}/FILE`.
pub fn write(out: &Path) -> Result<()> {
    let man = out.join("man");
    fs::create_dir_all(&man).with_context(|| format!("creating {}", man.display()))?;
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    write_man(&cmd, &man)?;
    for (shell, file) in SHELLS {
        let dir = out.join("completions").join(shell.to_string());
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut text = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), BIN, &mut text);
        let path = dir.join(file);
        fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn write_man(cmd: &clap::Command, dir: &Path) -> Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_man(sub, dir)?;
    }
    let page = clap_mangen::Man::new(cmd.clone())
        .section(MAN_SECTION)
        .manual("nat-pmp-xdp");
    page.generate_to(dir).with_context(|| {
        format!(
            "writing the man page {} into {}",
            page.get_filename(),
            dir.display()
        )
    })?;
    Ok(())
}
