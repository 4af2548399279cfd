//! What the counters mean, free of any kernel handle: class counter
//! snapshots ([`counters`]), the answers sent from 5351 ([`answered`]), the senders ([`sources`]) and the ledger that
//! keeps them between report intervals ([`ledger`]), and allowlist prefixes
//! as people write them ([`allow`]).
//!
//! A leaf: depends only on `nat-pmp-ebpf-common`.

pub mod allow;
pub mod answered;
pub mod counters;
pub mod ledger;
pub mod sources;
