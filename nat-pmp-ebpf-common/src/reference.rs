//! The host reference: the shared [`decide`] over a byte slice and a
//! `HashMap` of first fragments. The differential test holds the kernel to
//! it; the capture replay and the fuzz target use it to classify frames
//! without a kernel.
//!
//! Contract: for a frame, a [`Config`] and the same history of earlier
//! frames, [`Reference::run`] returns what the XDP program does, as long as
//! the kernel's LRU map has not evicted an entry (the host table never
//! evicts; keep fewer than [`crate::FRAGS_MAX_ENTRIES`] / 4 live keys when
//! comparing, or [`Reference::clear_fragments`] together with the kernel
//! map).

extern crate std;

use std::collections::HashMap;

use std::vec::Vec;

use crate::{decide, Allowlist, Config, FragEntry, FragKey, FragTable, Outcome, Prefix};

/// A fragment table that never forgets.
#[derive(Clone, Debug, Default)]
pub struct HostFrags(pub HashMap<FragKey, FragEntry>);

impl FragTable for HostFrags {
    fn lookup(&mut self, key: &FragKey) -> Option<FragEntry> {
        self.0.get(key).copied()
    }

    fn remember(&mut self, key: &FragKey, entry: FragEntry) {
        self.0.insert(*key, entry);
    }
}

/// The allowlist as a list of prefixes: the longest-prefix match of the
/// kernel's LPM trie answers "is it in any of them", which is all
/// [`Allowlist`] asks.
#[derive(Clone, Debug, Default)]
pub struct HostAllow(pub Vec<Prefix>);

impl Allowlist for HostAllow {
    fn allows(&mut self, src: [u64; 2]) -> bool {
        let src = crate::words_addr(src);
        self.0.iter().any(|p| p.contains(&src))
    }
}

/// The host reference: the program's decision, frame by frame.
#[derive(Clone, Debug, Default)]
pub struct Reference {
    pub config: Config,
    pub frags: HostFrags,
    /// The prefixes in the kernel's allowlist map.
    pub allow: HostAllow,
}

impl Reference {
    /// A reference applying `config`, with no fragments seen yet.
    pub fn new(config: Config) -> Self {
        Reference {
            config,
            frags: HostFrags::default(),
            allow: HostAllow::default(),
        }
    }

    /// What the program does with `frame`.
    pub fn run(&mut self, frame: &[u8]) -> Outcome {
        decide(frame, &self.config, &mut self.frags, &mut self.allow)
    }

    /// Forgets every first fragment.
    pub fn clear_fragments(&mut self) {
        self.frags.0.clear();
    }
}
