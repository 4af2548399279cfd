//! The source table's protocol with the kernel (see `MAP_SOURCES` in
//! -common): the agent owns the table's clock. [`tick`] (once per report
//! interval, by the agent that runs the instance) advances the epoch, waits
//! until no program run that saw the old one is left, and moves what the old
//! generation holds into the ledger ([`crate::stats::ledger`]) for good:
//! exactly, because the program does not touch that generation again until
//! the next tick. [`read`] shows the ledger plus what the current generation
//! holds so far (a process that does not own the instance, such as
//! `status`, sees only that).

use std::sync::{Arc, PoisonError};

use anyhow::Result;

use super::maps::Maps;
use crate::{
    net::sys::{self, monotonic_ns},
    stats::sources::Sources,
};

/// The end of a report interval for the instance's source table (only the
/// agent that runs the instance calls it): the program moves to the other
/// generation, and once no run that saw the old epoch is left, the old
/// generation goes into the ledger. Every CPU gets `log_tokens` drop-log
/// lines for the next interval with it.
pub fn tick(maps: &mut Maps, log_tokens: u64) -> Result<()> {
    let ledger = Arc::clone(&maps.ledger);
    let mut l = ledger.lock().unwrap_or_else(PoisonError::into_inner);
    let before = maps.clock()?;
    maps.set_clock(before.epoch.wrapping_add(1), log_tokens)?;
    let now = monotonic_ns();
    sys::wait_for_program_runs();
    let table = maps.source_table()?;
    l.commit(&table, &before, now);
    Ok(())
}

/// The instance's senders now, and the `top` of them: the ledger plus what
/// the table holds that the ledger has not taken yet.
pub fn read(maps: &Maps, top: usize) -> Result<Sources> {
    let l = maps.ledger.lock().unwrap_or_else(PoisonError::into_inner);
    let clock = maps.clock()?;
    let table = maps.source_table()?;
    let all = l.view(&table, &clock, monotonic_ns());
    let kernel = maps.unattributed()?;
    Ok(Sources::ranked(all, top, kernel.add(&l.folded())))
}
