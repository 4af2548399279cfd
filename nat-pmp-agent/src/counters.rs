//! Counter state on the host: one reading of the per-CPU maps, summed.

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

    /// All classes added up.
    pub fn total(&self) -> ClassCounters {
        self.classes
            .iter()
            .fold(ClassCounters::default(), |acc, c| acc.add(c))
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
