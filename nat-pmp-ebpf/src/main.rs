//! The XDP program: walks the frame with the shared walk (Ethernet, VLAN,
//! PPPoE or raw IP; IPv4, IPv6 with extension headers, IPv4 in IPv6; UDP),
//! classifies the payload with the shared classifier, counts every datagram
//! per class in a per-CPU array and, in drop mode, drops what goes to 5351.
//! All of the decision is `nat_pmp_ebpf_common::decide`; this file only
//! supplies packet bytes, maps and counters. Counted datagrams also add to
//! their sender's slot in the per-CPU source table (unless per-source
//! tracking is off); drop mode lets through senders in the allowlist (an
//! LPM trie).
//!
//! Contract: anything that is not UDP to or from port 5351 passes untouched
//! and uncounted, on the cheapest path the parse allows; anything the program
//! cannot parse passes (a filter in front of a router must not drop what it
//! does not understand). Datagrams from port 5351 are counted, never dropped.
//!
//! Cost contract: the path of every frame the fast path takes (untagged,
//! VLAN, QinQ and PPPoE Ethernet or raw IP; IPv4 or IPv6 with UDP right
//! after the fixed header) makes no helper call and no BPF-to-BPF call:
//! the maps it touches are arrays, whose lookups the verifier inlines, and
//! time comes from the agent (`AgentClock`), not a kernel clock. Only a
//! sample of dropped datagrams (a budget the agent refills), a non-empty
//! allowlist, fragments, IPv6 extension headers and IPv4 in IPv6 call out.
//! `tests/suite/xlated.rs` checks this on the loaded program.
#![no_std]
#![no_main]
// One-instruction packet loads (`PacketWindow`): the BPF backend otherwise
// reads a field at an unknown alignment a byte at a time.
#![feature(asm_experimental_arch)]
// Everything on the packet path must be inlined: a BPF-to-BPF call costs a
// stack frame out of 512 bytes and is verified again at every call site.
#![expect(
    clippy::inline_always,
    reason = "the packet path is inlined on purpose"
)]

use core::mem;

use aya_ebpf::{
    bindings::{__sk_buff, xdp_action, xdp_md, TC_ACT_UNSPEC},
    helpers::bpf_ktime_get_ns,
    macros::{classifier, map, xdp},
    maps::{lpm_trie::Key, Array, LpmTrie, LruHashMap, PerCpuArray},
    programs::{TcContext, XdpContext},
};
use nat_pmp_ebpf_common::{
    action, apply, decide_answer, decide_fast, source_set,
    walk::{staged_counted, Counted, Plain, Window, MAX_OFFSET},
    words_addr, AgentClock, Allowlist, Answer, AnswerLast, AnsweredTo, Bytes, Class, ClassCounters,
    Config, FastDecision, FragEntry, FragKey, FragTable, Layout, Outcome, SourceSet, Trace,
    Unattributed, ALLOW_MAX_ENTRIES, ANSWERED_TO_MAX_ENTRIES, FRAGS_MAX_ENTRIES,
    SOURCE_GENERATIONS, SOURCE_SETS,
};

#[map(name = "NATPMP_STATS")]
#[expect(clippy::cast_possible_truncation, reason = "23 classes")]
static STATS: PerCpuArray<ClassCounters> = PerCpuArray::with_max_entries(Class::COUNT as u32, 0);

/// The configuration, in a global of its own section: the loader makes the
/// section a one-entry array map (the agent pins it as `NATPMP_CONFIG` and
/// writes it like any array), and the program reads it in place (direct
/// value access: one instruction, no lookup).
#[unsafe(no_mangle)]
#[unsafe(link_section = ".data.config")]
static mut NATPMP_CONFIG: Config = Config::new(nat_pmp_ebpf_common::Mode::Monitor);

/// First fragments seen on port 5351 (see `FragTable` in -common for why an
/// LRU: bounded memory under a flood, old datagrams age out by themselves).
#[map(name = "NATPMP_FRAGS")]
static FRAGS: LruHashMap<FragKey, FragEntry> = LruHashMap::with_max_entries(FRAGS_MAX_ENTRIES, 0);

/// Senders of counted datagrams: see `MAP_SOURCES` in -common for the
/// layout, the epochs and the bound. Per-CPU, so no atomics and no lost
/// updates between CPUs.
#[map(name = "NATPMP_SOURCES")]
static SOURCES: PerCpuArray<SourceSet> =
    PerCpuArray::with_max_entries(SOURCE_GENERATIONS * SOURCE_SETS, 0);

/// Counted datagrams whose sender found no free slot.
#[map(name = "NATPMP_UNATTRIBUTED")]
static UNATTRIBUTED: PerCpuArray<Unattributed> = PerCpuArray::with_max_entries(1, 0);

/// Source prefixes drop mode lets through (IPv4 as IPv4-mapped IPv6).
#[map(name = "NATPMP_ALLOW")]
static ALLOW: LpmTrie<[u8; 16], u32> = LpmTrie::with_max_entries(ALLOW_MAX_ENTRIES, 0);

/// The agent's clock: the epoch of the source table and the drop log's
/// budget, in a global of its own section (read in place, like
/// `NATPMP_CONFIG`); only the agent writes the epoch, the program only
/// takes drop-log tokens.
#[unsafe(no_mangle)]
#[unsafe(link_section = ".data.clock")]
static mut NATPMP_CLOCK: AgentClock = AgentClock {
    tokens: 0,
    epoch: 0,
    pad: 0,
};

/// The layout version and agent version of this instance, written by the
/// agent after loading and pinned with the other maps: what a later agent
/// reads to know how to take the instance over. The program never reads it.
#[map(name = "NATPMP_LAYOUT")]
static LAYOUT: Array<Layout> = Array::with_max_entries(1, 0);

/// The class counters carried over from the programs an in-place upgrade
/// replaced (`MAP_CARRIED`): written by the agent, added to the counters
/// when it reads them. The program never reads it. Not in the object built
/// with the test-only feature `previous-layout` (layout 1, from before it),
/// which the upgrade tests pin as an older agent would have.
#[cfg(not(feature = "previous-layout"))]
#[map(name = "NATPMP_CARRIED")]
static CARRIED: Array<ClassCounters> =
    Array::with_max_entries(nat_pmp_ebpf_common::CARRIED_ENTRIES, 0);

/// The last frame's decision, written only when tracing is on (tests).
#[map(name = "NATPMP_TRACE")]
static TRACE: Array<Trace> = Array::with_max_entries(1, 0);

/// Set at load time (`EbpfLoader::override_global`) by tests only. It lives
/// in `.rodata`, so the verifier treats it as a constant and removes the
/// tracing code when it is 0: the normal path does not even test it.
#[unsafe(no_mangle)]
static NATPMP_TRACE_ON: u32 = 0;

/// Answers that left the interface from port 5351, per class (the egress
/// program's counters; `MAP_ANSWERED` in -common).
#[map(name = "NATPMP_ANSWERED")]
#[expect(clippy::cast_possible_truncation, reason = "23 classes")]
static ANSWERED: PerCpuArray<ClassCounters> = PerCpuArray::with_max_entries(Class::COUNT as u32, 0);

/// Who got an answer: destination to packets, bytes, last time. An LRU, so
/// that answering many peers cannot grow memory (`MAP_ANSWERED_TO`).
#[map(name = "NATPMP_ANSWERED_TO")]
static ANSWERED_TO: LruHashMap<[u8; 16], AnsweredTo> =
    LruHashMap::with_max_entries(ANSWERED_TO_MAX_ENTRIES, 0);

/// The last answer's destination and time (`MAP_ANSWER_LAST`).
#[map(name = "NATPMP_ANSWER_LAST")]
static ANSWER_LAST: Array<AnswerLast> = Array::with_max_entries(1, 0);

/// tcx's "next": the verdict of an observer. Unlike `TC_ACT_OK` (tcx's
/// "pass", which ends the chain) it lets every tcx program after this one
/// and the legacy clsact filters decide as if this program were not there;
/// with nothing after it the packet leaves. Never drops, never modifies.
const TCX_NEXT: i32 = TC_ACT_UNSPEC;

/// The tc egress program: counts the answers this router sends from port
/// 5351 (NAT-PMP/PCP responses leaving the interface: exposure) with the
/// answers-only mode of the shared walk and classifier, by class and by
/// destination. Everything else leaves at the first header that tells,
/// uncounted. Always returns [`TCX_NEXT`].
#[classifier]
#[expect(
    clippy::needless_pass_by_value,
    reason = "the #[classifier] entry signature"
)]
pub fn nat_pmp_egress(ctx: TcContext) -> i32 {
    let pkt = Packet::from_raw(ctx.skb.skb);
    // SAFETY: as in `nat_pmp`: the agent rewrites the global as a whole.
    #[expect(
        clippy::deref_addrof,
        reason = "a reference to a `static mut` must go through a raw pointer"
    )]
    let config: &Config = unsafe { &*(&raw const NATPMP_CONFIG) };
    if let Some(answer) = decide_answer(&pkt, config.link()) {
        record_answer(&answer);
    }
    TCX_NEXT
}

/// Counts an answer: its class with the XDP path's `ClassCounters::count`,
/// its destination in the LRU (atomic adds: the entry is shared by every
/// CPU), and the last answer. Its own BPF function: answers are rare, and
/// the 16-byte key stays out of the entry's frame.
#[inline(never)]
fn record_answer(answer: &Answer) {
    if let Some(c) = ANSWERED.get_ptr_mut(answer.class.index()) {
        // SAFETY: this CPU's slot of a per-CPU array entry; tc programs run
        // with preemption disabled, so nothing else writes it concurrently.
        let c = unsafe { &mut *c };
        c.count(&answer.outcome());
    }
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let dst = answer.destination();
    if let Some(e) = ANSWERED_TO.get_ptr_mut(dst) {
        // SAFETY: an entry of the LRU, valid during this run (RCU); the
        // counts are atomic adds (other CPUs add too), the time a plain
        // aligned store (any CPU's recent time will do).
        unsafe {
            atomic_add(&raw mut (*e).packets, 1);
            atomic_add(&raw mut (*e).bytes, answer.bytes);
            core::ptr::write_volatile(&raw mut (*e).last_ns, now);
        }
    } else {
        // A first answer to this peer. Two CPUs racing here: the second
        // insert fails (BPF_NOEXIST) and its answer is missing from this
        // peer's count only (the class counters have it).
        let _ = ANSWERED_TO.insert(
            dst,
            AnsweredTo {
                packets: 1,
                bytes: answer.bytes,
                last_ns: now,
            },
            u64::from(aya_ebpf::bindings::BPF_NOEXIST),
        );
    }
    if let Some(l) = ANSWER_LAST.get_ptr_mut(0) {
        // SAFETY: entry 0 of a one-entry array; two CPUs answering at the
        // same instant may leave one's address with the other's time,
        // which is as "last" as either.
        unsafe {
            *l = AnswerLast {
                addr: dst,
                at_ns: now,
                class: answer.class.index(),
                pad: 0,
            };
        }
    }
}

/// `*p += v`, atomically (BPF `lock` add: the target's core has no atomic
/// read-modify-write).
///
/// # Safety
/// `p` must be a valid, aligned `u64` of a map value.
#[inline(always)]
unsafe fn atomic_add(p: *mut u64, v: u64) {
    // SAFETY: the caller's promise.
    unsafe {
        core::arch::asm!("lock *(u64 *)({p} + 0) += {v}", p = in(reg) p, v = in(reg) v,
            options(nostack, preserves_flags));
    }
}

#[xdp]
#[expect(clippy::needless_pass_by_value, reason = "the #[xdp] entry signature")]
pub fn nat_pmp(ctx: XdpContext) -> u32 {
    let pkt = Packet::new(&ctx);
    // SAFETY: the program never writes the global; the agent rewrites it
    // as a whole (a map update) from outside, each field is read once per
    // frame, so a frame sees each field either before or after an update.
    #[expect(
        clippy::deref_addrof,
        reason = "a reference to a `static mut` must go through a raw pointer"
    )]
    let config: &Config = unsafe { &*(&raw const NATPMP_CONFIG) };
    let mut allow = Allow {
        empty: config.allow_prefixes == 0,
    };
    match decide_fast(&pkt, config, &mut allow) {
        FastDecision::Pass => {
            if trace_on() {
                trace(Trace::UNCOUNTED, xdp_action::XDP_PASS << 8, 0, 0, 0);
            }
            xdp_action::XDP_PASS
        }
        FastDecision::Counted(outcome) => finish(&ctx, config, &outcome),
        FastDecision::Slow => {
            // Frames the fast path hands on (fragments, IPv6 extension
            // headers, IPv4 in IPv6): the staged walk (its own function),
            // read through fresh packet bounds so that the verifier checks
            // it once, not once per set of checks the fast path made.
            let pkt = Packet::new(&ctx);
            let counted = staged_counted(&pkt, config.link(), &mut Frags);
            slow(&ctx, config, pkt.frame_len() as u64, counted.as_ref())
        }
    }
}

/// The tail of the staged walk's frames, in a function of its own so that
/// its outcome (in memory) does not push the fast path's out of registers,
/// and its stack frame is not on top of the walk's.
#[inline(never)]
fn slow(ctx: &XdpContext, config: &Config, len: u64, counted: Option<&Counted>) -> u32 {
    let mut allow = Allow {
        empty: config.allow_prefixes == 0,
    };
    let outcome = apply(len, config, counted, &mut allow);
    finish(ctx, config, &outcome)
}

/// Counts, tracks, logs and returns the action: the one tail of both paths.
#[inline(always)]
fn finish(ctx: &XdpContext, config: &Config, outcome: &Outcome) -> u32 {
    if let Some(class) = outcome.class {
        record(class, outcome);
        if config.tracks_sources() {
            // SAFETY: a plain read of a global the agent rewrites as a
            // whole (a map update); volatile, as the compiler cannot see
            // that writer.
            let clock = unsafe { core::ptr::read_volatile(&raw const NATPMP_CLOCK) };
            track_source(config, &clock, class, outcome);
        }
        if outcome.drop && take_log_token() {
            log_line(ctx, class.index(), outcome.src[0], outcome.src[1]);
        }
    }
    let action = if outcome.drop {
        xdp_action::XDP_DROP
    } else {
        xdp_action::XDP_PASS
    };
    if trace_on() {
        let src = outcome.src;
        trace(
            outcome.class.map_or(Trace::UNCOUNTED, Class::index),
            u32::from(outcome.oversized) | u32::from(outcome.allowed) << 1 | action << 8,
            outcome.bytes,
            src[0],
            src[1],
        );
    }
    action
}

/// Takes one of the drop log's tokens, if any is left this interval.
#[inline(always)]
fn take_log_token() -> bool {
    // SAFETY: an aligned `i64` of a global that lives as long as the
    // program; the agent's map update and other CPUs' atomic adds are its
    // only other writers. The read is volatile (a writer the compiler
    // cannot see); the add is atomic (BPF `lock` add: the target's core
    // has no atomic read-modify-write), so no token is lost, and signed,
    // so CPUs racing for the last one take it below zero.
    unsafe {
        let tokens = &raw mut NATPMP_CLOCK.tokens;
        if core::ptr::read_volatile(tokens) <= 0 {
            return false;
        }
        core::arch::asm!("lock *(u64 *)({p} + 0) += {v}", p = in(reg) tokens,
            v = in(reg) -1i64, options(nostack, preserves_flags));
    }
    true
}

/// Whether tracing is on (tests). The verifier knows the value (a frozen
/// `.rodata` global) and removes the code it guards when it is 0.
#[inline(always)]
fn trace_on() -> bool {
    // SAFETY: a plain read of a `u32` static; volatile so that the compiler
    // keeps the load for the loader to patch instead of folding the 0.
    unsafe { core::ptr::read_volatile(&raw const NATPMP_TRACE_ON) != 0 }
}

/// A program context that holds the packet's bounds: `xdp_md` (XDP) and
/// `__sk_buff` (tc), whose `data` and `data_end` fields the verifier turns
/// into packet pointers.
trait Bounds {
    /// `data` and `data_end`, loaded from the context.
    ///
    /// # Safety
    /// `ctx` must be the program's context pointer.
    unsafe fn bounds(ctx: *mut Self) -> (u32, u32);
}

impl Bounds for xdp_md {
    #[inline(always)]
    unsafe fn bounds(ctx: *mut Self) -> (u32, u32) {
        // SAFETY: the caller's promise; plain `u32` fields.
        unsafe {
            (
                core::ptr::read_volatile(&raw const (*ctx).data),
                core::ptr::read_volatile(&raw const (*ctx).data_end),
            )
        }
    }
}

impl Bounds for __sk_buff {
    #[inline(always)]
    unsafe fn bounds(ctx: *mut Self) -> (u32, u32) {
        // SAFETY: the caller's promise; plain `u32` fields.
        unsafe {
            (
                core::ptr::read_volatile(&raw const (*ctx).data),
                core::ptr::read_volatile(&raw const (*ctx).data_end),
            )
        }
    }
}

/// The frame as the shared walk sees it (through an XDP or a tc context).
struct Packet<C: Bounds = xdp_md> {
    start: usize,
    end: usize,
    ctx: *mut C,
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
}

impl<C: Bounds> Packet<C> {
    #[inline(always)]
    fn from_raw(ctx: *mut C) -> Self {
        // SAFETY: `ctx` is the program's context pointer, valid for the
        // whole run.
        let (data, data_end) = unsafe { C::bounds(ctx) };
        Packet {
            start: data as usize,
            end: data_end as usize,
            ctx,
        }
    }
}

/// The value of a BPF 16-bit load (`v`) read as big-endian.
#[inline(always)]
fn be16_of(v: u64) -> u16 {
    // SAFETY: a BPF load of 16 bits zero-extends into its register. Telling
    // the compiler spares a mask of the upper bits before each compare.
    unsafe { core::hint::assert_unchecked(u16::try_from(v).is_ok()) };
    #[expect(clippy::cast_possible_truncation, reason = "a 16-bit load")]
    u16::from_be(v as u16)
}

/// A run of packet bytes checked against `data_end` (`Bytes::window`):
/// each load is one instruction at a constant offset from `p`.
#[derive(Clone, Copy)]
struct PacketWindow {
    p: usize,
}

impl Window for PacketWindow {
    #[inline(always)]
    fn be16<const I: usize>(&self) -> u16 {
        let v: u64;
        // SAFETY: `window` checked that the frame holds the window and the
        // walk reads only inside it (the verifier rejects the program
        // otherwise); x86-64 and arm64 load at any alignment.
        unsafe {
            core::arch::asm!("{v} = *(u16 *)({p} + {i})", v = out(reg) v, p = in(reg) self.p,
                i = const I, options(pure, readonly, nostack, preserves_flags));
        }
        be16_of(v)
    }

    #[inline(always)]
    fn be16_at<const L: usize, const I: usize>(&self) -> u16 {
        let v: u64;
        // SAFETY: as in `be16`, at `L + I` (the walk checked the window
        // from its start, the header at `L` included).
        unsafe {
            core::arch::asm!("{v} = *(u16 *)({p} + {i})", v = out(reg) v, p = in(reg) self.p,
                i = const L + I, options(pure, readonly, nostack, preserves_flags));
        }
        be16_of(v)
    }

    #[inline(always)]
    fn byte_at<const L: usize, const I: usize>(&self) -> u8 {
        let v: u64;
        // SAFETY: as in `be16_at`.
        unsafe {
            core::arch::asm!("{v} = *(u8 *)({p} + {i})", v = out(reg) v, p = in(reg) self.p,
                i = const L + I, options(pure, readonly, nostack, preserves_flags));
        }
        // SAFETY: a BPF 8-bit load zero-extends (see `be16_of`).
        unsafe { core::hint::assert_unchecked(u8::try_from(v).is_ok()) };
        #[expect(clippy::cast_possible_truncation, reason = "an 8-bit load")]
        let b = v as u8;
        b
    }

    #[inline(always)]
    fn addr4<const I: usize>(&self) -> [u8; 4] {
        let v: u64;
        // SAFETY: as in `be16`.
        unsafe {
            core::arch::asm!("{v} = *(u32 *)({p} + {i})", v = out(reg) v, p = in(reg) self.p,
                i = const I, options(pure, readonly, nostack, preserves_flags));
        }
        #[expect(clippy::cast_possible_truncation, reason = "a 32-bit load")]
        (v as u32).to_ne_bytes()
    }

    #[inline(always)]
    fn addr16<const I: usize>(&self) -> [u64; 2] {
        let (hi, lo): (u64, u64);
        // SAFETY: as in `be16`.
        unsafe {
            core::arch::asm!("{hi} = *(u64 *)({p} + {i})", "{lo} = *(u64 *)({p} + {j})",
                hi = out(reg) hi, lo = out(reg) lo, p = in(reg) self.p, i = const I,
                j = const I + 8, options(pure, readonly, nostack, preserves_flags));
        }
        [hi, lo]
    }

    #[inline(always)]
    fn skip<const N: usize>(&self) -> Self {
        PacketWindow { p: self.p + N }
    }
}

impl<C: Bounds> Bytes for Packet<C> {
    type Win<'a>
        = PacketWindow
    where
        C: 'a;

    #[inline(always)]
    fn window(&self, off: usize, len: usize) -> Option<PacketWindow> {
        self.checked(off, len).map(|p| PacketWindow { p })
    }

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

impl<C: Bounds> Packet<C> {
    /// The address of the `len` bytes at `off`, if the frame holds them:
    /// the check behind every `PacketWindow`. Its loads are opaque to the
    /// compiler (asm), so it cannot drop this check as implied by another
    /// one the verifier cannot relate to it.
    #[inline(always)]
    fn checked(&self, off: usize, len: usize) -> Option<usize> {
        if off > MAX_OFFSET {
            return None;
        }
        let ptr = self.start + (off & MAX_OFFSET);
        if ptr + len > self.end {
            return None;
        }
        Some(ptr)
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
    fn allows(&mut self, src: [u64; 2]) -> bool {
        !self.empty && allow_lookup(src[0], src[1])
    }
}

/// Its own BPF function: the 20-byte trie key then lives in its frame, not
/// in the entry function's, which is close to the 512-byte stack.
#[inline(never)]
fn allow_lookup(src_hi: u64, src_lo: u64) -> bool {
    ALLOW
        .get(Key::new(128, words_addr([src_hi, src_lo])))
        .is_some()
}

/// Adds a counted datagram to its sender's slot in this CPU's set for the
/// current epoch, all inlined: a per-CPU array lookup (the verifier inlines
/// it), a keyed hash and at most `SOURCE_WAYS` two-word compares. Ways fill
/// in order and nothing frees a slot within an epoch, so the first free way
/// means the sender is new. A full set counts the datagram as unattributed.
#[inline(always)]
fn track_source(config: &Config, clock: &AgentClock, class: Class, outcome: &Outcome) {
    let addr = outcome.src;
    let key = clock.generation_base() + source_set(addr, config.hash_key);
    let Some(set) = SOURCES.get_ptr_mut(key) else {
        return;
    };
    // SAFETY: this CPU's copy of a per-CPU array entry; XDP runs with
    // preemption disabled, so nothing else writes it concurrently (the agent
    // only reads generations the program has left).
    let set = unsafe { &mut *set };
    let stamp = clock.source_stamp();
    let bit = 1u32 << (class.index() & 31);
    for slot in &mut set.slots {
        if slot.stamp != stamp {
            slot.addr = addr;
            slot.packets = 1;
            slot.bytes = outcome.bytes;
            slot.classes = bit;
            slot.stamp = stamp;
            return;
        }
        if slot.addr[0] == addr[0] && slot.addr[1] == addr[1] {
            slot.packets += 1;
            slot.bytes += outcome.bytes;
            slot.classes |= bit;
            return;
        }
    }
    if let Some(u) = UNATTRIBUTED.get_ptr_mut(0) {
        // SAFETY: this CPU's slot, as above.
        let u = unsafe { &mut *u };
        u.packets += 1;
        u.bytes += outcome.bytes;
    }
}

/// Logs a dropped datagram (source and class) through aya-log: its own BPF
/// function, reached while the budget lasts (at most `DROP_LOG_PER_SEC`
/// per second, refilled by the agent); a flood costs one load per drop. One call site with
/// fixed-size arguments: each aya-log call is verified again for every
/// path that reaches it, and copying a string costs far more than a
/// number. The agent turns the class index into its name and IPv4-mapped
/// sources into IPv4 (`nat_pmp_agent::droplog`). Scalars, not the
/// outcome: a reference would make the caller keep the outcome in memory
/// on every path.
#[inline(never)]
fn log_line(ctx: &XdpContext, class: u32, src_hi: u64, src_lo: u64) {
    aya_log_ebpf::info!(
        ctx,
        "dropped class {} from {:i}",
        class,
        words_addr([src_hi, src_lo])
    );
}

/// Counts the verdict in this CPU's counters of its class, with the shared
/// `ClassCounters::count`: the host counts exactly as the kernel does.
#[inline(always)]
fn record(class: Class, outcome: &Outcome) {
    let Some(c) = STATS.get_ptr_mut(class.index()) else {
        return;
    };
    // SAFETY: the pointer is this CPU's slot of a per-CPU array entry; XDP
    // runs with preemption disabled, so nothing else writes it concurrently.
    let c = unsafe { &mut *c };
    c.count(outcome);
}

/// Writes the decision into the trace map (tests only). Scalars rather
/// than the outcome (at most five: BPF functions take no stack arguments):
/// nothing is copied to the stack for it on the normal path, where the
/// verifier removes the call. `flags`: bit 0 oversized, bit 1 allowed, the
/// action from bit 8.
#[inline(never)]
fn trace(class: u32, flags: u32, bytes: u64, src_hi: u64, src_lo: u64) {
    let Some(t) = TRACE.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: entry 0 of a one-entry array; traced tests run one frame at
    // a time.
    let t = unsafe { &mut *t };
    t.seq = t.seq.wrapping_add(1);
    t.action = flags >> 8;
    t.class = class;
    t.oversized = flags & 1;
    t.bytes = bytes;
    t.src = words_addr([src_hi, src_lo]);
    t.allowed = flags >> 1 & 1;
}

// User space reads the actions from `nat_pmp_ebpf_common::action`: the
// same values as the kernel's (`enum xdp_action`).
const _: () = {
    assert!(action::XDP_ABORTED == xdp_action::XDP_ABORTED);
    assert!(action::XDP_DROP == xdp_action::XDP_DROP);
    assert!(action::XDP_PASS == xdp_action::XDP_PASS);
    assert!(action::XDP_TX == xdp_action::XDP_TX);
    assert!(action::XDP_REDIRECT == xdp_action::XDP_REDIRECT);
};

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
