//! Each frame's path through the loaded programs: how many xlated
//! instructions it executes (what `bpftool prog dump xlated` shows: the
//! program after the verifier rewrote it, what the JIT compiles) and the
//! first call on it, from the interpreter in `tests/support/xlated.rs`,
//! which stops at a call. Its verdict, wherever it reaches `exit`, must be
//! the one `BPF_PROG_TEST_RUN` returned in the per-packet table: otherwise
//! the interpreter is wrong and the bench stops.

use anyhow::{bail, Context as _, Result};

use crate::{
    cost::CostTable,
    frames::Frame,
    support::xlated::{CallKind, Program},
};

/// One frame through one program.
pub struct PathCell {
    /// Instructions executed to `exit`, or to the first call (included).
    pub insns: usize,
    /// The first call reached: its pc and what it calls.
    pub call: Option<(usize, String)>,
}

#[derive(Default)]
pub struct PathTable {
    /// The cost table's subject names of the programs walked.
    pub subjects: Vec<String>,
    /// Each program's size in xlated instructions.
    pub sizes: Vec<usize>,
    pub frames: Vec<String>,
    /// Per frame: on the paths that must make no call.
    pub fast_path: Vec<bool>,
    /// `cells[frame][subject]`; `Err` says why the interpreter could not
    /// follow the path.
    pub cells: Vec<Vec<Result<PathCell, String>>>,
}

impl PathTable {
    pub fn cell(&self, frame: usize, subject: &str) -> Option<&Result<PathCell, String>> {
        let si = self.subjects.iter().position(|s| s == subject)?;
        self.cells.get(frame)?.get(si)
    }
}

/// Walks every frame through each `(subject, program id)`; the programs
/// must be loaded (and configured) as they were timed in `cost`.
pub fn measure(programs: &[(&str, u32)], frames: &[Frame], cost: &CostTable) -> Result<PathTable> {
    let mut table = PathTable {
        subjects: programs.iter().map(|(s, _)| (*s).to_owned()).collect(),
        sizes: Vec::new(),
        frames: frames.iter().map(|f| f.name.to_owned()).collect(),
        fast_path: frames.iter().map(Frame::fast_path).collect(),
        cells: frames.iter().map(|_| Vec::new()).collect(),
    };
    for &(subject, id) in programs {
        let program = Program::load(id)
            .with_context(|| format!("dumping the xlated program of {subject} (id {id})"))?;
        table.sizes.push(program.len());
        for (fi, frame) in frames.iter().enumerate() {
            let cell = match program.run(&frame.bytes) {
                Ok(path) => {
                    if let (Some(ret), Some(c)) = (path.ret, cost.cell(fi, subject)) {
                        if ret != u64::from(c.action) {
                            bail!(
                                "the xlated interpreter returned {ret} for {subject} on {}, \
                                 BPF_PROG_TEST_RUN {}: the interpreter is wrong",
                                frame.name,
                                c.action
                            );
                        }
                    }
                    let call = path.calls.first().map(|c| {
                        let name = program.call_name(c.pc).map_or_else(
                            || match c.kind {
                                CallKind::Helper(imm) => format!("helper #{imm}"),
                                CallKind::BpfToBpf(off) => format!("BPF-to-BPF call pc{off:+}"),
                                CallKind::Kfunc(imm) => format!("kfunc #{imm}"),
                            },
                            str::to_owned,
                        );
                        (c.pc, name)
                    });
                    Ok(PathCell {
                        insns: path.insns,
                        call,
                    })
                }
                Err(e) => Err(format!("{e:#}")),
            };
            table.cells[fi].push(cell);
        }
    }
    Ok(table)
}
