//! The programs under test, other than the product: the bench's own bare
//! `XDP_PASS`/`XDP_DROP`, reference and redirect programs (built from `nat-pmp-ebpf`'s
//! `bench_*` binaries), and xdp-filter from Debian's xdp-tools, loaded by
//! its own command on an interface of a namespace the bench made.

use std::path::PathBuf;

use anyhow::{anyhow, Context as _, Result};
use aya::{
    programs::{ProgramInfo, Xdp},
    Ebpf,
};

use aya_obj::programs::XdpAttachType;

use crate::support::{bpffs::Bpffs, netns::NetNs, process::sh};

pub static BENCH_PASS: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/bench_pass"));
pub static BENCH_DROP: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/bench_drop"));
pub static BENCH_REF: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/bench_ref"));
pub static BENCH_REDIRECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/bench_redirect"));
pub static BENCH_REDIRECT_SPOOF: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/bench_redirect_spoof"));

/// Loads one of the bench's own XDP objects and its program `name`.
pub fn load(object: &[u8], name: &str) -> Result<Ebpf> {
    let mut ebpf = Ebpf::load(object).with_context(|| format!("loading the {name} object"))?;
    let prog: &mut Xdp = ebpf
        .program_mut(name)
        .with_context(|| format!("the {name} object has no program {name}"))?
        .try_into()
        .with_context(|| format!("{name} is not an XDP program"))?;
    prog.load()
        .with_context(|| format!("loading the XDP program {name} (needs root)"))?;
    Ok(ebpf)
}

/// The XDP program `name` of a loaded object.
pub fn xdp<'a>(ebpf: &'a Ebpf, name: &str) -> Result<&'a Xdp> {
    ebpf.program(name)
        .with_context(|| format!("no program {name}"))?
        .try_into()
        .with_context(|| format!("{name} is not an XDP program"))
}

pub fn xdp_mut<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut Xdp> {
    ebpf.program_mut(name)
        .with_context(|| format!("no program {name}"))?
        .try_into()
        .with_context(|| format!("{name} is not an XDP program"))
}

/// Size facts of a loaded program, as `bpftool prog show` prints them.
pub struct ProgFacts {
    pub id: u32,
    pub name: String,
    pub xlated_insns: u32,
    pub jited_bytes: u32,
    pub verified_insns: Option<u32>,
}

pub fn facts(prog: &Xdp) -> Result<ProgFacts> {
    let info: ProgramInfo = prog
        .info()
        .context("reading program info (BPF_OBJ_GET_INFO_BY_FD)")?;
    Ok(ProgFacts {
        id: info.id(),
        name: info.name_as_str().unwrap_or("?").to_owned(),
        xlated_insns: info.size_translated().unwrap_or(0) / 8,
        jited_bytes: info.size_jitted(),
        verified_insns: info.verified_instruction_count(),
    })
}

/// xdp-filter (xdp-tools) with a `port 5351` rule on one interface.
///
/// xdp-filter keeps its state on a bpffs at `/sys/fs/bpf`; `ip netns exec`
/// remounts `/sys`, so every call bind-mounts the bench's own bpffs there
/// first (in the command's private mount namespace): its maps and pins then
/// live in the bench's bpffs and go away with it.
pub struct XdpFilter<'a> {
    ns: &'a NetNs,
    bpffs: &'a Bpffs,
    dev: String,
}

impl<'a> XdpFilter<'a> {
    /// `xdp-filter load <dev>` (default features, native mode) and
    /// `xdp-filter port 5351` (the default: destination port, TCP and UDP).
    pub fn load(ns: &'a NetNs, bpffs: &'a Bpffs, dev: &str) -> Result<Self> {
        let f = XdpFilter {
            ns,
            bpffs,
            dev: dev.to_owned(),
        };
        f.run(&["load", "--mode", "native", dev])
            .with_context(|| format!("loading xdp-filter on {dev}"))?;
        f.run(&["port", "5351"])
            .context("adding the xdp-filter rule `port 5351`")?;
        Ok(f)
    }

    pub fn run(&self, args: &[&str]) -> Result<String> {
        let bpffs = self.bpffs.path_str();
        let mut v = vec![
            "sh",
            "-c",
            "mount --bind \"$0\" /sys/fs/bpf && exec xdp-filter \"$@\"",
            &bpffs,
        ];
        v.extend_from_slice(args);
        self.ns.exec(&v)
    }

    /// The attached program (by id from `ip -j link`), pinned on the
    /// bench's bpffs with bpftool and opened for `BPF_PROG_TEST_RUN`: the
    /// very program xdp-filter attached.
    pub fn program(&self) -> Result<(Xdp, String)> {
        let (id, name) = self.ns.xdp_prog(&self.dev)?;
        let pin: PathBuf = self.bpffs.path.join(format!("bench-xdpfilter-{id}"));
        let pin_s = pin.to_string_lossy().into_owned();
        if !pin.exists() {
            sh(&["bpftool", "prog", "pin", "id", &id.to_string(), &pin_s])
                .with_context(|| format!("pinning xdp-filter's program id {id}"))?;
        }
        let prog = Xdp::from_pin(&pin, XdpAttachType::Interface)
            .map_err(|e| anyhow!(e))
            .with_context(|| format!("opening xdp-filter's program from {pin_s}"))?;
        Ok((prog, name))
    }

    /// Packets its programs returned `XDP_DROP` for (all interfaces), from
    /// `xdp-filter status`.
    pub fn dropped(&self) -> Result<u64> {
        let out = self.run(&["status"])?;
        out.lines()
            .find_map(|l| {
                let mut w = l.split_whitespace();
                (w.next() == Some("XDP_DROP"))
                    .then(|| w.next().and_then(|n| n.parse().ok()))
                    .flatten()
            })
            .with_context(|| format!("no XDP_DROP line in `xdp-filter status`:\n{out}"))
    }

    pub fn version() -> String {
        sh(&["dpkg-query", "-W", "-f=${Version}", "xdp-tools"]).unwrap_or_else(|_| "?".into())
    }
}

impl Drop for XdpFilter<'_> {
    fn drop(&mut self) {
        let dev = self.dev.clone();
        let _ = self.run(&["unload", &dev]);
    }
}
