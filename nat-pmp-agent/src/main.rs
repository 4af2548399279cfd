//! `nat-pmp-agent`: the command line is [`nat_pmp_agent::cli`].

fn main() -> std::process::ExitCode {
    nat_pmp_agent::cli::main(std::env::args_os().collect())
}
