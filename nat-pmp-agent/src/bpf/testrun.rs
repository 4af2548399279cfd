//! What only tests and the capture replay use: running the program on a
//! frame with `BPF_PROG_TEST_RUN`, its trace, and its fragment table.

use anyhow::{bail, Context as _, Result};
use aya::programs::{TestRun as _, TestRunOptions};
use nat_pmp_ebpf_common::{FragKey, Trace, MAP_FRAGS, MAP_TRACE};

use super::Filter;

impl Filter {
    /// Runs the program once on `frame` with `BPF_PROG_TEST_RUN` (counters
    /// and policy apply as on a live interface) and returns its XDP action.
    pub fn run_frame(&self, frame: &[u8]) -> Result<u32> {
        let result = self
            .program()?
            .test_run(TestRunOptions {
                data_in: Some(frame),
                ..TestRunOptions::default()
            })
            .with_context(|| {
                format!(
                    "running the XDP program on a {}-byte frame (BPF_PROG_TEST_RUN)",
                    frame.len()
                )
            })?;
        Ok(result.return_value)
    }

    /// Runs the tc egress program once on `frame` (an Ethernet frame, as
    /// tc sees it on egress) with `BPF_PROG_TEST_RUN` and returns its
    /// verdict (`TCX_NEXT`, -1, for every frame: it only counts).
    pub fn run_egress(&self, frame: &[u8]) -> Result<i32> {
        let result = self
            .egress_program()
            .context("this filter has no egress program")?
            .test_run(TestRunOptions {
                data_in: Some(frame),
                ..TestRunOptions::default()
            })
            .with_context(|| {
                format!(
                    "running the egress program on a {}-byte frame (BPF_PROG_TEST_RUN)",
                    frame.len()
                )
            })?;
        // The kernel hands back the program's 32-bit return value.
        Ok(result.return_value.cast_signed())
    }

    /// Runs the program once on `frame` and returns the decision it traced.
    /// Needs [`Filter::load_traced`].
    pub fn run_traced(&self, frame: &[u8]) -> Result<Trace> {
        let trace = self
            .trace
            .as_ref()
            .context("run_traced needs a program loaded with Filter::load_traced")?;
        let before = trace
            .get(&0, 0)
            .with_context(|| format!("reading map {MAP_TRACE}"))?;
        let action = self.run_frame(frame)?;
        let after = trace
            .get(&0, 0)
            .with_context(|| format!("reading map {MAP_TRACE}"))?;
        if after.seq != before.seq.wrapping_add(1) || after.action != action {
            bail!(
                "the trace map did not record this run (seq {} -> {}, action {action} vs {})",
                before.seq,
                after.seq,
                after.action
            );
        }
        Ok(after)
    }

    /// The last decision the program traced (needs [`Filter::load_traced`]).
    /// Its `seq` tells how many frames were traced so far.
    pub fn last_trace(&self) -> Result<Trace> {
        self.trace
            .as_ref()
            .context("last_trace needs a program loaded with Filter::load_traced")?
            .get(&0, 0)
            .with_context(|| format!("reading map {MAP_TRACE}"))
    }

    /// Forgets every first fragment the program remembers (tests compare
    /// the kernel with a host table that never evicts).
    pub fn clear_fragments(&mut self) -> Result<()> {
        let frags = self
            .frags
            .as_mut()
            .context("this filter was picked up from pins: its fragment map is not open")?;
        let keys: Vec<FragKey> = frags
            .keys()
            .collect::<Result<_, _>>()
            .with_context(|| format!("listing map {MAP_FRAGS}"))?;
        for key in keys {
            // A key the LRU evicted meanwhile is already gone.
            let _ = frags.remove(&key);
        }
        Ok(())
    }

    /// Instructions the verifier processed when it loaded the program
    /// (`verified_insns`, Linux 5.16+).
    pub fn verified_instructions(&self) -> Result<Option<u32>> {
        Ok(self
            .program()?
            .info()
            .context("reading the program's info (BPF_OBJ_GET_INFO_BY_FD)")?
            .verified_instruction_count())
    }
}
