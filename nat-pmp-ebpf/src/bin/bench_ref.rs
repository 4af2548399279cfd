//! Benchmark reference: the physical limit of this product's job, as a
//! minimal aya program written the way the aya book writes one. It parses
//! Ethernet, IPv4 and UDP (no VLAN, no IP options, no fragments), checks the
//! destination port 5351, adds one to a per-CPU array counter and drops;
//! everything else passes. `cargo xtask bench` measures the product against
//! it in the same run: every line-rate target is a ratio to this program.
//!
//! Headers are `#[repr(C)]` structs with naturally aligned `u16`/`u32`
//! fields (as the network-types crate declares them), so each field is one
//! load.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::PerCpuArray,
    programs::XdpContext,
};

#[map(name = "REF_COUNT")]
static COUNT: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[repr(C)]
struct Eth {
    dst: [u8; 6],
    src: [u8; 6],
    proto: u16,
}

#[repr(C)]
struct Ipv4 {
    vihl: u8,
    tos: u8,
    len: u16,
    id: u16,
    frag: u16,
    ttl: u8,
    proto: u8,
    check: u16,
    src: u32,
    dst: u32,
}

#[repr(C)]
struct Udp {
    sport: u16,
    dport: u16,
    len: u16,
    check: u16,
}

const ETH_LEN: usize = 14;
const IPV4_LEN: usize = 20;

/// A pointer to the `T` at `off`, if the frame holds all of it.
#[inline(always)]
fn at<T>(ctx: &XdpContext, off: usize) -> Option<*const T> {
    let start = ctx.data();
    if start + off + core::mem::size_of::<T>() > ctx.data_end() {
        return None;
    }
    Some((start + off) as *const T)
}

#[xdp]
#[expect(clippy::needless_pass_by_value, reason = "the #[xdp] entry signature")]
pub fn bench_ref(ctx: XdpContext) -> u32 {
    try_ref(&ctx).unwrap_or(xdp_action::XDP_PASS)
}

#[inline(always)]
fn try_ref(ctx: &XdpContext) -> Option<u32> {
    let eth: *const Eth = at(ctx, 0)?;
    // SAFETY (all three reads): `at` checked the header lies in the frame.
    if unsafe { (*eth).proto } != 0x0800u16.to_be() {
        return Some(xdp_action::XDP_PASS);
    }
    let ip: *const Ipv4 = at(ctx, ETH_LEN)?;
    if unsafe { (*ip).proto } != 17 {
        return Some(xdp_action::XDP_PASS);
    }
    let udp: *const Udp = at(ctx, ETH_LEN + IPV4_LEN)?;
    if unsafe { (*udp).dport } != 5351u16.to_be() {
        return Some(xdp_action::XDP_PASS);
    }
    if let Some(c) = COUNT.get_ptr_mut(0) {
        // SAFETY: this CPU's slot of a per-CPU array; XDP runs with
        // preemption disabled.
        unsafe { *c += 1 };
    }
    Some(xdp_action::XDP_DROP)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
