//! Renders BENCHMARKS.md: method, machine, tables, the targets with their
//! ratios and PASS/MISS (every one computed from this run; a missing or
//! non-finite number is a MISS, never a PASS), and for each miss the
//! numbers that make it.

use std::fmt::Write as _;

use nat_pmp_agent::stats::sources::LEDGER_MAX;
use nat_pmp_ebpf_common::SOURCES_MAX_ENTRIES;

use crate::{
    agent::AgentCost,
    cost::CostTable,
    flood::FloodResult,
    frames::{Group, IPV4_REQUEST},
    paths::{PathCell, PathTable},
    progs::{ProgFacts, XdpFilter},
    support::{
        process::sh,
        xdp::{action_name, XDP_DROP as DROP, XDP_PASS as PASS},
    },
    verdict::{judge, judge_agent, missing, Verdict},
    Args, BARE_DROP, BARE_PASS, PRODUCT_DROP, PRODUCT_DROP_UNTRACKED, REFERENCE, XDP_FILTER,
};

pub struct Machine {
    pub kernel: String,
    pub cpu_model: String,
    pub cpus: usize,
    pub load_before: String,
    pub commit: String,
    pub xdp_tools: String,
    pub nft: String,
    pub date: String,
    /// The kernel's view of the CPU's speculation vulnerabilities that
    /// price calls and returns: (file, contents).
    pub mitigations: Vec<(String, String)>,
}

/// Files of `/sys/devices/system/cpu/vulnerabilities` the Machine table
/// shows (those that exist).
const MITIGATIONS: [&str; 3] = ["spec_rstack_overflow", "retbleed", "spectre_v2"];

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

impl Machine {
    /// The closing line of a section measured alone by `command`: the
    /// machine, the commit and the load before and now.
    pub fn measured(&self, command: &str) -> String {
        format!(
            "Measured on {}, {} CPUs, Linux {}, {}, commit {}, load average {} before and {} \
             after (`{command}`).",
            self.cpu_model,
            self.cpus,
            self.kernel,
            self.date,
            self.commit,
            self.load_before,
            loadavg()
        )
    }

    pub fn probe() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        Machine {
            kernel: sh(&["uname", "-r"]).unwrap_or_default().trim().to_owned(),
            cpu_model: cpuinfo
                .lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map_or_else(
                    || "?".into(),
                    |l| l.trim_start_matches([' ', '\t', ':']).to_owned(),
                ),
            cpus: crate::env::cpus(),
            load_before: loadavg(),
            commit: sh(&[
                "git",
                "-C",
                env!("CARGO_MANIFEST_DIR"),
                "rev-parse",
                "--short",
                "HEAD",
            ])
            .unwrap_or_default()
            .trim()
            .to_owned(),
            xdp_tools: XdpFilter::version(),
            nft: sh(&["nft", "--version"])
                .unwrap_or_default()
                .trim()
                .to_owned(),
            date: sh(&["date", "-u", "+%Y-%m-%d %H:%M UTC"])
                .unwrap_or_default()
                .trim()
                .to_owned(),
            mitigations: MITIGATIONS
                .iter()
                .filter_map(|f| {
                    let text = std::fs::read_to_string(format!(
                        "/sys/devices/system/cpu/vulnerabilities/{f}"
                    ))
                    .ok()?;
                    Some(((*f).to_owned(), text.trim().to_owned()))
                })
                .collect(),
        }
    }
}

pub struct Results<'a> {
    pub args: &'a Args,
    pub machine: Machine,
    pub cpu: usize,
    pub load_after: String,
    pub cost: &'a CostTable,
    pub facts: &'a [(String, ProgFacts)],
    pub xdp_filter_prog: &'a str,
    pub paths: &'a PathTable,
    pub floods: &'a [FloodResult],
    /// The agent as shipped, then with the kernel's BTF hidden.
    pub agent: &'a [AgentCost],
}

struct Target {
    what: String,
    measured: String,
    verdict: Verdict,
    why: Option<String>,
}

/// A cell's kernel figure; NaN when the cell is missing or its program
/// returned another action than `want`: such a number judges nothing.
fn ns(c: &CostTable, frame: usize, subject: &str, want: Option<u32>) -> f64 {
    match c.cell(frame, subject) {
        Some(cell) if want.is_none_or(|w| w == cell.action) => cell.kernel_ns,
        _ => f64::NAN,
    }
}

/// The frames judged by `group`, in table order.
fn frames_in(c: &CostTable, group: Group) -> Vec<usize> {
    (0..c.frames.len())
        .filter(|&fi| c.groups.get(fi) == Some(&group))
        .collect()
}

/// The untagged IPv4 opcode-0 request's row.
fn ipv4_request(c: &CostTable) -> Option<usize> {
    c.frames.iter().position(|f| f == IPV4_REQUEST)
}

/// Short names of `frames`, joined.
fn shorts(c: &CostTable, frames: &[usize]) -> String {
    frames
        .iter()
        .map(|&fi| c.short[fi])
        .collect::<Vec<_>>()
        .join(", ")
}

/// What the path of `frame` through `subject` is, in a few words.
fn path_words(p: &PathTable, frame: usize, subject: &str) -> String {
    match p.cell(frame, subject) {
        Some(Ok(PathCell { insns, call: None })) => format!("{insns} insns"),
        Some(Ok(PathCell {
            insns,
            call: Some((pc, name)),
        })) => format!("{insns} insns to a call (pc {pc}, `{name}`)"),
        Some(Err(e)) => format!("path not followed: {e}"),
        None => "path not walked".into(),
    }
}

/// A flood row: contender, spoofed or not, separate CPUs or not.
fn flood<'a>(
    floods: &'a [FloodResult],
    name: &str,
    spoofed: bool,
    split: bool,
) -> Option<&'a FloodResult> {
    floods
        .iter()
        .find(|f| f.name == name && f.spoofed == spoofed && f.split == split)
}

/// A flood row's median rate; NaN when the row is missing.
fn rate(f: Option<&FloodResult>) -> f64 {
    f.map_or(f64::NAN, FloodResult::median_mpps)
}

/// The per-packet tables: the kernel's figure with the verdict, then the
/// measuring thread's CPU time with the spread.
pub fn cost_table(c: &CostTable) -> String {
    let mut s = String::new();
    let header = |s: &mut String| {
        let _ = write!(s, "| frame |");
        for subj in &c.subjects {
            let _ = write!(s, " {subj} |");
        }
        let _ = writeln!(s, "\n|---|{}", "---:|".repeat(c.subjects.len()));
    };
    header(&mut s);
    for (fi, frame) in c.frames.iter().enumerate() {
        let _ = write!(s, "| {frame} |");
        for cell in &c.cells[fi] {
            let _ = write!(
                s,
                " {:.0} ({}) |",
                cell.kernel_ns,
                action_name(u64::from(cell.action))
            );
        }
        let _ = writeln!(s);
    }
    let _ = writeln!(
        s,
        "\nCross-check, the measuring thread's CPU time / repeat (fractional ns; same runs):\n"
    );
    header(&mut s);
    for (fi, frame) in c.frames.iter().enumerate() {
        let _ = write!(s, "| {frame} |");
        for cell in &c.cells[fi] {
            let _ = write!(s, " {:.1} ±{:.0} |", cell.cpu_ns, cell.spread_ns / 2.0);
        }
        let _ = writeln!(s);
    }
    s
}

/// The path table: per frame and program, the xlated instructions its path
/// executes and the first call on it.
pub fn path_table(p: &PathTable) -> String {
    let mut s = String::new();
    let _ = write!(s, "| frame |");
    for subj in &p.subjects {
        let _ = write!(s, " {subj} |");
    }
    let _ = writeln!(s, "\n|---|{}", "---|".repeat(p.subjects.len()));
    for (fi, frame) in p.frames.iter().enumerate() {
        let _ = write!(
            s,
            "| {frame}{} |",
            if p.fast_path[fi] { " (fast path)" } else { "" }
        );
        for si in 0..p.subjects.len() {
            let text = match p.cells[fi].get(si) {
                Some(Ok(PathCell { insns, call: None })) => format!("{insns}, no call"),
                Some(Ok(PathCell {
                    insns,
                    call: Some((pc, name)),
                })) => format!("{insns}, 1 call (pc {pc}, `{name}`)"),
                Some(Err(e)) => format!("not followed: {e}"),
                None => "?".into(),
            };
            let _ = write!(s, " {text} |");
        }
        let _ = writeln!(s);
    }
    let _ = write!(s, "| *program size (xlated insns)* |");
    for size in &p.sizes {
        let _ = write!(s, " {size} |");
    }
    let _ = writeln!(s);
    s
}

#[expect(clippy::too_many_lines, reason = "one linear document")]
#[expect(
    clippy::many_single_char_names,
    reason = "short names for the few things every line uses"
)]
pub fn render(r: &Results<'_>) -> String {
    let mut s = String::new();
    let m = &r.machine;
    let c = r.cost;
    let a = r.args;

    let _ = writeln!(s, "# Benchmarks\n");
    let _ = writeln!(
        s,
        "Written by `cargo xtask bench` (the bench binary `nat-pmp-agent/benches/xdp`) on {}, \
         commit `{}`. Every number below comes from that one run on that one machine; rerun it to \
         regenerate this file. Every target is a ratio to programs measured in the same run. \
         This is a shared 2-core VM, not a tuned router.\n",
        m.date, m.commit
    );
    let _ = writeln!(s, "## Machine\n");
    let _ = writeln!(s, "| | |\n|---|---|");
    let _ = writeln!(s, "| kernel | {} |", m.kernel);
    let _ = writeln!(
        s,
        "| CPU | {} ({} online CPUs; the bench pins itself to CPU {}) |",
        m.cpu_model, m.cpus, r.cpu
    );
    if m.mitigations.is_empty() {
        let _ = writeln!(
            s,
            "| CPU vulnerabilities | /sys/devices/system/cpu/vulnerabilities not readable |"
        );
    }
    for (file, text) in &m.mitigations {
        let _ = writeln!(s, "| {file} (cpu/vulnerabilities) | {text} |");
    }
    let _ = writeln!(
        s,
        "| load average before / after | {} / {} |",
        m.load_before, r.load_after
    );
    let _ = writeln!(s, "| xdp-tools (Debian) | {} |", m.xdp_tools);
    let _ = writeln!(s, "| nftables | {} |", m.nft);
    let _ = writeln!(
        s,
        "| aya | 0.14.0 (BPF_PROG_TEST_RUN through `aya::programs::TestRun`) |\n"
    );

    // Targets first: the reader's question.
    let targets = targets(r);
    let _ = writeln!(s, "## Targets\n");
    let _ = writeln!(
        s,
        "As shipped = drop mode, per-source tracking on; `--no-sources` = tracking off. \
         Per-packet figures are the kernel's (first table below), flood rates the one-CPU \
         medians.\n"
    );
    let _ = writeln!(s, "| target | measured | verdict |\n|---|---|---|");
    for t in &targets {
        let _ = writeln!(s, "| {} | {} | {} |", t.what, t.measured, t.verdict.text());
    }
    let misses: Vec<&Target> = targets
        .iter()
        .filter(|t| t.verdict == Verdict::Miss)
        .collect();
    if !misses.is_empty() {
        let _ = writeln!(s, "\n### The misses\n");
        for t in misses {
            let _ = writeln!(
                s,
                "**{}** ({}). {}\n",
                t.what,
                t.verdict.text(),
                t.why.as_deref().unwrap_or("")
            );
        }
    }

    // Per-packet table.
    let _ = writeln!(s, "## Per-packet cost (BPF_PROG_TEST_RUN)\n");
    let _ = writeln!(
        s,
        "Nanoseconds per packet: the kernel's own figure (total time / repeat, truncated to whole \
         ns by the kernel), median of {} runs of repeat = {}, on a thread pinned to CPU {}; the \
         verdict the program returned in brackets. Runs are interleaved (every program on every \
         frame, {} times over) so that drift from other load spreads over all cells.\n",
        c.runs, c.repeat, r.cpu, c.runs
    );
    s.push_str(&cost_table(c));
    let _ = writeln!(
        s,
        "\n(± is half the spread, max − min, of the kernel figure over the runs.)\n"
    );

    let _ = writeln!(s, "Program sizes (as `bpftool prog show` reports them):\n");
    let _ = writeln!(s, "| program | kernel name | xlated insns | JIT bytes | insns processed by the verifier |\n|---|---|---:|---:|---:|");
    for (name, f) in r.facts {
        let _ = writeln!(
            s,
            "| {name} | `{}` (id {}) | {} | {} | {} |",
            f.name,
            f.id,
            f.xlated_insns,
            f.jited_bytes,
            f.verified_insns.map_or("?".into(), |v| v.to_string())
        );
    }

    // Paths.
    let _ = writeln!(
        s,
        "\n## Each frame's path through the loaded program (xlated instructions)\n"
    );
    let _ = writeln!(
        s,
        "Per frame and program: the xlated instructions (`bpftool prog dump xlated`) the frame's \
         path executes, to `exit` or to the first call (included), and that call. Walked by the \
         interpreter of `nat-pmp-agent/tests/support/xlated.rs` on the very programs timed above, \
         as configured then; wherever it reaches `exit` its verdict is the one \
         `BPF_PROG_TEST_RUN` returned (checked). Its per-CPU maps start empty, so with tracking \
         on each frame is its sender's first (the source table's insert). \"Fast path\" marks \
         the frames that must make no call.\n"
    );
    s.push_str(&path_table(r.paths));

    // Flood.
    let _ = writeln!(
        s,
        "\n## Flood drop rate (live frames through a veth pair)\n"
    );
    let _ = writeln!(
        s,
        "{} rounds of {} opcode-0 requests (60-byte frames) each, per contender, back to back; \
         median rate. Mpps = frames the contender counted as dropped / wall time of the \
         injection. \"spoofed\": every frame from a new IPv4 source (198.18.128.0/17, 32,768 \
         addresses, then again); the others all come from 198.18.0.2. The ratio column compares \
         with the reference on the same flood.\n",
        a.flood_rounds, a.flood_frames
    );
    for split in [false, true] {
        let rows: Vec<&FloodResult> = r.floods.iter().filter(|f| f.split == split).collect();
        if rows.is_empty() {
            continue;
        }
        let _ = writeln!(
            s,
            "{}\n",
            if split {
                "\n### Sender and receiver on separate CPUs\n\nThe receiving veth runs threaded \
                 NAPI, its thread pinned to CPU 0 while the sender runs on the last CPU, as a \
                 NIC's receive queue and a sender elsewhere would. A rate is then the slower of \
                 the two sides: a contender that keeps up with the sender shows the sender's \
                 rate, a slower one its own (frames it could not take are lost in the veth's \
                 ring, and counted / injected shows how many it saw)."
            } else {
                "### Sender and receiver on one CPU\n\nThe receiving veth's NAPI runs when each \
                 sender batch ends, on the sender's CPU: a frame's whole life is serial, so the \
                 rate is 1 / (sender cost + receiver cost) and nothing is lost."
            }
        );
        let _ = writeln!(s, "| contender | flood | Mpps (median) | rounds | ns per frame | vs reference | counted / injected | counted by |\n|---|---|---:|---|---:|---:|---:|---|");
        for f in &rows {
            let med = f.median_mpps();
            let rounds: Vec<String> = f.mpps.iter().map(|x| format!("{x:.2}")).collect();
            let reference = rate(flood(r.floods, REFERENCE, f.spoofed, split));
            let _ = writeln!(
                s,
                "| {} | {} | {:.2} | {} | {:.0} | {:.2}x | {} / {} | {} |",
                f.name,
                if f.spoofed { "spoofed" } else { "one source" },
                med,
                rounds.join(", "),
                1e3 / med,
                med / reference,
                f.counted,
                f.injected,
                f.counted_by
            );
        }
        for f in rows {
            if let Some(acc) = &f.accounting {
                let _ = writeln!(
                    s,
                    "\nThe product's source table after its spoofed rounds (warm-up included), \
                     read through the agent library (`sources::tick`, then `sources::read`): \
                     {} sources tracked (bound {LEDGER_MAX}); {} packets attributed to them + {} \
                     unattributed = {} = the {} packets the class counters counted.",
                    acc.tracked,
                    acc.attributed,
                    acc.unattributed,
                    acc.attributed + acc.unattributed,
                    acc.counted
                );
            }
        }
    }

    // Agent.
    let _ = writeln!(s, "\n## The agent's own cost\n");
    if r.agent.is_empty() {
        let _ = writeln!(s, "Not measured in this run (no `--agent` given).\n");
    } else {
        let _ = writeln!(
            s,
            "`nat-pmp-agent --iface brx0 --drop --xdp-mode native --output json --interval 1` in the \
             receiving namespace while the sender floods it. Before the flood window the sender \
             sends one opcode-0 request from each of {SOURCES_MAX_ENTRIES} addresses in \
             198.18.64.0/18, as many as one CPU's source table holds in an interval (a sender \
             whose set is already full counts as unattributed), so every report reads and ranks \
             the senders the table took. CPU from utime + stime over the flood window (after \
             start-up), peak RSS = VmHWM at the end. The second row is the same binary \
             started with `/sys/kernel/btf/vmlinux` hidden (a `/dev/null` bind mount in its private \
             mount namespace), which is what isolates the cost of aya's loader parsing the kernel's \
             BTF.\n"
        );
        let _ = writeln!(s, "| run | flood window | frames (Mpps) | CPU share of one core | peak RSS (VmHWM) | JSON reports | opcode-0 drops in its last report (flood only) | sources in its last report |\n|---|---:|---:|---:|---:|---:|---:|---:|");
        for ag in r.agent {
            #[expect(clippy::cast_precision_loss, reason = "counts for display")]
            let (mpps, mib) = (
                ag.frames as f64 / ag.window_secs / 1e6,
                ag.vm_hwm_kib as f64 / 1024.0,
            );
            let _ = writeln!(
                s,
                "| {} | {:.1} s | {} ({mpps:.2}) | {:.2} % | {mib:.1} MiB | {} | {} | {} |",
                if ag.hide_kernel_btf {
                    "kernel BTF hidden"
                } else {
                    "as shipped"
                },
                ag.window_secs,
                ag.frames,
                ag.cpu_percent,
                ag.reports,
                ag.reported_drops.map_or("?".into(), |d| d.to_string()),
                ag.reported_sources.map_or("?".into(), |d| d.to_string())
            );
        }
    }

    let _ = writeln!(s, "{}", METHOD.replace("{xf}", r.xdp_filter_prog));
    s
}

/// "a, b: 39 vs 23 ns = 1.70x"-style lines, one per frame.
fn ratio_lines(c: &CostTable, rows: &[(usize, f64, f64)], unit: &str) -> String {
    rows.iter()
        .map(|&(fi, num, den)| {
            format!(
                "{}: {num:.0} vs {den:.0} {unit} = {:.2}x",
                c.short[fi],
                num / den
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Why a flood target has nothing to judge: the rows (contender, spoofed or
/// not, one CPU) this run lacks or whose rate is not a finite number.
fn absent_floods(floods: &[FloodResult], rows: &[(&str, bool)]) -> String {
    let absent: Vec<String> = rows
        .iter()
        .filter(|&&(name, spoofed)| !rate(flood(floods, name, spoofed, false)).is_finite())
        .map(|&(name, spoofed)| {
            format!(
                "{name} ({})",
                if spoofed { "spoofed" } else { "one source" }
            )
        })
        .collect();
    format!(
        "No finite one-CPU flood rate for {}: nothing to judge.",
        absent.join(", ")
    )
}

#[expect(
    clippy::too_many_lines,
    reason = "one block per target, in the issue's order"
)]
fn targets(r: &Results<'_>) -> Vec<Target> {
    let c = r.cost;
    let p = r.paths;
    let mut t = Vec::new();
    let opcode0 = ipv4_request(c);
    let at = |fi: Option<usize>, subject: &str, want: Option<u32>| {
        fi.map_or(f64::NAN, |fi| ns(c, fi, subject, want))
    };
    let reference_v4 = at(opcode0, REFERENCE, Some(DROP));

    // 1. Untagged IPv4 requests: as shipped <= 1.5x, --no-sources <= 1.25x
    // the reference (on the same frame).
    let v4 = frames_in(c, Group::Ipv4Request);
    for (subject, label, limit) in [
        (PRODUCT_DROP, "as shipped", 1.5),
        (PRODUCT_DROP_UNTRACKED, "with `--no-sources`", 1.25),
    ] {
        let rows: Vec<(usize, f64, f64)> = v4
            .iter()
            .map(|&fi| {
                (
                    fi,
                    ns(c, fi, subject, Some(DROP)),
                    ns(c, fi, REFERENCE, Some(DROP)),
                )
            })
            .collect();
        let ratios: Vec<f64> = rows.iter().map(|&(_, a, b)| a / b).collect();
        let verdict = judge(&ratios, |x| x <= limit);
        t.push(Target {
            what: format!(
                "IPv4 NAT-PMP request ({}), {label}: at most {limit}x the reference",
                shorts(c, &v4)
            ),
            measured: ratio_lines(c, &rows, "ns"),
            verdict,
            why: (verdict == Verdict::Miss).then(|| {
                if let Some(why) = missing(&ratios) {
                    return why;
                }
                rows.iter()
                    .filter(|&&(_, a, b)| a / b > limit)
                    .map(|&(fi, a, b)| {
                        format!(
                            "{}: {a:.0} ns ({}) where {limit}x the reference is {:.1} ns; the \
                             reference {b:.0} ns ({}), bare XDP_DROP {:.0} ns.",
                            c.short[fi],
                            path_words(p, fi, subject),
                            limit * b,
                            path_words(p, fi, REFERENCE),
                            ns(c, fi, BARE_DROP, Some(DROP))
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(" ")
            }),
        });
    }

    // 2. IPv6 and encapsulated requests, as shipped: at most 2x the
    // reference's plain IPv4 cost, and at most half of xdp-filter's cost on
    // the same frame.
    let other = frames_in(c, Group::OtherRequest);
    let rows: Vec<(usize, f64, f64)> = other
        .iter()
        .map(|&fi| (fi, ns(c, fi, PRODUCT_DROP, Some(DROP)), reference_v4))
        .collect();
    let ratios: Vec<f64> = rows.iter().map(|&(_, a, b)| a / b).collect();
    let verdict = judge(&ratios, |x| x <= 2.0);
    t.push(Target {
        what: format!(
            "IPv6 and encapsulated requests ({}), as shipped: at most 2x the reference's plain \
             IPv4 cost",
            shorts(c, &other)
        ),
        measured: format!(
            "reference on the IPv4 request: {reference_v4:.0} ns; {}",
            rows.iter()
                .map(|&(fi, a, b)| format!("{}: {a:.0} ns = {:.2}x", c.short[fi], a / b))
                .collect::<Vec<_>>()
                .join("; ")
        ),
        verdict,
        why: (verdict == Verdict::Miss).then(|| {
            if let Some(why) = missing(&ratios) {
                return why;
            }
            rows.iter()
                .filter(|&&(_, a, b)| a / b > 2.0)
                .map(|&(fi, a, b)| {
                    format!(
                        "{}: {a:.0} ns ({}), limit {:.0} ns.",
                        c.short[fi],
                        path_words(p, fi, PRODUCT_DROP),
                        2.0 * b
                    )
                })
                .collect::<Vec<_>>()
                .join(" ")
        }),
    });
    // "Half of xdp-filter": of what xdp-filter costs to filter the same
    // request. On a frame it filters (drops) that is its cost on that frame;
    // on one it cannot parse (PPPoE: it passes the frame untouched) it is its
    // cost of dropping the plain IPv4 request, and its same-frame cost is
    // shown beside it.
    let xf_action = |fi: usize| c.cell(fi, XDP_FILTER).map_or(u32::MAX, |x| x.action);
    let xf_v4 = at(opcode0, XDP_FILTER, Some(DROP));
    let rows: Vec<(usize, f64, f64)> = other
        .iter()
        .map(|&fi| {
            let xf = if xf_action(fi) == DROP {
                ns(c, fi, XDP_FILTER, Some(DROP))
            } else {
                xf_v4
            };
            (fi, ns(c, fi, PRODUCT_DROP, Some(DROP)), xf)
        })
        .collect();
    let ratios: Vec<f64> = rows.iter().map(|&(_, a, b)| a / b).collect();
    let verdict = judge(&ratios, |x| x <= 0.5);
    t.push(Target {
        what: "no encapsulation costs more than half of what xdp-filter costs to filter the same \
               request (as shipped; where xdp-filter cannot parse the encapsulation and passes \
               it, its cost of dropping the untagged IPv4 request)"
            .into(),
        measured: rows
            .iter()
            .map(|&(fi, a, b)| {
                let same_frame = if xf_action(fi) == DROP {
                    String::new()
                } else {
                    format!(
                        " (xdp-filter returns {} on this frame, unparsed, in {:.0} ns: {:.2}x of that)",
                        action_name(u64::from(xf_action(fi))),
                        ns(c, fi, XDP_FILTER, None),
                        a / ns(c, fi, XDP_FILTER, None)
                    )
                };
                format!("{}: {a:.0} vs {b:.0} ns = {:.2}x{same_frame}", c.short[fi], a / b)
            })
            .collect::<Vec<_>>()
            .join("; "),
        verdict,
        why: (verdict == Verdict::Miss).then(|| {
            if let Some(why) = missing(&ratios) {
                return why;
            }
            rows.iter()
                .filter(|&&(_, a, b)| a / b > 0.5)
                .map(|&(fi, a, b)| {
                    format!(
                        "{}: the product {a:.0} ns ({}), xdp-filter {b:.0} ns.",
                        c.short[fi],
                        path_words(p, fi, PRODUCT_DROP)
                    )
                })
                .collect::<Vec<_>>()
                .join(" ")
        }),
    });

    // 3. Traffic that is not NAT-PMP: at most bare XDP_PASS + 5 ns.
    let not = frames_in(c, Group::NotNatpmp);
    let rows: Vec<(usize, f64, f64)> = not
        .iter()
        .map(|&fi| {
            (
                fi,
                ns(c, fi, PRODUCT_DROP, Some(PASS)),
                ns(c, fi, BARE_PASS, Some(PASS)),
            )
        })
        .collect();
    let deltas: Vec<f64> = rows.iter().map(|&(_, a, b)| a - b).collect();
    let verdict = judge(&deltas, |d| d <= 5.0);
    t.push(Target {
        what: format!(
            "traffic that is not NAT-PMP ({}), as shipped: at most bare XDP_PASS + 5 ns",
            shorts(c, &not)
        ),
        measured: rows
            .iter()
            .map(|&(fi, a, b)| format!("{}: {a:.0} vs {b:.0} ns = {:+.0} ns", c.short[fi], a - b))
            .collect::<Vec<_>>()
            .join("; "),
        verdict,
        why: (verdict == Verdict::Miss).then(|| {
            if let Some(why) = missing(&deltas) {
                return why;
            }
            rows.iter()
                .filter(|&&(_, a, b)| a - b > 5.0)
                .map(|&(fi, a, b)| {
                    format!(
                        "{}: {:+.0} ns ({}).",
                        c.short[fi],
                        a - b,
                        path_words(p, fi, PRODUCT_DROP)
                    )
                })
                .collect::<Vec<_>>()
                .join(" ")
        }),
    });

    // 4. No call on the fast paths, as shipped and with --no-sources.
    let mut walked = 0usize;
    let mut longest = 0usize;
    let mut offending = Vec::new();
    for subject in [PRODUCT_DROP, PRODUCT_DROP_UNTRACKED] {
        for (fi, _) in p.fast_path.iter().enumerate().filter(|(_, &f)| f) {
            walked += 1;
            match p.cell(fi, subject) {
                Some(Ok(PathCell { insns, call: None })) => longest = longest.max(*insns),
                _ => offending.push(format!(
                    "{} ({subject}): {}",
                    p.frames[fi],
                    path_words(p, fi, subject)
                )),
            }
        }
    }
    let ok = walked > 0 && offending.is_empty();
    t.push(Target {
        what: "no call on the fast paths (untagged IPv4/IPv6 requests and non-NAT-PMP traffic), \
               as shipped and with `--no-sources`"
            .into(),
        measured: if walked == 0 {
            "no path walked".into()
        } else if offending.is_empty() {
            format!("{walked} paths, none reaches a call; the longest runs {longest} xlated insns")
        } else {
            format!(
                "{} of {walked} paths reach a call or were not followed",
                offending.len()
            )
        },
        verdict: Verdict::of(ok),
        why: (!ok).then(|| {
            if walked == 0 {
                "The path table is empty.".into()
            } else {
                format!("{}.", offending.join("; "))
            }
        }),
    });

    // 5. Live flood, one CPU.
    let prod = rate(flood(r.floods, PRODUCT_DROP, false, false));
    let refr = rate(flood(r.floods, REFERENCE, false, false));
    let xf = rate(flood(r.floods, XDP_FILTER, false, false));
    let bare = rate(flood(r.floods, BARE_DROP, false, false));
    let split = |name: &str, spoofed: bool| rate(flood(r.floods, name, spoofed, true));
    let per_frame = |mpps: f64| 1e3 / mpps;
    let flood_why = |a: f64, b: f64, what: &str, other: &str| {
        if a.is_finite() && b.is_finite() {
            format!(
                "Per frame, sender included: the product {:.0} ns, {what} {:.0} ns (bare \
                 XDP_DROP {:.0} ns).",
                per_frame(a),
                per_frame(b),
                per_frame(bare)
            )
        } else {
            absent_floods(r.floods, &[(PRODUCT_DROP, false), (other, false)])
        }
    };
    let ratio = prod / refr;
    let verdict = judge(&[ratio], |x| x >= 0.9);
    t.push(Target {
        what: "live flood, one CPU, as shipped: at least 0.9x the reference's rate".into(),
        measured: format!(
            "{prod:.2} vs {refr:.2} Mpps = {ratio:.2}x (separate CPUs: {:.2} vs {:.2} Mpps)",
            split(PRODUCT_DROP, false),
            split(REFERENCE, false)
        ),
        verdict,
        why: (verdict == Verdict::Miss).then(|| flood_why(prod, refr, "the reference", REFERENCE)),
    });
    let ratio = prod / xf;
    let verdict = judge(&[ratio], |x| x > 1.0);
    t.push(Target {
        what: "live flood, one CPU, as shipped: above xdp-filter's rate".into(),
        measured: format!(
            "{prod:.2} vs {xf:.2} Mpps = {ratio:.2}x (separate CPUs: {:.2} vs {:.2} Mpps)",
            split(PRODUCT_DROP, false),
            split(XDP_FILTER, false)
        ),
        verdict,
        why: (verdict == Verdict::Miss).then(|| flood_why(prod, xf, "xdp-filter", XDP_FILTER)),
    });
    let sprod = rate(flood(r.floods, PRODUCT_DROP, true, false));
    let sref = rate(flood(r.floods, REFERENCE, true, false));
    let ratio = sprod / sref;
    let verdict = judge(&[ratio], |x| x >= 0.8);
    t.push(Target {
        what: "spoofed flood (every frame from a new source), one CPU, as shipped: at least 0.8x \
               the reference on the same flood"
            .into(),
        measured: format!(
            "{sprod:.2} vs {sref:.2} Mpps = {ratio:.2}x (separate CPUs: {:.2} vs {:.2} Mpps)",
            split(PRODUCT_DROP, true),
            split(REFERENCE, true)
        ),
        verdict,
        why: (verdict == Verdict::Miss).then(|| {
            if sprod.is_finite() && sref.is_finite() {
                format!(
                    "Per frame, sender included: the product {:.0} ns, the reference {:.0} ns \
                     (from one source: {:.0} and {:.0} ns).",
                    per_frame(sprod),
                    per_frame(sref),
                    per_frame(prod),
                    per_frame(refr)
                )
            } else {
                absent_floods(r.floods, &[(PRODUCT_DROP, true), (REFERENCE, true)])
            }
        }),
    });
    let spoofed: Vec<&FloodResult> = r
        .floods
        .iter()
        .filter(|f| f.name == PRODUCT_DROP && f.spoofed)
        .collect();
    let intact = |f: &FloodResult| {
        f.accounting.is_some_and(|a| {
            a.counted > 0 && a.attributed + a.unattributed == a.counted && a.tracked <= LEDGER_MAX
        })
    };
    let ok = !spoofed.is_empty() && spoofed.iter().all(|f| intact(f));
    t.push(Target {
        what: format!(
            "spoofed flood: the source table's bound and accounting intact (every source's \
             packets + unattributed = the counted packets; at most {LEDGER_MAX} sources)"
        ),
        measured: if spoofed.is_empty() {
            "no spoofed flood of the product".into()
        } else {
            spoofed
                .iter()
                .map(|f| {
                    let cpus = if f.split { "separate CPUs" } else { "one CPU" };
                    f.accounting.map_or_else(
                        || format!("{cpus}: not read"),
                        |a| {
                            format!(
                                "{cpus}: {} + {} unattributed = {} of {} counted; {} sources",
                                a.attributed,
                                a.unattributed,
                                a.attributed + a.unattributed,
                                a.counted,
                                a.tracked
                            )
                        },
                    )
                })
                .collect::<Vec<_>>()
                .join("; ")
        },
        verdict: Verdict::of(ok),
        why: (!ok).then(|| "See the measured column.".into()),
    });

    // 6. Counters stay exact (one CPU: no frame is lost before the program).
    let counted: Vec<(&str, Option<&FloodResult>)> = vec![
        ("as shipped", flood(r.floods, PRODUCT_DROP, false, false)),
        (
            "`--no-sources`",
            flood(r.floods, PRODUCT_DROP_UNTRACKED, false, false),
        ),
        ("spoofed", flood(r.floods, PRODUCT_DROP, true, false)),
    ];
    let ok = counted
        .iter()
        .all(|(_, f)| f.is_some_and(|f| f.injected > 0 && f.counted == f.injected));
    t.push(Target {
        what: "class counters equal the frames injected (one-CPU floods)".into(),
        measured: format!(
            "{} (the differential test and the fuzz target run in `cargo xtask test`, not here)",
            counted
                .iter()
                .map(|(label, f)| f.map_or_else(
                    || format!("{label}: not measured"),
                    |f| format!("{label}: {} / {}", f.counted, f.injected)
                ))
                .collect::<Vec<_>>()
                .join("; ")
        ),
        verdict: Verdict::of(ok),
        why: (!ok).then(|| {
            "Frames were lost before the program saw them, or counted twice, or a flood is \
             missing."
                .into()
        }),
    });

    // The agent's own cost.
    let shipped = r.agent.iter().find(|a| !a.hide_kernel_btf);
    let hidden = r.agent.iter().find(|a| a.hide_kernel_btf);
    let cpu = shipped.map_or(f64::NAN, |a| a.cpu_percent);
    // Gated on the agent having reported the flood: a silent agent is cheap.
    let run = shipped.map(|a| (a.reports, a.reported_drops));
    let (verdict, silent) = judge_agent(run, cpu, |x| x < 1.0);
    t.push(Target {
        what: "agent under 1 % of one core (while reporting every second under a flood)".into(),
        measured: shipped.map_or_else(
            || "not measured".into(),
            |a| format!("{cpu:.2} % ({} reports)", a.reports),
        ),
        verdict,
        why: (verdict == Verdict::Miss).then(|| {
            silent.clone().unwrap_or_else(|| {
                "The agent wakes once per interval, reads every per-CPU counter and its source \
                 table and prints a JSON line; XDP work itself is softirq time, not the agent's."
                    .into()
            })
        }),
    });
    #[expect(clippy::cast_precision_loss, reason = "KiB counts are small")]
    let mib = |a: &AgentCost| a.vm_hwm_kib as f64 / 1024.0;
    let rss = shipped.map_or(f64::NAN, mib);
    let (verdict, silent) = judge_agent(run, rss, |x| x < 32.0);
    t.push(Target {
        what: "agent peak RSS under 32 MiB".into(),
        measured: shipped.map_or_else(|| "not measured".into(), |_| format!("{rss:.1} MiB")),
        verdict,
        why: (verdict == Verdict::Miss).then(|| {
            silent.unwrap_or_else(|| {
                format!(
                    "aya 0.14's `EbpfLoader::new()` parses the kernel's BTF \
                     (`/sys/kernel/btf/vmlinux`) before a caller can say `.btf(None)`; the same \
                     agent with that file hidden peaks at {}.",
                    hidden.map_or("(not measured)".into(), |h| format!("{:.1} MiB", mib(h)))
                )
            })
        }),
    });
    t
}

const METHOD: &str = r"## Method

**Per-packet cost.** Each program is loaded once and run with `BPF_PROG_TEST_RUN` (aya's
`TestRun`) on each frame with a large `repeat`; the kernel runs the program `repeat` times in a
loop on one `xdp_buff` and reports the mean time per run. The measuring thread is pinned to one
CPU with `sched_setaffinity` (aya's options have no CPU field; the kernel runs the loop on the
calling CPU with migration disabled). The product runs as three loaded instances: drop mode as
shipped (per-source tracking on), drop mode with tracking off (`--no-sources`), and monitor mode
(mode and tracking are values in the config map). Each is timed on one repeated frame, so the
tracked instances find their one source in the table (the common case: a known sender); a new
source also pays an insert (the spoofed flood below measures that case). The bare
`XDP_PASS`/`XDP_DROP` programs are `nat-pmp-ebpf`'s `bench_pass`/`bench_drop` binaries, built by
the same build as the product: they measure the harness floor, the cost of a program that does
nothing. **The reference** is `bench_ref`, also built by the same build (Rust, aya-ebpf): it
parses Ethernet, IPv4 and UDP (no VLAN, no IP options), checks the destination port 5351, adds
one to a per-CPU array counter and drops; anything else passes. It is the physical limit of the
product's job on this CPU, and every line-rate target is a ratio to it (or to bare `XDP_PASS`,
or to xdp-filter) measured in the same run, so the targets hold on any CPU kind; the Machine
table records the CPU and the kernel's SRSO/retbleed/Spectre v2 mitigation state, which prices
every call and return. The kernel's figure is truncated to whole nanoseconds, so a ratio of two
figures near 20 ns is good to about 5 %. xdp-filter comes from Debian's xdp-tools: the bench
makes a veth in a namespace of its own, runs `xdp-filter load` on it (default features, native
mode) and `xdp-filter port 5351`, reads the attached program's id from `ip -j link` (xdp-filter
attached `{xf}` directly), pins that very program with `bpftool prog pin id N` on a bpffs the
bench mounted, opens the pin with `Xdp::from_pin` and test-runs it like the others. xdp-filter's
state lives on that bpffs (bind-mounted over `/sys/fs/bpf` inside `ip netns exec`) and goes away
with it.

**Paths.** After timing, the bench dumps each timed program's xlated instructions
(`bpftool prog dump xlated`, with the maps' contents as configured) and walks every frame
through them with the interpreter of `nat-pmp-agent/tests/support/xlated.rs`: the instruction
count is the path's real length (what the JIT compiles; array lookups the verifier inlined are
no call), and the walk stops at the first call (helper, BPF-to-BPF or kfunc), which the table
names. The product's fast path covers untagged, 802.1Q, QinQ, PPPoE (with or without PPP
protocol-field compression) and raw-IP frames carrying IPv4 or IPv6 and UDP, and makes no call;
IPv4 fragments, IPv6 extension headers and IPv4-in-IPv6 take the staged walk (calls). The
`xlated::fast_paths_make_no_call` test of `tests/suite` fails when a call appears on the fast
paths.

**Flood.** Two namespaces joined by a veth pair (`btx0` → `brx0`). The sender is `bench_redirect`
(`bpf_redirect` to `btx0`'s ifindex) run with `BPF_PROG_TEST_RUN` and
`BPF_F_TEST_XDP_LIVE_FRAMES` (batches of 64) from a thread inside the sending namespace: the
kernel turns the test input into real frames and transmits each through the veth. xdp-trafficgen
would do the same but does not load on this kernel. The receiving veth's NAPI runs when each batch
ends, on the same CPU, so nothing queues and nothing is lost: the rate is that of the whole path,
generate + transmit + receive + drop, on one CPU. Then every contender again with the receiving
veth in threaded NAPI (`/sys/class/net/brx0/threaded`), its `napi/brx0-N` kernel thread pinned
to CPU 0 and the sender on the last CPU: the receiver's cost alone then decides, as on a NIC
whose sender is another machine, until the receiver outruns the sender; frames a slower receiver
cannot take are lost in the veth's ring (counted / injected shows it), and the frame's bytes
arrive cold from the sender's CPU. The targets are judged on the one-CPU rows (lossless); the
separate-CPU rates are given next to them. A veth only accepts redirected frames when its peer
has an XDP program, so the nftables contenders (a `udp dport 5351 counter drop` rule in a
`netdev` ingress chain, and in an `inet` input chain with frames addressed to the receiver) run
behind the bare `XDP_PASS` program. The product is attached by `Filter::attach` in native mode, as
the agent does, once as shipped and once with per-source tracking off; its class counter is
compared with the number of frames injected. The reference is attached in native mode too and
counted by its own per-CPU counter (`REF_COUNT`).

**Spoofed flood.** The same, with the sender `bench_redirect_spoof`: before redirecting, it writes
198.18.128.0 + (n mod 32,768) into each frame's IPv4 source address, n a per-CPU frame counter,
so every frame comes from a new sender (a scan from spoofed addresses, the source table's worst
case: almost every frame finds its set full and is counted as unattributed). It leaves the IPv4
header checksum as it was, so it is wrong on those frames; XDP receivers do not check it, and
no frame reaches the stack. The product runs as shipped (tracking on), then the reference. After
the product's rounds the bench ends the source table's interval and reads it through the agent
library (`sources::tick`, then `sources::read`) and stops with an error unless every source's
packets plus `unattributed` equal the packets the class counters counted and at most
`LEDGER_MAX` sources are tracked.

**Agent.** The release agent runs in the receiving namespace in drop mode, reporting JSON every
second, while the sender floods it; CPU share is utime + stime from `/proc/<pid>/stat` over the
flood window (after start-up), peak RSS is `VmHWM` from `/proc/<pid>/status`.

**Limits.** A shared 2-core VM: other work on the machine shows up as spread (the load average is
in the machine table). `BPF_PROG_TEST_RUN` measures the program plus the harness loop, not a NIC
driver's receive path; the live-frames flood uses veth, whose per-frame costs are not a physical
NIC's.
";
