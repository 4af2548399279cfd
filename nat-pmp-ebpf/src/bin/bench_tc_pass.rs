//! Benchmark reference: the cheapest possible tc program, returning tcx's
//! "next" (`TC_ACT_UNSPEC`, what the egress program returns for every
//! frame) and nothing else. `cargo xtask bench` measures the egress program
//! `nat_pmp_egress` against it on the same frames that are not NAT-PMP:
//! the difference is what counting answers costs every other packet.
#![no_std]
#![no_main]

use aya_ebpf::{bindings::TC_ACT_UNSPEC, macros::classifier, programs::TcContext};

#[classifier]
pub fn bench_tc_pass(_ctx: TcContext) -> i32 {
    TC_ACT_UNSPEC
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
