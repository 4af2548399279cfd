//! Fuzzes the host reference parser and classifier (the same code the XDP
//! program runs): an input is a knob byte (link type, mode, allowlist) and a
//! sequence of frames that share one fragment table, so later fragments
//! meet their first. The input format and every invariant checked (among
//! them: dropped exactly when drop mode, to port 5351 and not allowlisted)
//! are in `nat_pmp_ebpf_common::fuzzing`, whose unit tests also run them on
//! the committed seed corpus (`seeds/walk`, from the shared frame builders
//! and the examples in docs/classes.md).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| nat_pmp_ebpf_common::fuzzing::check(data));
