//! `cargo bench -p nat-pmp-agent --bench xdp -- [--output BENCHMARKS.md]`
//! (run by `cargo xtask bench`, as root): measures the product's XDP program
//! against the cheapest possible XDP programs and against the alternatives an
//! operator would use (xdp-filter, nftables), in one run on one machine, and
//! writes the method, the numbers, the ratios against the project's targets
//! and, for each missed target, what bounds it.
//!
//! Four parts: per-packet cost (`BPF_PROG_TEST_RUN`), each frame's path
//! through the loaded program (xlated instructions and calls, from an
//! interpreter), flood drop rate (live frames through a veth pair, from one
//! source and from a new source every frame) and the agent's own cost.
//! Everything runs in namespaces, on a bpffs and with processes this bench
//! creates and removes.

mod agent;
mod cost;
mod egress;
mod env;
mod flood;
mod frames;
mod paths;
mod progs;
mod reattach;
mod reattach_live;
mod report;
mod verdict;

/// What the bench shares with the tests (`tests/support`): the modules it
/// uses, each in full.
#[path = "../../tests/support"]
mod support {
    pub mod bpffs;
    pub mod netns;
    pub mod process;
    pub mod tun;
    pub mod xdp;
    pub mod xlated;
}

use std::{path::PathBuf, process::ExitCode};

use anyhow::{bail, Context as _, Result};
use aya::{
    maps::PerCpuArray,
    programs::{Xdp, XdpMode},
    Ebpf,
};
use clap::Parser;
use nat_pmp_agent::{
    bpf::{sources, Filter},
    net::iface::AttachMode,
    stats::sources::LEDGER_MAX,
};
use nat_pmp_ebpf_common::{Class, Mode};

use crate::{
    cost::Subject,
    env::VethPair,
    progs::XdpFilter,
    support::{
        bpffs::Bpffs,
        process::is_root,
        xdp::{XDP_DROP, XDP_PASS},
    },
};

#[derive(Parser, Debug)]
#[command(about = "Benchmarks of the NAT-PMP XDP filter (needs root)")]
#[expect(
    clippy::struct_excessive_bools,
    reason = "one field per command-line switch, as clap derives them"
)]
pub struct Args {
    /// Where to write the Markdown report.
    #[arg(long, default_value = "BENCHMARKS.md")]
    output: PathBuf,
    /// The release agent binary (for the agent-cost part).
    #[arg(long)]
    agent: Option<PathBuf>,
    /// `BPF_PROG_TEST_RUN` repeat count per measurement.
    #[arg(long, default_value_t = 10_000_000)]
    repeat: u32,
    /// Measurements per (program, frame) cell; the median is reported.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Frames per flood round.
    #[arg(long, default_value_t = 4_000_000)]
    flood_frames: u32,
    /// Flood rounds per contender; the median rate is reported.
    #[arg(long, default_value_t = 3)]
    flood_rounds: usize,
    /// Seconds of flood while the agent's cost is measured.
    #[arg(long, default_value_t = 10)]
    agent_seconds: u64,
    /// Measure the per-packet cost only and print it (the report is not
    /// written): the quick loop while tuning the program.
    #[arg(long)]
    cost_only: bool,
    /// Measure the re-attach gap only (needs --agent) and replace its
    /// section of the --output file.
    #[arg(long)]
    reattach_only: bool,
    /// Measure the tc egress program (answers from 5351) against a bare tc
    /// program only, and replace its section of the --output file.
    #[arg(long)]
    egress_only: bool,
    /// Re-attach rounds per XDP mode.
    #[arg(long, default_value_t = 10)]
    reattach_rounds: usize,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

pub const PRODUCT_DROP: &str = "product, drop mode";
pub const PRODUCT_DROP_UNTRACKED: &str = "product, drop mode, source tracking off";
pub const PRODUCT_MONITOR: &str = "product, monitor mode";
pub const BARE_PASS: &str = "bare XDP_PASS";
pub const BARE_DROP: &str = "bare XDP_DROP";
pub const XDP_FILTER: &str = "xdp-filter port 5351";
pub const REFERENCE: &str = "reference (parse, count, drop)";

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<()> {
    if !is_root() {
        bail!("the benchmarks load XDP programs and build network namespaces: run them as root (`cargo xtask bench`)");
    }
    if args.repeat < 1_000_000 || args.runs == 0 || args.flood_rounds == 0 {
        bail!("--repeat must be at least 1,000,000 and --runs, --flood-rounds at least 1");
    }
    env::sweep_stale();
    if args.egress_only {
        env::pin_to_cpu(env::cpus() - 1)?;
        let section = egress::section(args.runs, args.repeat)?;
        let old = std::fs::read_to_string(&args.output).unwrap_or_default();
        std::fs::write(&args.output, egress::replace(&old, &section))
            .with_context(|| format!("writing {}", args.output.display()))?;
        eprintln!(
            "bench: wrote the egress section of {}",
            args.output.display()
        );
        return Ok(());
    }
    if args.reattach_only {
        let section = reattach_section(args)?;
        let old = std::fs::read_to_string(&args.output).unwrap_or_default();
        let text = replace_section(&old, &section);
        std::fs::write(&args.output, text)
            .with_context(|| format!("writing {}", args.output.display()))?;
        eprintln!(
            "bench: wrote the re-attach section of {}",
            args.output.display()
        );
        return Ok(());
    }
    let machine = report::Machine::probe();
    // The measuring thread and every thread it spawns (the flood sender)
    // run on the last CPU.
    let cpu = env::cpus() - 1;
    env::pin_to_cpu(cpu)?;
    let bpffs = env::bpffs()?;

    let (cost, facts, xdp_filter_prog, paths) = per_packet(args, &bpffs)?;
    if args.cost_only {
        print!("{}", report::cost_table(&cost));
        return Ok(());
    }
    let (floods, agent) = flood_and_agent(args, &bpffs)?;

    let reattach = reattach_section(args)?;
    let text = report::render(&report::Results {
        args,
        machine,
        cpu,
        load_after: report::loadavg(),
        cost: &cost,
        facts: &facts,
        xdp_filter_prog: &xdp_filter_prog,
        paths: &paths,
        floods: &floods,
        agent: &agent,
    });
    let text = replace_section(&text, &reattach);
    let text = egress::replace(&text, &egress::section(args.runs, args.repeat)?);
    std::fs::write(&args.output, text)
        .with_context(|| format!("writing {}", args.output.display()))?;
    eprintln!("bench: wrote {}", args.output.display());
    Ok(())
}

const REATTACH_BEGIN: &str = "<!-- reattach: begin (cargo xtask bench -- --reattach-only) -->\n";
const REATTACH_END: &str = "<!-- reattach: end -->\n";

/// The re-attach gap section, measured now (empty without --agent).
fn reattach_section(args: &Args) -> Result<String> {
    let Some(agent) = &args.agent else {
        eprintln!("bench: no --agent given: skipping the re-attach gap");
        return Ok(String::new());
    };
    let machine = report::Machine::probe();
    let gaps = ["native", "skb"]
        .into_iter()
        .map(|m| reattach::measure(agent, m, args.reattach_rounds))
        .collect::<Result<Vec<_>>>()?;
    let live = {
        use reattach_live::{Sched, Wan};
        [
            (Wan::Tun, "skb", Sched::Pinned),
            (Wan::Tun, "skb", Sched::Free),
            (Wan::Tun, "skb", Sched::FreeFifo),
            (Wan::Tap, "native", Sched::Pinned),
            (Wan::Tap, "native", Sched::Free),
            (Wan::Tap, "skb", Sched::Pinned),
        ]
        .into_iter()
        .map(|(wan, m, sched)| reattach_live::measure(agent, wan, m, args.reattach_rounds, sched))
        .collect::<Result<Vec<_>>>()?
    };
    let tun_native_refused = reattach_live::tun_native_refused(agent)?;
    Ok(format!(
        "{REATTACH_BEGIN}## Re-attach gap (an interface deleted and created again)\n\n{}{}\
         {}\n\n{}{REATTACH_END}",
        reattach::method(args.reattach_rounds),
        reattach::render(&gaps, &live, tun_native_refused),
        machine.measured("cargo xtask bench -- --reattach-only"),
        reattach::analysis(&gaps, &live, tun_native_refused)
    ))
}

/// `text` with the re-attach section replaced (or appended).
fn replace_section(text: &str, section: &str) -> String {
    replace_marked(text, (REATTACH_BEGIN, REATTACH_END), section)
}

/// `text` with the section between the `(begin, end)` markers replaced by
/// `section` (which carries its markers), or `section` appended.
pub fn replace_marked(text: &str, (begin, end): (&str, &str), section: &str) -> String {
    if let (Some(b), Some(e)) = (text.find(begin), text.find(end)) {
        if b < e {
            return format!("{}{section}{}", &text[..b], &text[e + end.len()..]);
        }
    }
    format!("{text}\n{section}")
}

/// The cost table, each program's size facts, xdp-filter's program name,
/// each frame's path.
type PerPacket = (
    cost::CostTable,
    Vec<(String, progs::ProgFacts)>,
    String,
    paths::PathTable,
);

fn per_packet(args: &Args, bpffs: &Bpffs) -> Result<PerPacket> {
    let mut product_drop = Filter::load()?;
    product_drop.set_mode(Mode::Drop)?;
    let mut product_untracked = Filter::load()?;
    product_untracked.set_mode(Mode::Drop)?;
    product_untracked.set_source_tracking(false)?;
    let mut product_monitor = Filter::load()?;
    product_monitor.set_mode(Mode::Monitor)?;
    let pass = progs::load(progs::BENCH_PASS, "bench_pass")?;
    let drop = progs::load(progs::BENCH_DROP, "bench_drop")?;
    let reference = progs::load(progs::BENCH_REF, "bench_ref")?;
    // xdp-filter needs an interface to load on: a veth in our namespace.
    let ns = env::netns("xf")?;
    ns.ip(&["link", "add", "xf0", "type", "veth", "peer", "name", "xf1"])?;
    ns.ip(&["link", "set", "xf0", "up"])?;
    ns.ip(&["link", "set", "xf1", "up"])?;
    let xf = XdpFilter::load(&ns, bpffs, "xf0")?;
    let (xf_prog, xf_name) = xf.program()?;

    let subjects = [
        Subject {
            name: PRODUCT_DROP.into(),
            prog: product_drop.program()?,
        },
        Subject {
            name: PRODUCT_DROP_UNTRACKED.into(),
            prog: product_untracked.program()?,
        },
        Subject {
            name: PRODUCT_MONITOR.into(),
            prog: product_monitor.program()?,
        },
        Subject {
            name: BARE_PASS.into(),
            prog: progs::xdp(&pass, "bench_pass")?,
        },
        Subject {
            name: BARE_DROP.into(),
            prog: progs::xdp(&drop, "bench_drop")?,
        },
        Subject {
            name: REFERENCE.into(),
            prog: progs::xdp(&reference, "bench_ref")?,
        },
        Subject {
            name: XDP_FILTER.into(),
            prog: &xf_prog,
        },
    ];
    let frames = frames::all();
    let table = cost::measure(&frames, &subjects, args.runs, args.repeat)?;
    // The product must have done its job on every frame it was timed on.
    for (fi, name) in table.frames.iter().enumerate() {
        let must_drop = table.natpmp[fi];
        for (subject, want) in [
            (PRODUCT_DROP, if must_drop { XDP_DROP } else { XDP_PASS }),
            (
                PRODUCT_DROP_UNTRACKED,
                if must_drop { XDP_DROP } else { XDP_PASS },
            ),
            (PRODUCT_MONITOR, XDP_PASS),
        ] {
            let got = table.cell(fi, subject).map(|c| c.action);
            if got != Some(want) {
                bail!("{subject} returned XDP action {got:?} on {name}, expected {want}: the product is broken, its timing meaningless");
            }
        }
    }
    let opcode0 = *product_drop
        .snapshot()?
        .get(Class::NatpmpExternalAddressRequest);
    if opcode0.dropped_packets == 0 {
        bail!("the product in drop mode counted no dropped opcode-0 request while being timed");
    }
    let facts = subjects
        .iter()
        .map(|s| Ok((s.name.clone(), progs::facts(s.prog)?)))
        .collect::<Result<Vec<_>>>()?;
    // Each frame's path, in the very programs just timed (configuration
    // unchanged).
    let paths = if args.cost_only {
        paths::PathTable::default()
    } else {
        let id = |name: &str| {
            facts
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, f)| f.id)
                .with_context(|| format!("no program facts for {name}"))
        };
        paths::measure(
            &[
                (PRODUCT_DROP, product_drop.program_id()?),
                (PRODUCT_DROP_UNTRACKED, product_untracked.program_id()?),
                (REFERENCE, id(REFERENCE)?),
            ],
            &frames,
            &table,
        )?
    };
    Ok((table, facts, xf_name, paths))
}

/// Attaches the XDP program `name` of `ebpf` to the receiving veth
/// (native mode).
fn attach_rx(pair: &VethPair, ebpf: &mut Ebpf, name: &str) -> Result<()> {
    let prog: &mut Xdp = progs::xdp_mut(ebpf, name)?;
    pair.rx.enter(|| {
        prog.attach(pair.rx_dev, XdpMode::Driver)
            .map(|_| ())
            .with_context(|| format!("attaching {name}"))
    })?
}

/// The reference's drops: its `REF_COUNT` per-CPU counter, summed.
fn ref_count(ebpf: &Ebpf) -> Result<u64> {
    let map: PerCpuArray<_, u64> = PerCpuArray::try_from(
        ebpf.map("REF_COUNT")
            .context("bench_ref has no map REF_COUNT")?,
    )?;
    Ok(map.get(&0, 0).context("reading REF_COUNT")?.iter().sum())
}

/// The product's source table after a spoofed flood, through the agent
/// library: the end of an interval, then every source. Fails unless every
/// source's packets plus `unattributed` equal the counted packets and the
/// ledger holds at most its bound.
fn check_accounting(f: &mut Filter) -> Result<flood::Accounting> {
    sources::tick(f.maps_mut(), 0).context("ending the source table's interval")?;
    let s = sources::read(f.maps(), usize::MAX).context("reading the source table")?;
    let counted = f.snapshot()?.total().packets();
    let attributed: u64 = s.top.iter().map(|x| x.stats.packets).sum();
    let acc = flood::Accounting {
        counted,
        attributed,
        unattributed: s.unattributed.packets,
        tracked: s.tracked,
    };
    if attributed + s.unattributed.packets != counted {
        bail!(
            "the source table lost count under the spoofed flood: {attributed} packets \
             attributed to {} sources + {} unattributed = {}, but the class counters counted \
             {counted}",
            s.tracked,
            s.unattributed.packets,
            attributed + s.unattributed.packets
        );
    }
    if s.tracked > LEDGER_MAX {
        bail!(
            "the source table broke its bound under the spoofed flood: {} sources tracked, \
             at most {} allowed",
            s.tracked,
            LEDGER_MAX
        );
    }
    eprintln!(
        "bench: source table after the spoofed flood: {} sources, {attributed} packets \
         attributed + {} unattributed = {counted} counted",
        s.tracked, s.unattributed.packets
    );
    Ok(acc)
}

/// How the flood counts the product's and the reference's drops.
const PRODUCT_COUNTER: &str = "the product's own counter (NATPMP_STATS, opcode-0 dropped)";
const REF_COUNTER: &str = "the reference's own counter (REF_COUNT)";

/// The product in drop mode, attached to the receiving veth as the agent
/// attaches it, flooded by `sender` (`frames` and `rounds` of them); returns
/// its rounds, counted by its own opcode-0 drop counter, and the filter,
/// detached again.
fn flood_product(
    name: &str,
    track: bool,
    sender: &flood::Sender,
    pair: &VethPair,
    frame: &[u8],
    (frames, rounds): (u32, usize),
) -> Result<(flood::FloodResult, Filter)> {
    let mut f = Filter::load()?;
    f.set_mode(Mode::Drop)?;
    f.set_source_tracking(track)?;
    pair.rx
        .enter(|| f.attach(pair.rx_dev, AttachMode::Native).map(|_| ()))??;
    let res = flood::rounds(
        name,
        PRODUCT_COUNTER,
        sender,
        pair,
        frame,
        frames,
        rounds,
        &mut || {
            Ok(f.snapshot()?
                .get(Class::NatpmpExternalAddressRequest)
                .dropped_packets)
        },
    )?;
    f.detach()?;
    Ok((res, f))
}

/// The reference (parse, count, drop) attached to the receiving veth,
/// flooded by `sender`; returns its rounds, counted by its own counter.
fn flood_reference(
    sender: &flood::Sender,
    pair: &VethPair,
    frame: &[u8],
    (frames, rounds): (u32, usize),
) -> Result<flood::FloodResult> {
    let mut e = progs::load(progs::BENCH_REF, "bench_ref")?;
    attach_rx(pair, &mut e, "bench_ref")?;
    flood::rounds(
        REFERENCE,
        REF_COUNTER,
        sender,
        pair,
        frame,
        frames,
        rounds,
        &mut || ref_count(&e),
    )
}

#[expect(
    clippy::too_many_lines,
    reason = "one block per contender, in report order"
)]
fn flood_and_agent(
    args: &Args,
    bpffs: &Bpffs,
) -> Result<(Vec<flood::FloodResult>, Vec<agent::AgentCost>)> {
    let pair = VethPair::new("f")?;
    let mut sender = flood::Sender::new(&pair)?;
    let mut spoofer = flood::Sender::spoofing(&pair)?;
    let frame = frames::opcode0();
    let (n, r) = (args.flood_frames, args.flood_rounds);
    let mut results = Vec::new();
    let rx_dev = pair.rx_dev;

    // Every contender twice: sender and receiver on one CPU (NAPI runs when
    // the sender's batch ends), then on separate CPUs (threaded NAPI, its
    // thread pinned to another CPU than the sender's).
    // The measuring thread runs on the last CPU; the receiver gets CPU 0.
    let modes: &[Option<usize>] = if env::cpus() > 1 {
        &[None, Some(0)]
    } else {
        &[None]
    };
    for &receiver_cpu in modes {
        sender.receiver_cpu = receiver_cpu;
        spoofer.receiver_cpu = receiver_cpu;
        // (a) the product, drop mode, attached as the agent attaches it: as
        // shipped (per-source tracking on), then with tracking off.
        for (name, track) in [(PRODUCT_DROP, true), (PRODUCT_DROP_UNTRACKED, false)] {
            let (res, _) = flood_product(name, track, &sender, &pair, &frame, (n, r))?;
            results.push(res);
        }
        // (b) the reference: parse, count, drop.
        results.push(flood_reference(&sender, &pair, &frame, (n, r))?);
        // (c) bare XDP_DROP.
        {
            let mut e = progs::load(progs::BENCH_DROP, "bench_drop")?;
            attach_rx(&pair, &mut e, "bench_drop")?;
            results.push(flood::rounds(
                BARE_DROP,
                "rx_packets of the receiving veth",
                &sender,
                &pair,
                &frame,
                n,
                r,
                &mut || pair.rx_packets(),
            )?);
        }
        // (d) xdp-filter.
        {
            let xf = XdpFilter::load(&pair.rx, bpffs, rx_dev)?;
            results.push(flood::rounds(
                XDP_FILTER,
                "xdp-filter status, XDP_DROP",
                &sender,
                &pair,
                &frame,
                n,
                r,
                &mut || xf.dropped(),
            )?);
        }
        // (e) nftables, behind the bare XDP_PASS the veth needs.
        {
            let mut e = progs::load(progs::BENCH_PASS, "bench_pass")?;
            attach_rx(&pair, &mut e, "bench_pass")?;
            let nft = |cmds: &[String]| -> Result<()> {
                for c in cmds {
                    pair.rx.exec(&["nft", c])?;
                }
                Ok(())
            };
            nft(&[
                "add table netdev natpmp_bench".into(),
                format!("add chain netdev natpmp_bench in {{ type filter hook ingress device {rx_dev} priority 0; }}"),
                "add rule netdev natpmp_bench in udp dport 5351 counter drop".into(),
            ])?;
            results.push(flood::rounds(
                "nftables netdev ingress drop",
                "nft rule counter",
                &sender,
                &pair,
                &frame,
                n,
                r,
                &mut || flood::nft_counter(&pair, "netdev", "natpmp_bench"),
            )?);
            nft(&[
                "delete table netdev natpmp_bench".into(),
                "add table inet natpmp_bench".into(),
                "add chain inet natpmp_bench in { type filter hook input priority 0; }".into(),
                "add rule inet natpmp_bench in udp dport 5351 counter drop".into(),
            ])?;
            results.push(flood::rounds(
                "nftables inet input drop",
                "nft rule counter",
                &sender,
                &pair,
                &frame,
                n,
                r,
                &mut || flood::nft_counter(&pair, "inet", "natpmp_bench"),
            )?);
            nft(&["delete table inet natpmp_bench".into()])?;
        }
        // (f) the spoofed flood, every frame from a new source: the product
        // as shipped, whose source table must account for every frame,
        // then the reference.
        {
            let (mut res, mut f) =
                flood_product(PRODUCT_DROP, true, &spoofer, &pair, &frame, (n, r))?;
            res.accounting = Some(check_accounting(&mut f)?);
            results.push(res);
        }
        results.push(flood_reference(&spoofer, &pair, &frame, (n, r))?);
    }
    sender.receiver_cpu = None;
    let mut agent = Vec::new();
    match &args.agent {
        Some(path) => {
            agent.push(agent::measure(
                &pair,
                path,
                &sender,
                &frame,
                args.agent_seconds,
                false,
            )?);
            // The same agent with the kernel's BTF out of sight: shows what
            // aya's loader costs by parsing it (see the report).
            agent.push(agent::measure(
                &pair,
                path,
                &sender,
                &frame,
                args.agent_seconds.min(5),
                true,
            )?);
        }
        None => eprintln!("bench: no --agent given: skipping the agent's cost"),
    }
    Ok((results, agent))
}
