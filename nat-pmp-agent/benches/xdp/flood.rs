//! Flood drop rate: opcode-0 requests injected into a veth pair at the
//! highest rate this machine gives, dropped on the peer by each contender.
//!
//! The sender is `bench_redirect` run with `BPF_PROG_TEST_RUN` and
//! `BPF_F_TEST_XDP_LIVE_FRAMES` from a thread inside the sending namespace:
//! the kernel turns the test input into real frames, batch by batch, and
//! transmits each through the veth (`ndo_xdp_xmit`). The receiving veth
//! takes them in NAPI, which the kernel runs when the sender's batch ends
//! (`local_bh_enable`), on the same CPU: one frame's whole life (generate,
//! transmit, receive, filter) is serial on one pinned CPU, so the rate is
//! 1 / (sender cost + receiver cost) and nothing is lost to queueing. A veth
//! only accepts redirected frames when its peer has an XDP program, so the
//! nftables contenders run behind the bare `XDP_PASS` program.
//!
//! The spoofed flood's sender is `bench_redirect_spoof`: the same, but each
//! frame leaves with a new IPv4 source address (a scan from spoofed
//! addresses, the source table's worst case).

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use aya::{
    maps::Array,
    programs::{TestRun as _, TestRunAttrs, TestRunOptions, Xdp},
    Ebpf,
};

use crate::env::VethPair;

/// Frames per live-frames batch: the kernel's default, and what one NAPI
/// poll (budget 64) of the receiving veth takes in one go.
const BATCH: u32 = 64;

pub struct Sender {
    ebpf: Ebpf,
    /// The program's name in its object (`bench_redirect`, or
    /// `bench_redirect_spoof`, which gives every frame a new IPv4 source).
    program: &'static str,
    /// `Some(cpu)`: the receiving veth runs threaded NAPI, its thread pinned
    /// to `cpu` (not the sender's): sender and receiver on separate CPUs.
    pub receiver_cpu: Option<usize>,
}

impl Sender {
    /// Loads `bench_redirect` and points it at the sending veth.
    pub fn new(pair: &VethPair) -> Result<Self> {
        Self::load(pair, crate::progs::BENCH_REDIRECT, "bench_redirect")
    }

    /// Loads `bench_redirect_spoof` (every IPv4 frame from a new source
    /// address in 198.18.128.0/17) and points it at the sending veth.
    pub fn spoofing(pair: &VethPair) -> Result<Self> {
        Self::load(
            pair,
            crate::progs::BENCH_REDIRECT_SPOOF,
            "bench_redirect_spoof",
        )
    }

    fn load(pair: &VethPair, object: &[u8], program: &'static str) -> Result<Self> {
        let mut ebpf = crate::progs::load(object, program)?;
        let ifindex = pair.tx.ifindex(pair.tx_dev)?;
        let mut map: Array<_, u32> = Array::try_from(
            ebpf.map_mut("BENCH_TX_IFINDEX")
                .with_context(|| format!("{program} has no map BENCH_TX_IFINDEX"))?,
        )?;
        map.set(0, ifindex, 0)
            .context("writing the transmit ifindex into BENCH_TX_IFINDEX")?;
        Ok(Sender {
            ebpf,
            program,
            receiver_cpu: None,
        })
    }

    /// Every frame from a new source address?
    pub fn spoofs(&self) -> bool {
        self.program == "bench_redirect_spoof"
    }

    fn prog(&self) -> Result<&Xdp> {
        crate::progs::xdp(&self.ebpf, self.program)
    }

    /// Injects `count` copies of `frame`; returns the wall time it took
    /// (which includes the receiver's processing, see the module docs).
    pub fn send(&self, pair: &VethPair, frame: &[u8], count: u32) -> Result<Duration> {
        let prog = self.prog()?;
        pair.tx.enter(|| {
            let t = Instant::now();
            let r = prog
                .test_run(TestRunOptions {
                    data_in: Some(frame),
                    repeat: count,
                    attrs: TestRunAttrs::new().xdp_live_frames(BATCH),
                    ..TestRunOptions::default()
                })
                .context("BPF_PROG_TEST_RUN with live frames (kernel 5.18 or later)")?;
            let elapsed = t.elapsed();
            anyhow::ensure!(
                r.return_value == 0,
                "the live-frames run returned {}",
                r.return_value
            );
            Ok(elapsed)
        })?
    }
}

/// Rounds of one contender.
pub struct FloodResult {
    pub name: String,
    /// How the drops were counted.
    pub counted_by: String,
    pub injected: u64,
    pub counted: u64,
    /// Mpps per round (counted frames / wall time).
    pub mpps: Vec<f64>,
    /// Measured with sender and receiver on separate CPUs.
    pub split: bool,
    /// Every frame from a new source address (`bench_redirect_spoof`).
    pub spoofed: bool,
    /// The product's source table after the rounds (spoofed floods).
    pub accounting: Option<Accounting>,
}

/// The product's source table after a spoofed flood, read through the
/// agent library (`sources::tick`, then `sources::read`).
#[derive(Clone, Copy, Debug)]
pub struct Accounting {
    /// Packets the class counters counted, in all.
    pub counted: u64,
    /// The sum of every known source's packets.
    pub attributed: u64,
    /// `unattributed.packets`.
    pub unattributed: u64,
    /// Sources known (`tracked`).
    pub tracked: usize,
}

impl FloodResult {
    pub fn median_mpps(&self) -> f64 {
        let mut v = self.mpps.clone();
        crate::cost::median(&mut v)
    }
}

/// Runs `rounds` floods of `count` frames against the receiver already set
/// up on the pair; `counter` reads its drop counter.
#[expect(
    clippy::too_many_arguments,
    reason = "one call per contender, all arguments distinct"
)]
pub fn rounds(
    name: &str,
    counted_by: &str,
    sender: &Sender,
    pair: &VethPair,
    frame: &[u8],
    count: u32,
    rounds: usize,
    counter: &mut dyn FnMut() -> Result<u64>,
) -> Result<FloodResult> {
    let mut res = FloodResult {
        name: name.to_owned(),
        counted_by: counted_by.to_owned(),
        injected: 0,
        counted: 0,
        mpps: Vec::new(),
        split: sender.receiver_cpu.is_some(),
        spoofed: sender.spoofs(),
        accounting: None,
    };
    if let Some(cpu) = sender.receiver_cpu {
        // The veth has NAPI once the contender's XDP program is attached
        // (not before: the switch needs it); its thread then exists, and
        // is pinned away from the sender.
        pair.set_threaded(true)?;
        if pair.pin_napi_threads(cpu)? == 0 {
            anyhow::bail!(
                "no NAPI thread for {} after switching threaded NAPI on: this kernel's veth \
                 does not run threaded NAPI",
                pair.rx_dev
            );
        }
    }
    // A short warm-up: first-touch page allocations, NAPI enable.
    sender.send(pair, frame, 100_000)?;
    for _ in 0..rounds {
        let before = counter()?;
        let elapsed = sender.send(pair, frame, count)?;
        let after = counter()?;
        let got = after.saturating_sub(before);
        res.injected += u64::from(count);
        res.counted += got;
        #[expect(clippy::cast_precision_loss, reason = "frame counts far below 2^52")]
        res.mpps.push(got as f64 / elapsed.as_secs_f64() / 1e6);
    }
    if res.split {
        // Back to NAPI in the sender's softirq for whatever runs next (the
        // switch outlives the contender's program otherwise).
        pair.set_threaded(false)?;
    }
    eprintln!(
        "bench: {}flood{} {name}: {:.2} Mpps (median of {rounds}), {} of {} frames counted",
        if res.spoofed { "spoofed " } else { "" },
        if res.split { " (separate CPUs)" } else { "" },
        res.median_mpps(),
        res.counted,
        res.injected
    );
    Ok(res)
}

/// The packet count of the first `counter` object anywhere in `v`.
fn find_counter(v: &serde_json::Value) -> Option<u64> {
    match v {
        serde_json::Value::Object(m) => m
            .get("counter")
            .and_then(|c| c["packets"].as_u64())
            .or_else(|| m.values().find_map(find_counter)),
        serde_json::Value::Array(a) => a.iter().find_map(find_counter),
        _ => None,
    }
}

/// Counter of an nftables rule: the first `counter` in `nft -j list table`.
pub fn nft_counter(pair: &VethPair, family: &str, table: &str) -> Result<u64> {
    let out = pair
        .rx
        .exec(&["nft", "-j", "list", "table", family, table])?;
    let v: serde_json::Value = serde_json::from_str(&out).context("parsing `nft -j`")?;
    find_counter(&v).with_context(|| format!("no counter in nft table {family} {table}: {out}"))
}
