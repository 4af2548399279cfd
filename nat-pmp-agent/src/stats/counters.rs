//! Counter state on the host: one reading of the per-CPU maps, summed.
//!
//! Contract: aggregate classes ([`Class::is_aggregate`], i.e. `pcp`) are
//! never counted by the kernel; [`Snapshot::fill_aggregates`] sets them to
//! the sum of their parts ([`Class::parent`]) and [`Snapshot::total`] leaves
//! them out, so nothing is counted twice.

use nat_pmp_ebpf_common::{Class, ClassCounters};

/// One reading of every class's counters (totals since the program loaded).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Indexed by [`Class::index`].
    pub classes: [ClassCounters; Class::COUNT],
}

impl Snapshot {
    /// The counters of `class`.
    pub fn get(&self, class: Class) -> &ClassCounters {
        &self.classes[class.index() as usize]
    }

    /// All classes added up (aggregates left out: their parts are in).
    pub fn total(&self) -> ClassCounters {
        Class::ALL
            .iter()
            .filter(|c| !c.is_aggregate())
            .fold(ClassCounters::default(), |acc, c| acc.add(self.get(*c)))
    }

    /// Sets every aggregate class (`pcp`) to the sum of its parts.
    pub fn fill_aggregates(&mut self) {
        for class in Class::ALL.iter().filter(|c| c.is_aggregate()) {
            let sum = Class::ALL
                .iter()
                .filter(|c| c.parent() == Some(*class))
                .fold(ClassCounters::default(), |acc, c| acc.add(self.get(*c)));
            self.classes[class.index() as usize] = sum;
        }
    }

    /// Datagrams longer than their opcode needs, over all classes.
    pub fn oversized(&self) -> u64 {
        self.total().oversized_packets
    }

    /// Class-wise sum of two readings (e.g. of two interfaces).
    #[must_use]
    pub fn add(&self, other: &Snapshot) -> Snapshot {
        let mut out = *self;
        for (o, b) in out.classes.iter_mut().zip(&other.classes) {
            *o = o.add(b);
        }
        out
    }

    /// What was counted between `earlier` and `self`.
    #[must_use]
    pub fn since(&self, earlier: &Snapshot) -> Snapshot {
        let mut out = Snapshot::default();
        for ((o, now), then) in out
            .classes
            .iter_mut()
            .zip(&self.classes)
            .zip(&earlier.classes)
        {
            *o = now.since(then);
        }
        out
    }
}
