//! `nat-pmp-agent`: the command line.

use std::{
    io::{IsTerminal as _, Write as _},
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    process::ExitCode,
    time::Duration,
};

use anyhow::{bail, Context as _, Result};
use clap::{Args, Parser, Subcommand};
use nat_pmp_agent::{
    ebpf::{AttachMode, LinkType},
    monitor::{self, Output},
    probe, replay, replay_report,
};
use nat_pmp_ebpf_common::{Class, Mode, NATPMP_PORT};

/// Filter and count NAT-PMP / PCP (UDP 5351) on a WAN interface with XDP.
///
/// Without a subcommand: attach to --iface, count every NAT-PMP/PCP datagram
/// by class, drop those sent to port 5351 when --drop is given, and report
/// the counters every --interval until SIGINT/SIGTERM or --duration.
#[derive(Parser, Debug)]
#[command(
    name = "nat-pmp-agent",
    version,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Args, Debug)]
struct RunArgs {
    /// The WAN interface to attach to.
    #[arg(long, required = true, value_name = "IFACE")]
    iface: Option<String>,
    /// Drop every UDP datagram to port 5351 (the advisory's recommendation);
    /// without it, only count (monitor mode).
    #[arg(long)]
    drop: bool,
    /// XDP attach mode: auto tries native and falls back to skb.
    #[arg(long, value_enum, default_value_t = AttachMode::Auto)]
    xdp_mode: AttachMode,
    /// Where the network header starts: auto reads the interface's type
    /// (Ethernet, or raw IP for PPP, tun and WireGuard interfaces).
    #[arg(long, value_enum, default_value_t = LinkType::Auto)]
    link_type: LinkType,
    /// Seconds between reports.
    #[arg(long, default_value_t = 1.0, value_name = "SECS")]
    interval: f64,
    /// Report format: auto is a live table on a terminal, JSON lines otherwise.
    #[arg(long, value_enum, default_value_t = Output::Auto)]
    output: Output,
    /// Stop after this many seconds (default: run until SIGINT/SIGTERM).
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Send NAT-PMP/PCP probes to a gateway and report its answers (checks
    /// whether it is exposed, and whether a filter stops the probes).
    Probe(ProbeArgs),
    /// Run every frame of pcap/pcapng captures through the XDP program
    /// (`BPF_PROG_TEST_RUN`, no interface needed) and report what the router
    /// would have counted: per class, top sources, packets per hour.
    Replay(ReplayArgs),
}

#[derive(Args, Debug)]
struct ReplayArgs {
    /// Capture files (pcap or pcapng; Ethernet, raw IP or Linux cooked).
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Report format.
    #[arg(long, value_enum, default_value_t = ReplayOutput::Text)]
    output: ReplayOutput,
    /// Also draw packets per hour by source into this .svg file.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
    /// Sources to list (and to chart; the rest add up as "others").
    #[arg(long, default_value_t = 10, value_name = "N")]
    top: usize,
    /// Model drop mode: datagrams to port 5351 count as dropped.
    #[arg(long)]
    drop: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum ReplayOutput {
    Text,
    Json,
    Csv,
}

#[derive(Args, Debug)]
struct ProbeArgs {
    /// The gateway's address.
    target: IpAddr,
    /// The gateway's UDP port.
    #[arg(long, default_value_t = NATPMP_PORT)]
    port: u16,
    /// Datagrams to send: in the honeypot's scan mix, or of each --class.
    #[arg(long, default_value_t = 100)]
    count: u64,
    /// Send only this class (repeatable; names as in the reports).
    #[arg(long = "class", value_name = "CLASS", value_parser = parse_class)]
    classes: Vec<Class>,
    /// Datagrams per second at most.
    #[arg(long, default_value_t = 100)]
    rate: u32,
    /// Seconds to wait for answers after the last datagram.
    #[arg(long, default_value_t = 1.0, value_name = "SECS")]
    wait: f64,
    /// Print the result as one JSON object.
    #[arg(long)]
    json: bool,
}

fn parse_class(s: &str) -> Result<Class, String> {
    // Classes defined by the headers around the payload cannot be sent from
    // a UDP socket.
    let sendable = |c: &Class| !c.decided_by_headers();
    Class::from_name(s).filter(sendable).ok_or_else(|| {
        let names: Vec<&str> = Class::ALL
            .iter()
            .filter(|c| sendable(c))
            .map(|c| c.name())
            .collect();
        format!(
            "unknown or unsendable class {s:?}; one of: {}",
            names.join(", ")
        )
    })
}

fn seconds(flag: &str, secs: f64) -> Result<Duration> {
    Duration::try_from_secs_f64(secs)
        .ok()
        .filter(|d| !d.is_zero() || flag == "--wait")
        .with_context(|| format!("{flag} {secs}: expected a positive number of seconds"))
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nat-pmp-agent: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Some(Command::Probe(args)) => run_probe(&args),
        Some(Command::Replay(args)) => run_replay(&args),
        None => {
            let a = cli.run;
            let Some(iface) = a.iface else {
                bail!("--iface is required");
            };
            let opts = monitor::Options {
                iface,
                mode: if a.drop { Mode::Drop } else { Mode::Monitor },
                attach: a.xdp_mode,
                link: a.link_type,
                interval: seconds("--interval", a.interval)?,
                output: a.output,
                duration: a.duration.map(|d| seconds("--duration", d)).transpose()?,
            };
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the tokio runtime")?
                .block_on(monitor::run(opts))
        }
    }
}

/// Replays the captures and prints the report, also when the replay stopped
/// at a bad file (the report then covers what was read, and the command
/// fails with the error).
fn run_replay(args: &ReplayArgs) -> Result<()> {
    if args.top == 0 {
        bail!("--top must be at least 1");
    }
    if let Some(p) = &args.plot {
        if p.extension().and_then(|e| e.to_str()) != Some("svg") {
            // Fail before the replay, not after minutes of work.
            replay_report::plot_format(p)?;
        }
    }
    let analysis = replay::replay(&replay::Options {
        files: args.files.clone(),
        mode: if args.drop { Mode::Drop } else { Mode::Monitor },
        progress: std::io::stderr().is_terminal(),
    })?;
    let mut out = std::io::stdout().lock();
    match args.output {
        ReplayOutput::Text => write!(out, "{}", replay_report::to_text(&analysis, args.top))
            .context("writing the report to stdout")?,
        ReplayOutput::Json => writeln!(out, "{}", replay_report::to_json(&analysis))
            .context("writing the report to stdout")?,
        ReplayOutput::Csv => replay_report::write_csv(&analysis, &mut out)?,
    }
    out.flush().context("writing the report to stdout")?;
    if let Some(e) = analysis.error {
        bail!("{e}");
    }
    if let Some(p) = &args.plot {
        replay_report::plot(&analysis, p, args.top)?;
    }
    if let Some(d) = analysis.disagreement() {
        bail!(
            "the kernel's counters and the host's classification of the same frames differ \
             ({d}); the per-source and per-hour figures cannot be trusted. This is a bug: \
             please report it with the capture"
        );
    }
    Ok(())
}

fn run_probe(args: &ProbeArgs) -> Result<()> {
    let counts = if args.classes.is_empty() {
        probe::apportion(&probe::HONEYPOT_MIX, args.count)
    } else {
        args.classes.iter().map(|&c| (c, args.count)).collect()
    };
    let total: u64 = counts.iter().map(|c| c.1).sum();
    if total > probe::MAX_COUNT {
        bail!(
            "refusing to send {total} datagrams: at most {} per run; lower --count",
            probe::MAX_COUNT
        );
    }
    let order = probe::schedule(&counts);
    let target = SocketAddr::new(args.target, args.port);
    let result = probe::run(target, &order, args.rate, seconds("--wait", args.wait)?)?;
    let answered: u64 = result.answers.values().sum();
    if args.json {
        let map = |m: &std::collections::BTreeMap<Class, u64>| {
            m.iter()
                .map(|(c, n)| (c.name().to_owned(), serde_json::json!(n)))
                .collect::<serde_json::Map<_, _>>()
        };
        println!(
            "{}",
            serde_json::json!({
                "target": target.to_string(),
                "sent": map(&result.sent),
                "answers": map(&result.answers),
                "exposed": answered > 0,
            })
        );
    } else {
        println!("sent to {target}:");
        for (class, n) in &result.sent {
            println!("  {:<36} {n}", class.name());
        }
        if answered == 0 {
            println!("no answer from {target}: NAT-PMP/PCP is not reachable on this path");
        } else {
            println!("answers from {target} ({answered}): it answers NAT-PMP/PCP on this path");
            for (class, n) in &result.answers {
                println!("  {:<36} {n}", class.name());
            }
        }
    }
    Ok(())
}
