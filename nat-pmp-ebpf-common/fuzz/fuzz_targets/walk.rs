//! Fuzzes the host reference parser and classifier (the same code the XDP
//! program runs): any bytes, either link type, either mode (the first input
//! byte picks them), with a fresh fragment table per input so that runs are
//! reproducible.
//!
//! Invariants checked on every input:
//! - no panic (the slice reader panics on nothing; arithmetic must not
//!   overflow in debug builds, which cargo-fuzz uses);
//! - bytes counted are the frame length, or 0 when nothing is counted;
//! - the aggregate `pcp` is never produced, and `oversized` only comes with
//!   a NAT-PMP class;
//! - only datagrams to port 5351 (and their later fragments) are dropped,
//!   and only in drop mode; an over-long IPv6 chain is never dropped;
//! - `walk` and `decide` agree on what the frame is;
//! - `decide` (with its fast path) and `decide_slow` (the staged walk
//!   alone) give the same outcome.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nat_pmp_ebpf_common::{
    decide_slow, reference::Reference, walk, Class, Config, Found, Link, Mode,
};

fuzz_target!(|data: &[u8]| {
    let Some((&knobs, frame)) = data.split_first() else {
        return;
    };
    let link = if knobs & 1 == 0 { Link::Ethernet } else { Link::RawIp };
    let mode = if knobs & 2 == 0 { Mode::Monitor } else { Mode::Drop };
    let mut r = Reference::new(Config::new(mode).with_link(link));
    let o = r.run(frame);
    match o.class {
        None => {
            assert_eq!(o.bytes, 0);
            assert!(!o.drop && !o.oversized);
        }
        Some(class) => {
            assert_eq!(o.bytes, frame.len() as u64);
            assert!(!class.is_aggregate(), "the aggregate class was counted");
            if o.oversized {
                assert!(class.name().starts_with("natpmp_"), "{class:?} oversized");
            }
            if o.drop {
                assert_eq!(mode, Mode::Drop);
                assert_ne!(class, Class::Ipv6ExtChainTooLong);
            }
        }
    }
    let mut staged = Reference::new(r.config);
    let s = decide_slow(frame, &staged.config, &mut staged.frags, &mut staged.allow);
    assert_eq!(o, s, "the fast path and the staged walk disagree");
    let w = walk(frame, link);
    match w.found {
        Found::Datagram | Found::FirstFragment => {
            assert_eq!(o.class, Some(w.verdict.class));
            assert_eq!(o.oversized, w.verdict.oversized);
        }
        Found::Pass => assert_eq!(o.class, None),
        Found::ChainTooLong => assert_eq!(o.class, Some(Class::Ipv6ExtChainTooLong)),
        Found::LaterFragment => {
            assert!(matches!(o.class, None | Some(Class::FragmentNonfirst)));
        }
    }
});
