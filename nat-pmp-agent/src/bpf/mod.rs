//! The kernel side of an instance: the embedded XDP object ([`object`]), its
//! maps ([`maps`]), the egress program's answers ([`answered`]), the [`Filter`] lifecycle (load, attach, pin, adopt,
//! re-attach, detach), the in-place upgrade of an instance pinned with
//! another layout ([`upgrade`]), the pins on bpffs ([`pin`]), the source table's
//! protocol ([`sources`]), the program's drop log ([`droplog`]) and what
//! tests and the replay run through `BPF_PROG_TEST_RUN` ([`testrun`]).
//!
//! Depends on `stats` and `net`, never on the features above it.

pub mod answered;
pub mod batch;
pub mod droplog;
pub mod filter;
pub mod maps;
pub mod object;
pub mod pin;
pub mod sources;
pub mod testrun;
pub mod upgrade;

pub use filter::{detach_pinned, locate, Attachment, Filter, Protection};
pub use maps::Maps;
pub use object::EBPF_OBJECT;
