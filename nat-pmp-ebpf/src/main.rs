//! The XDP program: finds UDP port 5351 behind Ethernet and IPv4/IPv6,
//! classifies the payload with the shared classifier, counts every datagram
//! per class in a per-CPU array and, in drop mode, drops what goes to 5351.
//!
//! Contract: anything that is not UDP to or from port 5351 passes untouched
//! and uncounted, on the cheapest path the parse allows; anything the program
//! cannot parse passes (a filter in front of a router must not drop what it
//! does not understand). Datagrams from port 5351 are counted, never dropped.
#![no_std]
#![no_main]

use core::mem;

use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::{Array, PerCpuArray},
    programs::XdpContext,
};
use nat_pmp_ebpf_common::{
    classify_udp, direction, drops,
    headers::{EthHdr, Ipv4Hdr, Ipv6Hdr, UdpHdr, ETH_P_IP, ETH_P_IPV6, IPPROTO_UDP},
    Class, ClassCounters, Classification, Config,
};

#[map(name = "NATPMP_STATS")]
static STATS: PerCpuArray<ClassCounters> = PerCpuArray::with_max_entries(Class::MAP_ENTRIES, 0);

#[map(name = "NATPMP_CONFIG")]
static CONFIG: Array<Config> = Array::with_max_entries(1, 0);

#[xdp]
#[expect(
    clippy::needless_pass_by_value,
    reason = "the #[xdp] macro fixes the signature"
)]
pub fn nat_pmp(ctx: XdpContext) -> u32 {
    // Unparseable frames pass: see the module contract.
    try_nat_pmp(&ctx).unwrap_or(xdp_action::XDP_PASS)
}

/// Returns a pointer to a `T` at `offset` from the start of the frame, or
/// `Err` if the frame is too short. The only place packet bounds are checked.
#[inline(always)]
fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Result<*const T, ()> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + mem::size_of::<T>() > end {
        return Err(());
    }
    Ok((start + offset) as *const T)
}

/// Copies a `T` out of the frame at `offset`.
#[inline(always)]
fn read_at<T: Copy>(ctx: &XdpContext, offset: usize) -> Result<T, ()> {
    let ptr = ptr_at::<T>(ctx, offset)?;
    // SAFETY: `ptr_at` checked that `size_of::<T>()` bytes at `ptr` lie inside
    // the frame; every `T` read here is a byte-array header of alignment 1.
    Ok(unsafe { *ptr })
}

#[inline(always)]
fn try_nat_pmp(ctx: &XdpContext) -> Result<u32, ()> {
    let eth: EthHdr = read_at(ctx, 0)?;
    let udp_off = match eth.ether_type() {
        ETH_P_IP => {
            let ip: Ipv4Hdr = read_at(ctx, EthHdr::LEN)?;
            // Fragments after the first carry no UDP header: never read their
            // payload as one (RFC 791 §3.2).
            if ip.proto != IPPROTO_UDP || ip.fragment_offset() != 0 {
                return Ok(xdp_action::XDP_PASS);
            }
            let ihl = ip.header_len();
            if ihl < Ipv4Hdr::LEN {
                return Ok(xdp_action::XDP_PASS);
            }
            EthHdr::LEN + ihl
        }
        ETH_P_IPV6 => {
            let ip: Ipv6Hdr = read_at(ctx, EthHdr::LEN)?;
            if ip.next_header != IPPROTO_UDP {
                return Ok(xdp_action::XDP_PASS);
            }
            EthHdr::LEN + Ipv6Hdr::LEN
        }
        _ => return Ok(xdp_action::XDP_PASS),
    };
    let udp: UdpHdr = read_at(ctx, udp_off)?;
    let Some(dir) = direction(udp.src_port(), udp.dst_port()) else {
        return Ok(xdp_action::XDP_PASS);
    };

    let frame_len = ctx.data_end() - ctx.data();
    #[expect(
        clippy::cast_possible_truncation,
        reason = "frames are far below 4 GiB"
    )]
    let available = (frame_len - udp_off) as u32;
    let payload = udp_off + UdpHdr::LEN;
    // The first two payload bytes, where the frame has them. `classify_udp`
    // ignores bytes the UDP length field says are absent.
    let version: u8 = read_at(ctx, payload).unwrap_or(0);
    let opcode: u8 = read_at(ctx, payload + 1).unwrap_or(0);
    let verdict = classify_udp(udp.length(), available, version, opcode);

    let dropped = CONFIG.get(0).is_some_and(|cfg| drops(cfg, dir));
    record(verdict, dropped, frame_len as u64);
    Ok(if dropped {
        xdp_action::XDP_DROP
    } else {
        xdp_action::XDP_PASS
    })
}

/// The one place verdicts are counted.
#[inline(always)]
fn record(verdict: Classification, dropped: bool, bytes: u64) {
    let Some(c) = STATS.get_ptr_mut(verdict.class.index()) else {
        return;
    };
    // SAFETY: the pointer is this CPU's slot of a per-CPU array entry; XDP
    // runs with preemption disabled, so nothing else writes it concurrently.
    let c = unsafe { &mut *c };
    if dropped {
        c.dropped_packets += 1;
        c.dropped_bytes += bytes;
    } else {
        c.passed_packets += 1;
        c.passed_bytes += bytes;
    }
    if verdict.oversized {
        c.oversized_packets += 1;
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
