//! Benchmark traffic generator: redirects every frame to the interface whose
//! index is in `BENCH_TX_IFINDEX[0]`.
//!
//! `cargo xtask bench` runs it with `BPF_PROG_TEST_RUN` and
//! `BPF_F_TEST_XDP_LIVE_FRAMES`: the kernel builds real frames from the test
//! input and sends each one the program redirects out of that interface (a
//! veth, whose peer runs the filter under test). xdp-trafficgen does the same
//! but does not load on the project's kernels (see the toolchain notes).
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action, helpers::bpf_redirect, macros::map, macros::xdp, maps::Array,
    programs::XdpContext,
};

/// Index 0: the ifindex to transmit on (0 = not configured: drop).
#[map(name = "BENCH_TX_IFINDEX")]
static TX_IFINDEX: Array<u32> = Array::with_max_entries(1, 0);

#[xdp]
pub fn bench_redirect(_ctx: XdpContext) -> u32 {
    match TX_IFINDEX.get(0) {
        Some(&ifindex) if ifindex != 0 => {
            // SAFETY: a helper call with plain integer arguments. In XDP
            // bpf_redirect returns XDP_REDIRECT (or XDP_ABORTED on bad flags).
            let action = unsafe { bpf_redirect(ifindex, 0) };
            #[expect(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                reason = "the helper returns an XDP action, a small non-negative value"
            )]
            let action = action as u32;
            action
        }
        _ => xdp_action::XDP_DROP,
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
