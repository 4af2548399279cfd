//! Benchmark traffic generator for a spoofed scan: `bench_redirect`, but
//! every IPv4 frame leaves with a new source address. Before redirecting to
//! the interface whose index is in `BENCH_TX_IFINDEX[0]`, it writes
//! 198.18.128.0 + (n mod 32,768) into the IPv4 source address, n counting
//! this CPU's frames (`SPOOF_SEQ`): 32,768 distinct senders in
//! 198.18.128.0/17 (inside the benchmarking range 198.18.0.0/15, RFC 2544),
//! then the same again.
//!
//! The address is written whole from the counter, never derived from the
//! frame's previous bytes, so it does not matter whether the live-frames
//! harness hands the program fresh or recycled frame data. The IPv4 header
//! checksum is left as it was, so it is wrong on every frame but the
//! first: XDP receivers (the programs under test) do not check it, and
//! nothing here passes the frames to the stack.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action,
    helpers::bpf_redirect,
    macros::{map, xdp},
    maps::{Array, PerCpuArray},
    programs::XdpContext,
};

/// Index 0: the ifindex to transmit on (0 = not configured: drop).
#[map(name = "BENCH_TX_IFINDEX")]
static TX_IFINDEX: Array<u32> = Array::with_max_entries(1, 0);

/// Index 0: frames this CPU has rewritten.
#[map(name = "SPOOF_SEQ")]
static SEQ: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// 198.18.128.0: the first source address.
const BASE: u32 = 0xc612_8000;
/// 32,768 sources (198.18.128.0/17).
const SPAN_MASK: u32 = 0x7fff;

/// The IPv4 header up to the addresses (naturally aligned fields: one
/// store for the address, as `bench_ref` reads it).
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

const ETH_LEN: usize = 14;

#[xdp]
#[expect(clippy::needless_pass_by_value, reason = "the #[xdp] entry signature")]
pub fn bench_redirect_spoof(ctx: XdpContext) -> u32 {
    let ifindex = match TX_IFINDEX.get(0) {
        Some(&i) if i != 0 => i,
        _ => return xdp_action::XDP_DROP,
    };
    let (start, end) = (ctx.data(), ctx.data_end());
    if start + ETH_LEN + core::mem::size_of::<Ipv4>() <= end {
        // SAFETY: the check above puts the EtherType and the IPv4 header
        // inside the frame.
        let ethertype = unsafe { *((start + 12) as *const u16) };
        if ethertype == 0x0800u16.to_be() {
            if let Some(seq) = SEQ.get_ptr_mut(0) {
                // SAFETY: this CPU's slot of a per-CPU array; XDP runs with
                // preemption disabled. The header lies in the frame (above).
                unsafe {
                    let n = *seq;
                    *seq = n.wrapping_add(1);
                    let ip = (start + ETH_LEN) as *mut Ipv4;
                    (*ip).src = (BASE | (n & SPAN_MASK)).to_be();
                }
            }
        }
    }
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

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
