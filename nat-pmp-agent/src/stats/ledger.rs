//! What the agent has read of one instance's source table for good: the
//! senders of every generation it committed, merged over CPUs and epochs,
//! within a bound. [`crate::bpf::sources`] ends the epochs (`tick`) and shows the
//! senders (`read`); this module holds no handle on the kernel, so the
//! instance's maps ([`crate::bpf::Maps`]) can keep one, shared by all
//! their handles.

use std::collections::HashMap;

use nat_pmp_ebpf_common::{AgentClock, SourceSet, SourceStats, Unattributed};

/// Senders the agent keeps per instance; beyond it, those seen longest ago
/// go to `unattributed` (about 100 bytes each: 1.6 MiB at the bound).
pub const LEDGER_MAX: usize = 16_384;

/// What the agent has read of one instance's source table for good.
#[derive(Debug, Default)]
pub struct Ledger {
    seen: HashMap<[u8; 16], SourceStats>,
    /// The last epoch whose generation is in `seen`.
    committed: Option<u32>,
    /// When the current epoch began (`CLOCK_MONOTONIC` ns).
    epoch_started_ns: Option<u64>,
    /// Let go at [`LEDGER_MAX`].
    folded: Unattributed,
}

/// Adds every slot of `table` stamped `stamp` to `into`, as seen between
/// `first_ns` and `last_ns`.
fn gather(
    table: &[(u32, Vec<SourceSet>)],
    stamp: u32,
    (first_ns, last_ns): (u64, u64),
    into: &mut HashMap<[u8; 16], SourceStats>,
) {
    for (_, per_cpu) in table {
        for set in per_cpu {
            // Stamp 0 is a slot never filled (the program stamps epoch + 1).
            for slot in set
                .slots
                .iter()
                .filter(|s| stamp != 0 && s.stamp == stamp && s.packets > 0)
            {
                let s = SourceStats {
                    packets: slot.packets,
                    bytes: slot.bytes,
                    first_seen_ns: first_ns,
                    last_seen_ns: last_ns,
                    classes: slot.classes,
                    pad: 0,
                };
                into.entry(slot.address())
                    .and_modify(|e| *e = e.merge(&s))
                    .or_insert(s);
            }
        }
    }
}

impl Ledger {
    /// Takes the generation of `ended` (an epoch no program run is in any
    /// more) for good, as seen from the epoch's start to `now_ns`.
    pub(crate) fn commit(
        &mut self,
        table: &[(u32, Vec<SourceSet>)],
        ended: &AgentClock,
        now_ns: u64,
    ) {
        let started = self.epoch_started_ns.unwrap_or(now_ns);
        gather(
            table,
            ended.source_stamp(),
            (started, now_ns),
            &mut self.seen,
        );
        self.committed = Some(ended.epoch);
        self.epoch_started_ns = Some(now_ns);
        self.enforce_bound();
    }

    /// Every sender: the ledger's, plus what the generation of `clock`'s
    /// epoch holds so far. Before a first commit (a process that does not
    /// run the instance, such as `status`), also the previous epoch's
    /// generation, which its owner may not have read yet.
    pub(crate) fn view(
        &self,
        table: &[(u32, Vec<SourceSet>)],
        clock: &AgentClock,
        now_ns: u64,
    ) -> HashMap<[u8; 16], SourceStats> {
        let mut all = self.seen.clone();
        let since = self.epoch_started_ns.unwrap_or(now_ns);
        gather(table, clock.source_stamp(), (since, now_ns), &mut all);
        if self.committed.is_none() {
            gather(table, clock.epoch, (since, now_ns), &mut all);
        }
        all
    }

    /// What the ledger let go at [`LEDGER_MAX`].
    pub(crate) fn folded(&self) -> Unattributed {
        self.folded
    }

    /// Lets go of the senders seen longest ago beyond [`LEDGER_MAX`]; their
    /// counts move to `folded`.
    fn enforce_bound(&mut self) {
        let over = self.seen.len().saturating_sub(LEDGER_MAX);
        if over == 0 {
            return;
        }
        let mut by_age: Vec<([u8; 16], u64, u64)> = self
            .seen
            .iter()
            .map(|(k, s)| (*k, s.last_seen_ns, s.packets))
            .collect();
        by_age.sort_by_key(|&(k, last, packets)| (last, packets, k));
        for (k, _, _) in by_age.into_iter().take(over) {
            if let Some(s) = self.seen.remove(&k) {
                self.folded = self.folded.add(&Unattributed {
                    packets: s.packets,
                    bytes: s.bytes,
                });
            }
        }
    }
}
