//! Benchmark reference: the cheapest possible XDP program, `XDP_DROP` and
//! nothing else. `cargo xtask bench` measures it next to the product on the
//! same frames (the floor of the `BPF_PROG_TEST_RUN` harness for a dropping
//! program) and as the fastest possible drop on the receiving veth of the
//! flood test.
#![no_std]
#![no_main]

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};

#[xdp]
pub fn bench_drop(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_DROP
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
