//! Types, constants and the classifier shared by the XDP program and the host.
//!
//! Contract: everything here is `no_std`, allocation-free and pure. The kernel
//! program bounds-checks packet memory, copies the few bytes it needs into
//! plain values and calls [`classify()`]; the host (unit tests, the agent, the
//! capture replay) calls the very same function, so the two worlds cannot
//! disagree about what a datagram is.
//!
//! Every type that crosses the kernel/user boundary through a map is defined
//! here once, `#[repr(C)]`, `Copy`, without implicit padding.
//!
//! # Modules, by responsibility
//!
//! - [`class`]: the [`Class`] enum and [`CLASSES`], the one table of what
//!   each class is called, means and is shown as.
//! - [`classify`](mod@classify): the payload classifier, the direction of a
//!   datagram and the drop policy.
//! - [`maps`]: the maps' and sections' names and sizes and the types they
//!   hold ([`Config`], [`ClassCounters`], [`Trace`], the source table...).
//! - [`action`]: the XDP actions, for user space.
//! - [`headers`]: the wire headers the walk reads.
//! - [`walk`](mod@walk): the frame walk and the per-frame decision
//!   ([`decide`]), generic over where the bytes come from.
//! - [`samples`]: a payload of every class (for the prober, the capture
//!   generator and tests). Host only (features `host`, `capgen`): `frames`
//!   (test frames), `reference` (the walk over a byte slice and a
//!   `HashMap`), `fuzzing` (the fuzz target's input format, invariants and
//!   seed corpus), `capgen` (the capture generator).
//!
//! Dependencies inside the crate go one way, never back:
//!
//! ```text
//! class   headers   maps   action      (depend on nothing in the crate)
//!    \       |      /
//!     classify              (class, headers, maps::Config)
//!         |
//!       walk                (classify, class, headers, maps)
//!
//! samples (class) and the host-only frames, reference, fuzzing, capgen sit on top:
//! nothing above depends on them.
//! ```
//!
//! Every public item is re-exported here: `nat_pmp_ebpf_common::Name` is the
//! path other crates use (the walk's lower-level pieces the XDP program
//! needs stay under [`walk`](mod@walk)).
// `no_std` for the XDP program; the host-only capture generator needs std.
#![cfg_attr(not(any(test, feature = "capgen")), no_std)]
// The XDP program must get these small functions inlined: a BPF-to-BPF call
// costs a stack frame (512 bytes in all) and re-verification per call site.
#![expect(
    clippy::inline_always,
    reason = "the XDP program needs its hot helpers inlined"
)]

pub mod action;
pub mod class;
pub mod classify;
pub mod headers;
pub mod maps;
pub mod walk;

#[cfg(feature = "capgen")]
pub mod capgen;
#[cfg(any(test, feature = "host"))]
pub mod frames;
#[cfg(any(test, feature = "host"))]
pub mod fuzzing;
#[cfg(any(test, feature = "host"))]
pub mod reference;
pub mod samples;

pub use action::{XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_REDIRECT, XDP_TX};
pub use class::{Class, ClassInfo, Group, CLASSES, LABEL_MAX};
pub use classify::{
    classify, classify_first_fragment, classify_inline, classify_udp, classify_udp_inline,
    direction, drops, natpmp_needed_len, pcp_needed_len, Classification, Direction, NatpmpOpcode,
    NATPMP_OPCODES, NATPMP_PORT, NATPMP_VERSION, PCP_HEADER_LEN, PCP_MAX_LEN, PCP_R_BIT,
    PCP_VERSION,
};
pub use maps::{
    addr_words, source_set, v4_mapped_words, words_addr, AgentClock, AnswerLast, AnsweredTo,
    ClassCounters, Config, FragEntry, FragKey, Layout, Link, Mode, SourceSet, SourceSlot,
    SourceStats, Trace, Unattributed, AGENT_VERSION_LEN, ALLOW_MAX_ENTRIES,
    ANSWERED_TO_MAX_ENTRIES, CARRIED_ENTRIES, CLOCK_SECTION, CONFIG_SECTION, DROP_LOG_PER_SEC,
    EGRESS_PROGRAM_NAME, FRAGS_MAX_ENTRIES, LAYOUT_VERSION, MAP_ALLOW, MAP_ANSWERED,
    MAP_ANSWERED_TO, MAP_ANSWER_LAST, MAP_CARRIED, MAP_CLOCK, MAP_CONFIG, MAP_FRAGS, MAP_LAYOUT,
    MAP_SOURCES, MAP_STATS, MAP_TRACE, MAP_UNATTRIBUTED, PROGRAM_NAME, SOURCES_MAX_ENTRIES,
    SOURCE_GENERATIONS, SOURCE_SETS, SOURCE_WAYS, TRACE_GLOBAL,
};
pub use walk::{
    apply, decide, decide_answer, decide_fast, decide_slow, v4_mapped, walk, Allowlist, Answer,
    Bytes, FastDecision, Found, FragTable, Outcome, Prefix, Walk, MAX_IPV6_EXT_HEADERS,
    MAX_VLAN_TAGS,
};

#[cfg(test)]
mod docs_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod walk_tests;
