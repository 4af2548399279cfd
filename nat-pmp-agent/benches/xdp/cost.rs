//! Per-packet cost: `BPF_PROG_TEST_RUN` with a large `repeat` of each program
//! on each frame, on a thread pinned to one CPU, runs interleaved (every
//! program on every frame, then again) so slow drift from other load on the
//! machine spreads over all cells instead of biasing one; median per cell.

use anyhow::{Context as _, Result};
use aya::programs::{TestRun, TestRunOptions, TestRunResult, Xdp};

use crate::{
    env::thread_cpu_ns,
    frames::{Frame, Group},
};

/// One `BPF_PROG_TEST_RUN` of `repeat` runs.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    /// The kernel's own figure: total time / repeat, truncated to whole ns.
    pub kernel_ns: f64,
    /// The calling thread's CPU time / repeat (fractional; includes the one
    /// syscall, which is nothing over millions of runs).
    pub cpu_ns: f64,
    pub action: u32,
}

/// `BPF_PROG_TEST_RUN` of any program aya runs with plain options: XDP, and
/// the tc egress program (`SchedClassifier`).
pub fn run<P>(prog: &P, frame: &[u8], repeat: u32) -> Result<Sample>
where
    P: for<'a> TestRun<Opts<'a> = TestRunOptions<'a>, Result = TestRunResult>,
{
    let cpu0 = thread_cpu_ns();
    let r = prog
        .test_run(TestRunOptions {
            data_in: Some(frame),
            repeat,
            ..TestRunOptions::default()
        })
        .with_context(|| {
            format!(
                "BPF_PROG_TEST_RUN x{repeat} on a {}-byte frame",
                frame.len()
            )
        })?;
    let cpu = thread_cpu_ns() - cpu0;
    #[expect(
        clippy::cast_precision_loss,
        reason = "nanosecond counts far below 2^52"
    )]
    let cpu_ns = cpu as f64 / f64::from(repeat);
    #[expect(clippy::cast_precision_loss, reason = "a per-run duration in ns")]
    let kernel_ns = r.duration.as_nanos() as f64;
    Ok(Sample {
        kernel_ns,
        cpu_ns,
        action: r.return_value,
    })
}

/// A measured program (XDP unless said otherwise).
pub struct Subject<'a, P = Xdp> {
    pub name: String,
    pub prog: &'a P,
}

/// Medians per (frame, subject).
pub struct CostTable {
    pub frames: Vec<String>,
    /// Per frame: its short name.
    pub short: Vec<&'static str>,
    /// Per frame: a datagram to 5351 (the product must drop it in drop mode).
    pub natpmp: Vec<bool>,
    /// Per frame: the target it is judged by.
    pub groups: Vec<Group>,
    pub subjects: Vec<String>,
    /// `cells[frame][subject]`.
    pub cells: Vec<Vec<Cell>>,
    pub runs: usize,
    pub repeat: u32,
}

#[derive(Clone, Copy, Debug)]
pub struct Cell {
    pub kernel_ns: f64,
    pub cpu_ns: f64,
    /// Spread of the runs (max - min of the kernel figure).
    pub spread_ns: f64,
    pub action: u32,
}

pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        f64::midpoint(v[n / 2 - 1], v[n / 2])
    }
}

pub fn measure<P>(
    frames: &[Frame],
    subjects: &[Subject<'_, P>],
    runs: usize,
    repeat: u32,
) -> Result<CostTable>
where
    P: for<'a> TestRun<Opts<'a> = TestRunOptions<'a>, Result = TestRunResult>,
{
    let mut samples: Vec<Vec<Vec<Sample>>> = vec![vec![Vec::new(); subjects.len()]; frames.len()];
    // One discarded pass: first-run effects (page faults on the test buffer,
    // cold caches, CPU frequency ramp) otherwise land on the first cells.
    for frame in frames {
        for s in subjects {
            run(s.prog, &frame.bytes, repeat / 10)?;
        }
    }
    for run_no in 0..runs {
        eprintln!("bench: per-packet cost, pass {}/{runs}", run_no + 1);
        for (fi, frame) in frames.iter().enumerate() {
            for (si, s) in subjects.iter().enumerate() {
                let sample = run(s.prog, &frame.bytes, repeat)
                    .with_context(|| format!("{} on {}", s.name, frame.name))?;
                samples[fi][si].push(sample);
            }
        }
    }
    let cells = samples
        .into_iter()
        .map(|row| {
            row.into_iter()
                .map(|runs| {
                    let mut k: Vec<f64> = runs.iter().map(|s| s.kernel_ns).collect();
                    let mut c: Vec<f64> = runs.iter().map(|s| s.cpu_ns).collect();
                    let spread = k.iter().copied().fold(f64::MIN, f64::max)
                        - k.iter().copied().fold(f64::MAX, f64::min);
                    Cell {
                        kernel_ns: median(&mut k),
                        cpu_ns: median(&mut c),
                        spread_ns: spread,
                        action: runs.first().map_or(u32::MAX, |s| s.action),
                    }
                })
                .collect()
        })
        .collect();
    Ok(CostTable {
        frames: frames.iter().map(|f| f.name.to_owned()).collect(),
        short: frames.iter().map(|f| f.short).collect(),
        natpmp: frames.iter().map(|f| f.natpmp).collect(),
        groups: frames.iter().map(|f| f.group).collect(),
        subjects: subjects.iter().map(|s| s.name.clone()).collect(),
        cells,
        runs,
        repeat,
    })
}

impl CostTable {
    pub fn cell(&self, frame: usize, subject: &str) -> Option<Cell> {
        let si = self.subjects.iter().position(|s| s == subject)?;
        self.cells.get(frame)?.get(si).copied()
    }
}
