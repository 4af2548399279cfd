//! How counters reach people and programs: the report (a table for people,
//! JSON lines for scripts; [`report`]), the exposure line and answers
//! ([`exposure`]) and the Prometheus endpoint ([`metrics`]).
//!
//! Depends on `bpf` (the metrics endpoint reads an instance's maps),
//! `stats` and `net`.

pub mod exposure;
pub mod metrics;
pub mod report;
