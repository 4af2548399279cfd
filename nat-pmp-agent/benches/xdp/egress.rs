//! The tc egress program's cost (issue 13, item 5): `nat_pmp_egress`, which
//! counts the router's answers from port 5351, against `bench_tc_pass`, a
//! tc program that only returns tcx's "next", on every frame that is not
//! NAT-PMP, measured interleaved in the same run (`cost::measure`). Target:
//! within 5 ns of the bare program. One answer frame is measured too (the
//! counting path), for information. Each frame's path (xlated
//! instructions, `paths`) is shown beside its time.

use std::fmt::Write as _;

use anyhow::{ensure, Context as _, Result};
use aya::{programs::SchedClassifier, Ebpf};
use nat_pmp_agent::bpf::Filter;
use nat_pmp_ebpf_common::{
    frames::{ethernet, v4_answer},
    headers::ETH_P_IP,
    Class,
};

use crate::{
    cost::{self, Subject},
    frames::{self, Frame, Group},
    paths, report,
};

pub static BENCH_TC_PASS: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/bench_tc_pass"));

pub const EGRESS: &str = "nat_pmp_egress";
pub const BARE_TC: &str = "bare tc (TCX_NEXT)";
/// The target: at most this much above the bare program, per frame.
pub const TARGET_NS: f64 = 5.0;

pub const BEGIN: &str = "<!-- egress: begin (cargo xtask bench -- --egress-only) -->\n";
pub const END: &str = "<!-- egress: end -->\n";

fn load_tc_pass() -> Result<Ebpf> {
    let mut ebpf = Ebpf::load(BENCH_TC_PASS).context("loading the bench_tc_pass object")?;
    let prog: &mut SchedClassifier = ebpf
        .program_mut("bench_tc_pass")
        .context("the bench_tc_pass object has no program bench_tc_pass")?
        .try_into()
        .context("bench_tc_pass is not a tc program")?;
    prog.load()
        .context("loading the tc program bench_tc_pass (needs root)")?;
    Ok(ebpf)
}

/// The frames: every bench frame that is not NAT-PMP, and one answer.
fn egress_frames() -> Vec<Frame> {
    let mut out: Vec<Frame> = frames::all()
        .into_iter()
        .filter(|f| f.group == Group::NotNatpmp)
        .collect();
    let answer = nat_pmp_agent::probe::sample_payload(Class::NatpmpExternalAddressResponse);
    out.push(Frame {
        name: "answer from 5351 (counted)",
        short: "answer",
        bytes: ethernet(&[], ETH_P_IP, &v4_answer(&answer)),
        natpmp: true,
        group: Group::NotNatpmp,
        untagged: true,
    });
    out
}

/// Measures and renders the section (between [`BEGIN`] and [`END`]).
pub fn section(runs: usize, repeat: u32) -> Result<String> {
    let filter = Filter::load().context("loading the product's eBPF object")?;
    let egress = filter
        .egress_program()
        .context("the product's object has no egress program")?;
    let pass = load_tc_pass()?;
    let bare: &SchedClassifier = pass
        .program("bench_tc_pass")
        .context("no program bench_tc_pass")?
        .try_into()
        .context("bench_tc_pass is not a tc program")?;
    let machine = report::Machine::probe();
    let frames = egress_frames();
    let subjects = [
        Subject {
            name: EGRESS.to_owned(),
            prog: egress,
        },
        Subject {
            name: BARE_TC.to_owned(),
            prog: bare,
        },
    ];
    let table = cost::measure(&frames, &subjects, runs, repeat)?;
    // Each frame's path in the programs just timed (xlated instructions).
    let id = |name: &str, prog: &SchedClassifier| -> Result<u32> {
        Ok(prog
            .info()
            .with_context(|| format!("reading the program info of {name}"))?
            .id())
    };
    let paths = paths::measure(
        &[(EGRESS, id(EGRESS, egress)?), (BARE_TC, id(BARE_TC, bare)?)],
        &frames,
        &table,
    )?;
    let insns = |fi: usize, subject: &str| match paths.cell(fi, subject) {
        Some(Ok(c)) if c.call.is_none() => c.insns.to_string(),
        Some(Ok(c)) => format!("{} to a call", c.insns),
        Some(Err(_)) | None => "?".to_owned(),
    };
    let answered = filter.answered().context("the egress maps")??.packets();
    ensure!(
        answered > 0,
        "the egress program counted no answer: the answer frame did not take its counting path"
    );
    let mut out = String::new();
    let _ = write!(
        out,
        "{BEGIN}## The egress program (answers from 5351)\n\n\
         `BPF_PROG_TEST_RUN` of the tc egress program `nat_pmp_egress` and of `bench_tc_pass` \
         (a tc program that only returns tcx's \"next\"), interleaved, {runs} runs × \
         {repeat} repeats per cell, median ns per packet (kernel figure; spread = max - min \
         over the runs). Target: on traffic that is not NAT-PMP, within {TARGET_NS} ns of the \
         bare program. Path: the xlated instructions the frame executes (`bpftool prog dump \
         xlated`, walked by the interpreter of `tests/support/xlated.rs`), to `exit` or to the \
         first call.\n\n\
         | frame | {EGRESS} | {BARE_TC} | difference | spread | path (insns) | target |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | --- |\n"
    );
    let mut worst: f64 = 0.0;
    for (fi, name) in table.frames.iter().enumerate() {
        let (Some(e), Some(b)) = (table.cell(fi, EGRESS), table.cell(fi, BARE_TC)) else {
            continue;
        };
        let diff = e.kernel_ns - b.kernel_ns;
        let counted = frames[fi].natpmp;
        if !counted {
            worst = worst.max(diff);
        }
        let verdict = if counted {
            "(counted: information)"
        } else if diff <= TARGET_NS {
            "met"
        } else {
            "MISSED"
        };
        let _ = writeln!(
            out,
            "| {name} | {:.0} | {:.0} | {diff:+.0} | {:.0} / {:.0} | {} / {} | {verdict} |",
            e.kernel_ns,
            b.kernel_ns,
            e.spread_ns,
            b.spread_ns,
            insns(fi, EGRESS),
            insns(fi, BARE_TC)
        );
    }
    let _ = write!(
        out,
        "\nLargest difference on traffic that is not NAT-PMP: {worst:+.0} ns (target \
         {TARGET_NS} ns: {}). {}\n\n{END}",
        if worst <= TARGET_NS { "met" } else { "missed" },
        machine.measured("cargo xtask bench -- --egress-only"),
    );
    Ok(out)
}

/// `text` with the egress section replaced (or appended).
pub fn replace(text: &str, section: &str) -> String {
    crate::replace_marked(text, (BEGIN, END), section)
}
