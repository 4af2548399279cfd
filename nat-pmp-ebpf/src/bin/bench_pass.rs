//! Benchmark reference: the cheapest possible XDP program, `XDP_PASS` and
//! nothing else. `cargo xtask bench` measures it next to the product on the
//! same frames: its cost is the floor of the `BPF_PROG_TEST_RUN` harness (and
//! it is the program a veth peer needs for redirected frames to arrive when
//! nftables, not XDP, is the filter under test).
#![no_std]
#![no_main]

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};

#[xdp]
pub fn bench_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
