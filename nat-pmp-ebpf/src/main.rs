//! The XDP program: walks the frame with the shared walk (Ethernet, VLAN,
//! PPPoE or raw IP; IPv4, IPv6 with extension headers, IPv4 in IPv6; UDP),
//! classifies the payload with the shared classifier, counts every datagram
//! per class in a per-CPU array and, in drop mode, drops what goes to 5351.
//! All of the decision is `nat_pmp_ebpf_common::decide`; this file only
//! supplies packet bytes, maps and counters. Counted datagrams also update
//! their sender's entry in the per-CPU LRU map of sources (unless
//! per-source tracking is off); drop mode lets through senders in the
//! allowlist (an LPM trie).
//!
//! Contract: anything that is not UDP to or from port 5351 passes untouched
//! and uncounted, on the cheapest path the parse allows; anything the program
//! cannot parse passes (a filter in front of a router must not drop what it
//! does not understand). Datagrams from port 5351 are counted, never dropped.
#![no_std]
#![no_main]
// Everything on the packet path must be inlined: a BPF-to-BPF call costs a
// stack frame out of 512 bytes and is verified again at every call site.
#![expect(
    clippy::inline_always,
    reason = "the packet path is inlined on purpose"
)]

use core::mem;

use aya_ebpf::{
    bindings::{xdp_action, xdp_md},
    helpers::bpf_ktime_get_coarse_ns,
    macros::{map, xdp},
    maps::{lpm_trie::Key, Array, LpmTrie, LruHashMap, LruPerCpuHashMap, PerCpuArray},
    programs::XdpContext,
};
use nat_pmp_ebpf_common::{
    decide,
    parse::{Plain, MAX_OFFSET},
    Allowlist, Bytes, Class, ClassCounters, Config, FragEntry, FragKey, FragTable, LogWindow,
    Outcome, SourceStats, Trace, ALLOW_MAX_ENTRIES, DROP_LOG_PER_SEC, FRAGS_MAX_ENTRIES,
    SOURCES_MAX_ENTRIES,
};

#[map(name = "NATPMP_STATS")]
#[expect(clippy::cast_possible_truncation, reason = "23 classes")]
static STATS: PerCpuArray<ClassCounters> = PerCpuArray::with_max_entries(Class::COUNT as u32, 0);

#[map(name = "NATPMP_CONFIG")]
static CONFIG: Array<Config> = Array::with_max_entries(1, 0);

/// First fragments seen on port 5351 (see `FragTable` in -common for why an
/// LRU: bounded memory under a flood, old datagrams age out by themselves).
#[map(name = "NATPMP_FRAGS")]
static FRAGS: LruHashMap<FragKey, FragEntry> = LruHashMap::with_max_entries(FRAGS_MAX_ENTRIES, 0);

/// Senders of counted datagrams (see `SOURCES_MAX_ENTRIES` in -common for
/// the bound and its memory). Per-CPU values: no atomics and no lost
/// updates between CPUs; the LRU is shared, so the bound is on the whole
/// map and a flood of spoofed sources evicts the least recently seen.
#[map(name = "NATPMP_SOURCES")]
static SOURCES: LruPerCpuHashMap<[u8; 16], SourceStats> =
    LruPerCpuHashMap::with_max_entries(SOURCES_MAX_ENTRIES, 0);

/// Source prefixes drop mode lets through (IPv4 as IPv4-mapped IPv6).
#[map(name = "NATPMP_ALLOW")]
static ALLOW: LpmTrie<[u8; 16], u32> = LpmTrie::with_max_entries(ALLOW_MAX_ENTRIES, 0);

/// The drop log's rate limit: one window per CPU, so no atomics.
#[map(name = "NATPMP_LOG_RATE")]
static LOG_RATE: PerCpuArray<LogWindow> = PerCpuArray::with_max_entries(1, 0);

/// The last frame's decision, written only when tracing is on (tests).
#[map(name = "NATPMP_TRACE")]
static TRACE: Array<Trace> = Array::with_max_entries(1, 0);

/// Set at load time (`EbpfLoader::override_global`) by tests only. It lives
/// in `.rodata`, so the verifier treats it as a constant and removes the
/// tracing code when it is 0: the normal path does not even test it.
#[unsafe(no_mangle)]
static NATPMP_TRACE_ON: u32 = 0;

#[xdp]
#[expect(clippy::needless_pass_by_value, reason = "the #[xdp] entry signature")]
pub fn nat_pmp(ctx: XdpContext) -> u32 {
    let pkt = Packet::new(&ctx);
    // A missing config entry cannot happen (arrays are preallocated); the
    // default is monitor mode on Ethernet, tracking sources.
    let config = CONFIG.get(0).copied().unwrap_or_default();
    let mut allow = Allow {
        empty: config.allow_prefixes == 0,
    };
    let outcome = decide(&pkt, &config, &mut Frags, &mut allow);
    if let Some(class) = outcome.class {
        record(class, &outcome);
        let track = config.tracks_sources();
        if track || outcome.drop {
            // One clock read serves both. The coarse clock (the last tick,
            // CLOCK_MONOTONIC_COARSE) reads no hardware counter: in a VM a
            // precise read costs as much as the rest of the frame's work,
            // and a source's first/last-seen times and a one-second log
            // window need no better than a tick.
            // SAFETY: a helper without arguments.
            let now = unsafe { bpf_ktime_get_coarse_ns() };
            if track {
                track_source(class, &outcome, now);
            }
            if outcome.drop {
                log_drop(&ctx, class, &outcome, now);
            }
        }
    }
    let action = if outcome.drop {
        xdp_action::XDP_DROP
    } else {
        xdp_action::XDP_PASS
    };
    // SAFETY: a plain read of a `u32` static; volatile so that the compiler
    // keeps the load for the loader to patch instead of folding the 0.
    if unsafe { core::ptr::read_volatile(&raw const NATPMP_TRACE_ON) } != 0 {
        trace(&outcome, action);
    }
    action
}

/// The frame as the shared walk sees it.
struct Packet {
    start: usize,
    end: usize,
    ctx: *mut xdp_md,
}

impl Packet {
    /// The frame's bounds, loaded from the context. Volatile loads: the
    /// compiler must not reuse an earlier load, or `Bytes::afresh` would
    /// hand the staged walk the fast path's pointers (and their checked
    /// ranges) again.
    #[inline(always)]
    fn new(ctx: &XdpContext) -> Self {
        Packet::from_raw(ctx.ctx)
    }

    #[inline(always)]
    fn from_raw(ctx: *mut xdp_md) -> Self {
        // SAFETY: `ctx` is the program's context pointer, valid for the
        // whole run; `data` and `data_end` are plain `u32` fields.
        let (data, data_end) = unsafe {
            (
                core::ptr::read_volatile(&raw const (*ctx).data),
                core::ptr::read_volatile(&raw const (*ctx).data_end),
            )
        };
        Packet {
            start: data as usize,
            end: data_end as usize,
            ctx,
        }
    }
}

impl Bytes for Packet {
    #[inline(always)]
    fn afresh<R>(&self, f: impl FnOnce(&Self) -> R) -> R {
        f(&Packet::from_raw(self.ctx))
    }

    #[inline(always)]
    fn frame_len(&self) -> usize {
        self.end - self.start
    }

    /// The one place packet bounds are checked.
    #[inline(always)]
    fn read<T: Plain>(&self, off: usize) -> Option<T> {
        // The walk never asks beyond MAX_OFFSET; the mask restates that
        // bound where the verifier needs it, at the pointer arithmetic.
        let off = off & MAX_OFFSET;
        let ptr = self.start + off;
        if ptr + mem::size_of::<T>() > self.end {
            return None;
        }
        // SAFETY: the `size_of::<T>()` bytes at `ptr` lie inside the frame
        // (checked just above against `data_end`); the read is unaligned and
        // `T: Plain` makes every bit pattern valid.
        Some(unsafe { core::ptr::read_unaligned(ptr as *const T) })
    }
}

/// The LRU map of first fragments, as the shared `FragTable`.
struct Frags;

impl FragTable for Frags {
    #[inline(always)]
    fn lookup(&mut self, key: &FragKey) -> Option<FragEntry> {
        // SAFETY: the reference is copied out at once; a concurrent update
        // of an entry can at worst give a stale direction.
        unsafe { FRAGS.get(key) }.copied()
    }

    #[inline(always)]
    fn remember(&mut self, key: &FragKey, entry: FragEntry) {
        // An LRU insert only fails if the kernel cannot allocate; the
        // datagram's later fragments then pass uncounted.
        let _ = FRAGS.insert(key, entry, 0);
    }
}

/// The LPM trie as the shared `Allowlist`.
struct Allow {
    /// The agent's count of prefixes is 0: no lookup (and no call).
    empty: bool,
}

impl Allowlist for Allow {
    #[inline(always)]
    fn allows(&mut self, src: &[u8; 16]) -> bool {
        !self.empty && allow_lookup(src)
    }
}

/// Its own BPF function: the 20-byte trie key then lives in its frame, not
/// in the entry function's, which is close to the 512-byte stack.
#[inline(never)]
fn allow_lookup(src: &[u8; 16]) -> bool {
    ALLOW.get(Key::new(128, *src)).is_some()
}

/// Adds a counted datagram to its sender's entry (this CPU's slot), inlined:
/// a known source costs the map lookup and no BPF-to-BPF call.
#[inline(always)]
#[expect(
    clippy::needless_borrows_for_generic_args,
    reason = "a reference into the outcome: no 16-byte key copy on the 512-byte stack"
)]
fn track_source(class: Class, outcome: &Outcome, now: u64) {
    let bit = 1u32 << (class.index() & 31);
    if let Some(s) = SOURCES.get_ptr_mut(&outcome.src) {
        // SAFETY: this CPU's slot of a per-CPU entry; XDP runs with
        // preemption disabled, so nothing else writes it concurrently. An
        // entry evicted meanwhile stays valid memory until an RCU grace
        // period ends (the update is then lost, as the entry is).
        let s = unsafe { &mut *s };
        if s.packets == 0 {
            // First datagram on this CPU (another CPU created the entry).
            s.first_seen_ns = now;
        }
        s.packets += 1;
        s.bytes += outcome.bytes;
        s.last_seen_ns = now;
        s.classes |= bit;
    } else {
        new_source(outcome, now, bit);
    }
}

/// A source not in the map yet (or evicted): its own BPF function, so its
/// 40-byte value lives in its own stack frame; it runs once per new source.
#[inline(never)]
#[expect(
    clippy::needless_borrows_for_generic_args,
    reason = "references, not copies, on the 512-byte stack"
)]
fn new_source(outcome: &Outcome, now: u64, bit: u32) {
    let fresh = SourceStats {
        packets: 1,
        bytes: outcome.bytes,
        first_seen_ns: now,
        last_seen_ns: now,
        classes: bit,
        pad: 0,
    };
    // Inserting a per-CPU value sets this CPU's slot and zeroes the
    // others; if another CPU created the entry meanwhile, the kernel
    // writes this CPU's slot of it (`__htab_lru_percpu_map_update_elem`
    // copies into an existing element), so nothing is lost. It fails
    // only if the kernel cannot allocate; the source then goes
    // untracked (the class counters still count it).
    let _ = SOURCES.insert(&outcome.src, &fresh, 0);
}

/// Logs a dropped datagram (source and class) through aya-log, at most
/// `DROP_LOG_PER_SEC` per CPU per one-second window: a flood costs one
/// per-CPU array access per drop (inlined, no call) and logs no more than
/// the bound.
#[inline(always)]
fn log_drop(ctx: &XdpContext, class: Class, outcome: &Outcome, now: u64) {
    let Some(w) = LOG_RATE.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's slot; XDP runs with preemption disabled.
    let w = unsafe { &mut *w };
    if now.wrapping_sub(w.start_ns) >= 1_000_000_000 {
        w.start_ns = now;
        w.logged = 0;
    }
    if w.logged >= DROP_LOG_PER_SEC {
        return;
    }
    w.logged += 1;
    log_line(ctx, class, outcome);
}

/// The log line itself: its own BPF function, reached at most
/// `DROP_LOG_PER_SEC` times per second per CPU. One call site with
/// fixed-size arguments: each aya-log call is verified again for every
/// path that reaches it, and copying a string costs far more than a
/// number. The agent turns the class index into its name and IPv4-mapped
/// sources into IPv4 (`nat_pmp_agent::droplog`).
#[inline(never)]
fn log_line(ctx: &XdpContext, class: Class, outcome: &Outcome) {
    aya_log_ebpf::info!(
        ctx,
        "dropped class {} from {:i}",
        class.index(),
        outcome.src
    );
}

/// The one place verdicts are counted.
#[inline(always)]
fn record(class: Class, outcome: &Outcome) {
    let Some(c) = STATS.get_ptr_mut(class.index()) else {
        return;
    };
    // SAFETY: the pointer is this CPU's slot of a per-CPU array entry; XDP
    // runs with preemption disabled, so nothing else writes it concurrently.
    let c = unsafe { &mut *c };
    if outcome.drop {
        c.dropped_packets += 1;
        c.dropped_bytes += outcome.bytes;
    } else {
        c.passed_packets += 1;
        c.passed_bytes += outcome.bytes;
    }
    if outcome.oversized {
        c.oversized_packets += 1;
    }
}

/// Writes the decision into the trace map (tests only).
#[inline(never)]
fn trace(outcome: &Outcome, action: u32) {
    let Some(t) = TRACE.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: entry 0 of a one-entry array; traced tests run one frame at
    // a time.
    let t = unsafe { &mut *t };
    t.seq = t.seq.wrapping_add(1);
    t.action = action;
    t.class = outcome.class.map_or(Trace::UNCOUNTED, Class::index);
    t.oversized = u32::from(outcome.oversized);
    t.bytes = outcome.bytes;
    t.src = outcome.src;
    t.allowed = u32::from(outcome.allowed);
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
