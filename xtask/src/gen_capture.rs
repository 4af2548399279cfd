//! `cargo xtask gen-capture`: writes a capture of a NAT-PMP scan with a
//! known composition (see `nat_pmp_ebpf_common::capgen`) and its composition
//! as JSON next to it, for trying `nat-pmp-agent replay` and for tests.

use std::path::Path;

use anyhow::{bail, Result};
use nat_pmp_ebpf_common::capgen::{composition_path, write_file, Format, Link, Spec};

pub fn gen_capture(
    out: &Path,
    count: u64,
    seed: u64,
    format: Option<Format>,
    link: Link,
    hours: u32,
) -> Result<()> {
    if hours == 0 {
        bail!("--hours must be at least 1");
    }
    // The extension says the format unless --format does.
    let format = format.unwrap_or_else(|| {
        if out.extension().is_some_and(|e| e == "pcapng") {
            Format::Pcapng
        } else {
            Format::Pcap
        }
    });
    let spec = Spec {
        count,
        seed,
        format,
        link,
        hours,
        ..Spec::default()
    };
    let comp = write_file(&spec, out)?;
    println!(
        "wrote {} ({:?}, {:?}): {} frames, {} NAT-PMP/PCP, {} background, {} .. {}",
        out.display(),
        comp.format,
        comp.link,
        comp.frames,
        comp.natpmp_packets(),
        comp.background_frames,
        comp.first,
        comp.last
    );
    for (class, t) in &comp.counters {
        println!(
            "  {class:<36} {:>8} packets {:>10} bytes {:>6} oversized",
            t.packets, t.bytes, t.oversized
        );
    }
    println!("  sources: {}", comp.sources.len());
    println!("composition: {}", composition_path(out).display());
    Ok(())
}
