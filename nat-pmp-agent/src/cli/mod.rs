//! The command line: every subcommand and flag (clap), the config file
//! ([`options`]: the one place run options are parsed, merged and checked),
//! and the dispatch to the features. The top of the layers: nothing below
//! depends on it, and the library's own types carry no CLI derives (the
//! value enums here map onto them).

mod assets;
mod options;

use std::fmt::Write as _;
use std::{
    ffi::OsString,
    io::{IsTerminal as _, Write as _},
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    process::ExitCode,
    time::Duration,
};

use crate::{
    bpf::pin,
    live::{self, Output},
    net::iface::{AttachMode, LinkType},
    ops::{self, audit},
    probe, replay,
    replay::report as replay_report,
    stats::allow,
};
use anyhow::{bail, Context as _, Result};
use clap::{Args, Parser, Subcommand};
use nat_pmp_ebpf_common::{Class, Mode, Prefix, NATPMP_PORT};

/// Filter and count NAT-PMP / PCP (UDP 5351) on a WAN interface with XDP.
///
/// Without a subcommand: attach to --iface, count every NAT-PMP/PCP datagram
/// by class, drop those sent to port 5351 when --drop is given, and report
/// the counters every --interval until SIGINT/SIGTERM or --duration.
///
/// Exposure: on each --iface a tc egress program (tcx, Linux 6.6) also
/// counts the answers this router sends from port 5351 out of the WAN. Any
/// answer means the router answers NAT-PMP/PCP on its WAN (RFC 6886 §3
/// forbids it): the live table then starts with "EXPOSED: this router
/// answered N NAT-PMP/PCP requests on IFACE (last to ADDR, S s ago)", the
/// JSON lines say "exposed": true, and the exposed gauge of --metrics is 1
/// (docs/exposure.md).
#[derive(Parser, Debug)]
#[command(
    name = "nat-pmp-agent",
    version,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Args, Clone, Debug, Default, PartialEq)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "one field per command-line switch, as clap derives them"
)]
pub struct RunArgs {
    /// Read settings from this TOML file; flags given on the command line
    /// win over it. Keys are the flag names without `--` (see
    /// contrib/nat-pmp-agent.toml).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// A WAN interface to attach to; repeat it for several (each has its own
    /// programs and counters: the XDP filter on what arrives, the egress
    /// counter of answers leaving from port 5351).
    #[arg(long, value_name = "IFACE")]
    iface: Vec<String>,
    /// Drop every UDP datagram to port 5351 (the advisory's recommendation);
    /// without it, only count (monitor mode).
    #[arg(long)]
    drop: bool,
    /// XDP attach mode: auto tries native and falls back to skb [default: auto].
    #[arg(long, value_enum)]
    xdp_mode: Option<XdpModeArg>,
    /// Where the network header starts: auto reads the interface's type
    /// (Ethernet, or raw IP for PPP, tun and WireGuard interfaces)
    /// [default: auto].
    #[arg(long, value_enum)]
    link_type: Option<LinkTypeArg>,
    /// Seconds between reports [default: 1].
    #[arg(long, value_name = "SECS")]
    interval: Option<f64>,
    /// Report format: auto is the live view on a terminal (keys: q quit,
    /// s sort, p pause, ? help), JSON lines otherwise [default: auto].
    #[arg(long, value_enum)]
    output: Option<OutputArg>,
    /// Stop after this many seconds (default: run until SIGINT/SIGTERM).
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
    /// Pin the program, its link and its maps on bpffs so the filter keeps
    /// working when the agent stops or dies; a restarted agent picks them up,
    /// its counters continue, and it applies this run's settings (each
    /// change is reported).
    #[arg(long)]
    pin: bool,
    /// Where pinned instances live: <DIR>/netns:<inode>/<iface>/ (mounts
    /// bpffs there if needed) [default: /sys/fs/bpf/nat-pmp].
    #[arg(long, value_name = "DIR")]
    pin_dir: Option<PathBuf>,
    /// Serve Prometheus metrics on ADDR at /metrics [default address:
    /// 127.0.0.1:9351].
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = DEFAULT_METRICS)]
    metrics: Option<SocketAddr>,
    /// Allow --metrics on an address other than loopback.
    #[arg(long)]
    metrics_allow_remote: bool,
    /// Sources (senders, by packets) listed in each report [default: 10].
    #[arg(long, value_name = "N")]
    top_sources: Option<usize>,
    /// A source prefix drop mode lets through (its datagrams count as
    /// passed), e.g. 198.51.100.0/24 or an IPv6 prefix; repeatable. Change it
    /// at runtime with `nat-pmp-agent allow`.
    #[arg(long, value_name = "PREFIX", value_parser = parse_prefix)]
    allow: Vec<Prefix>,
    /// Text tables show every class, also those that saw no traffic
    /// (default: the classes that did, and the three NAT-PMP request rows).
    #[arg(long)]
    all_classes: bool,
    /// Turn per-source tracking off: counted datagrams no longer update the
    /// source table (reports and metrics then list no sources), which makes
    /// drop mode cheapest per packet (see BENCHMARKS.md).
    #[arg(long)]
    no_sources: bool,
    /// Start even when an --iface does not exist yet (a PPP or VPN interface
    /// at boot), report it as waiting, and attach the moment it appears.
    /// Without it a missing interface is an error (a typo must not wait
    /// forever).
    #[arg(long)]
    wait: bool,
}

/// Where `--metrics` listens when given without an address.
const DEFAULT_METRICS: &str = "127.0.0.1:9351";

/// `--pin-dir` for the subcommands that talk to pinned instances.
#[derive(Args, Debug)]
struct PinArgs {
    /// Where pinned instances live: <DIR>/<iface>/.
    #[arg(long, value_name = "DIR", default_value = pin::DEFAULT_PIN_ROOT)]
    pin_dir: PathBuf,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Show the pinned instances (what is attached where, in which mode, and
    /// their counters) and which XDP program each interface runs.
    Status {
        /// Only these interfaces (repeatable); they are shown even when
        /// nothing is pinned for them.
        #[arg(long, value_name = "IFACE")]
        iface: Vec<String>,
        /// Print one JSON object instead of tables.
        #[arg(long)]
        json: bool,
        /// The tables show every class, also those that saw no traffic.
        #[arg(long)]
        all_classes: bool,
        #[command(flatten)]
        pin: PinArgs,
    },
    /// Switch a running pinned instance between drop and monitor: one write
    /// to its config map, no reload, no detach, no gap.
    Mode {
        /// The new mode.
        #[arg(value_enum)]
        mode: ModeArg,
        /// The interface whose instance to switch.
        #[arg(long, value_name = "IFACE")]
        iface: String,
        #[command(flatten)]
        pin: PinArgs,
    },
    /// Change or list the allowlist of a running pinned instance: source
    /// prefixes drop mode lets through. Takes effect from the next packet;
    /// no reload.
    Allow {
        #[command(subcommand)]
        action: AllowAction,
    },
    /// Detach a pinned instance from its interface and remove its program,
    /// link, maps and pin directory (also while an agent runs for it).
    Detach {
        /// The interface to detach from.
        #[arg(long, value_name = "IFACE")]
        iface: String,
        #[command(flatten)]
        pin: PinArgs,
    },
    /// Send NAT-PMP/PCP probes to a gateway and report its answers (checks
    /// whether it is exposed, and whether a filter stops the probes).
    Probe(ProbeArgs),
    /// Check whether this router is exposed on its WAN (exit status 0 safe,
    /// 1 exposed, 2 error or incomplete).
    ///
    /// Lists every UDP socket on 5350/5351 of this network namespace, its
    /// process, whether the WAN can reach it, and whether a drop-mode
    /// instance pinned on that WAN protects it.
    ///
    /// It sees the sockets and addresses of the network namespace it runs
    /// in: run it in the router's. A socket is reachable from a WAN when it
    /// is bound to a wildcard or multicast address or to an address of an
    /// --iface (and to no other device); loopback and LAN addresses are
    /// not. A WAN is protected when an instance pinned for it under
    /// --pin-dir is in drop mode and its link is attached to it (as
    /// `status` shows); port 5350 is never shielded (the filter drops
    /// datagrams to 5351 only). Without root it lists what it can and says
    /// what it could not see; such a gap is never a safe verdict. Details:
    /// docs/exposure.md.
    Audit(AuditArgs),
    /// Run every frame of pcap/pcapng captures through the XDP program
    /// (`BPF_PROG_TEST_RUN`, no interface needed) and report what the router
    /// would have counted: per class, top sources, packets per hour.
    Replay(ReplayArgs),
    /// Write the man pages and shell completions generated from these
    /// definitions into DIR (what `cargo xtask dist` packages).
    #[command(hide = true)]
    DistAssets {
        /// The directory to write man/ and completions/ into.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum AllowAction {
    /// Add a prefix (e.g. 198.51.100.0/24, an IPv6 prefix, or one address).
    Add {
        #[arg(value_parser = parse_prefix)]
        prefix: Prefix,
        #[arg(long, value_name = "IFACE")]
        iface: String,
        #[command(flatten)]
        pin: PinArgs,
    },
    /// Remove a prefix (written as it was added).
    Del {
        #[arg(value_parser = parse_prefix)]
        prefix: Prefix,
        #[arg(long, value_name = "IFACE")]
        iface: String,
        #[command(flatten)]
        pin: PinArgs,
    },
    /// List the prefixes.
    List {
        #[arg(long, value_name = "IFACE")]
        iface: String,
        #[command(flatten)]
        pin: PinArgs,
    },
}

fn parse_prefix(s: &str) -> Result<Prefix, String> {
    allow::parse(s).map_err(|e| format!("{e:#}"))
}

#[derive(Args, Debug)]
struct AuditArgs {
    /// A WAN interface (repeatable): sockets are judged by whether these
    /// interfaces' traffic can reach them.
    #[arg(long, value_name = "IFACE", required = true)]
    iface: Vec<String>,
    /// Print one JSON object (docs/audit.schema.json) instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    pin: PinArgs,
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
    /// The text table shows every class, also those that saw no traffic.
    #[arg(long)]
    all_classes: bool,
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

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum ModeArg {
    Drop,
    Monitor,
}

impl From<ModeArg> for Mode {
    fn from(m: ModeArg) -> Mode {
        match m {
            ModeArg::Drop => Mode::Drop,
            ModeArg::Monitor => Mode::Monitor,
        }
    }
}

/// `--xdp-mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum XdpModeArg {
    /// Native (driver) mode, falling back to skb mode where the driver has none.
    Auto,
    /// Native (driver) mode only.
    Native,
    /// Generic (skb) mode: works on every interface, slower.
    Skb,
}

impl From<XdpModeArg> for AttachMode {
    fn from(m: XdpModeArg) -> AttachMode {
        match m {
            XdpModeArg::Auto => AttachMode::Auto,
            XdpModeArg::Native => AttachMode::Native,
            XdpModeArg::Skb => AttachMode::Skb,
        }
    }
}

/// `--link-type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum LinkTypeArg {
    /// From the interface's hardware type (ARPHRD_*).
    Auto,
    /// An Ethernet header (VLAN tags and PPPoE are recognised behind it).
    Ethernet,
    /// No link-layer header: PPP, tun, WireGuard, IP tunnels.
    RawIp,
}

impl From<LinkTypeArg> for LinkType {
    fn from(l: LinkTypeArg) -> LinkType {
        match l {
            LinkTypeArg::Auto => LinkType::Auto,
            LinkTypeArg::Ethernet => LinkType::Ethernet,
            LinkTypeArg::RawIp => LinkType::RawIp,
        }
    }
}

/// `--output`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum OutputArg {
    /// The live view on a terminal, JSON lines otherwise.
    Auto,
    /// A plain table each interval (redrawn in place on a terminal).
    Table,
    /// One JSON object per line per interval.
    Json,
}

impl From<OutputArg> for Output {
    fn from(o: OutputArg) -> Output {
        match o {
            OutputArg::Auto => Output::Auto,
            OutputArg::Table => Output::Table,
            OutputArg::Json => Output::Json,
        }
    }
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

/// Runs the command line (`args` as from [`std::env::args_os`]): parses,
/// dispatches, and turns an error into a line on stderr and exit code 1.
pub fn main(args: Vec<OsString>) -> ExitCode {
    // The program's sample of dropped datagrams is logged at info level.
    env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or("warn,nat_pmp_ebpf=info"),
    )
    .init();
    let cli = Cli::parse_from(&args);
    if let Some(Command::Audit(a)) = &cli.command {
        return run_audit(a);
    }
    match run(cli, args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            crate::say!("nat-pmp-agent: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `audit`: its verdict is its exit code (0 safe, 1 exposed, 2
/// incomplete); an error is 2 as well, as clap's usage errors are.
fn run_audit(a: &AuditArgs) -> ExitCode {
    let result = audit::audit(&audit::Options {
        ifaces: a.iface.clone(),
        pin_root: a.pin.pin_dir.clone(),
    })
    .and_then(|found| {
        let text = if a.json {
            format!("{}\n", found.to_json())
        } else {
            found.to_text()
        };
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes())
            .and_then(|()| out.flush())
            .context("writing the audit to stdout")?;
        Ok(found.verdict)
    });
    match result {
        Ok(v) => ExitCode::from(v.exit_code()),
        Err(e) => {
            crate::say!("nat-pmp-agent: audit: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli, args: Vec<OsString>) -> Result<()> {
    match cli.command {
        Some(Command::Audit(_)) => bail!("audit is run by run_audit"),
        Some(Command::Probe(args)) => run_probe(&args),
        Some(Command::Replay(args)) => run_replay(&args),
        Some(Command::DistAssets { out }) => assets::write(&out),
        Some(Command::Status {
            iface,
            json,
            all_classes,
            pin,
        }) => ops::status(&pin.pin_dir, &iface, json, all_classes),
        Some(Command::Mode { mode, iface, pin }) => {
            ops::set_mode(&pin.pin_dir, &iface, mode.into())
        }
        Some(Command::Detach { iface, pin }) => ops::detach(&pin.pin_dir, &iface),
        Some(Command::Allow { action }) => match action {
            AllowAction::Add { prefix, iface, pin } => {
                ops::allow(&pin.pin_dir, &iface, Some((prefix, true)))
            }
            AllowAction::Del { prefix, iface, pin } => {
                ops::allow(&pin.pin_dir, &iface, Some((prefix, false)))
            }
            AllowAction::List { iface, pin } => ops::allow(&pin.pin_dir, &iface, None),
        },
        None => {
            let opts = options::options(&cli.run, &args)?;
            let reload: Option<live::Reload> = cli.run.config.is_some().then(|| {
                let run = cli.run.clone();
                Box::new(move || options::options(&run, &args)) as live::Reload
            });
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the tokio runtime")?
                .block_on(live::run(opts, reload))
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
        ReplayOutput::Text => write!(
            out,
            "{}",
            replay_report::to_text(&analysis, args.top, args.all_classes)
        )
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
    let mut text = String::new();
    if args.json {
        let map = |m: &std::collections::BTreeMap<Class, u64>| {
            m.iter()
                .map(|(c, n)| (c.name().to_owned(), serde_json::json!(n)))
                .collect::<serde_json::Map<_, _>>()
        };
        let _ = writeln!(
            text,
            "{}",
            serde_json::json!({
                "target": target.to_string(),
                "sent": map(&result.sent),
                "answers": map(&result.answers),
                "exposed": answered > 0,
            })
        );
    } else {
        let _ = writeln!(text, "sent to {target}:");
        for (class, n) in &result.sent {
            let _ = writeln!(text, "  {:<36} {n}", class.name());
        }
        if answered == 0 {
            let _ = writeln!(
                text,
                "no answer from {target}: NAT-PMP/PCP is not reachable on this path"
            );
        } else {
            let _ = writeln!(
                text,
                "answers from {target} ({answered}): it answers NAT-PMP/PCP on this path"
            );
            for (class, n) in &result.answers {
                let _ = writeln!(text, "  {:<36} {n}", class.name());
            }
        }
    }
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .context("writing the probe's result to stdout")?;
    Ok(())
}
