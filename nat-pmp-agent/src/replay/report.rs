//! Views of a replay's [`Analysis`]: a text report after the honeypot
//! team's layout (per class: opcode, meaning, packets, share; then the top
//! sources; then packets per hour per source), one JSON object, CSV rows,
//! and an SVG chart of packets per hour by source.
//!
//! Contract: JSON fields and CSV columns are a public contract for scripts:
//! added, never renamed. Class totals are the kernel's counters (bytes as
//! captured); sources and hours come from the host's view of the same
//! frames, which the replay checked against the kernel.

use std::{fmt::Write as _, io::Write, net::IpAddr, path::Path, time::SystemTime};

use anyhow::{bail, Context as _, Result};
use comfy_table::{presets::ASCII_MARKDOWN, CellAlignment, Table};
use nat_pmp_ebpf_common::{Class, ClassCounters};
use serde_json::{json, Map, Value};

use super::{Analysis, Source};
use crate::output::report::{
    class_json, counters_json, row_name, share, shown_classes, source_json,
};

fn time_str(t: Option<SystemTime>) -> String {
    t.map_or_else(String::new, |t| {
        humantime::format_rfc3339_millis(t).to_string()
    })
}

/// The RFC 3339 start of hour `h` (hours since the Unix epoch).
pub fn hour_str(h: u64) -> String {
    humantime::format_rfc3339_seconds(
        SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(h * 3600),
    )
    .to_string()
}

fn classes_seen(s: &Source) -> String {
    Class::ALL
        .iter()
        .filter(|c| s.classes[c.index() as usize] > 0)
        .map(|c| format!("{}:{}", c.label(), s.classes[c.index() as usize]))
        .collect::<Vec<_>>()
        .join(" ")
}

fn right_align(table: &mut Table, from: usize, to: usize) {
    for i in from..to {
        if let Some(col) = table.column_mut(i) {
            col.set_cell_alignment(CellAlignment::Right);
        }
    }
}

/// The text report: the classes of [`shown_classes`] (every class with
/// `all_classes`) and the `top` sources.
pub fn to_text(a: &Analysis, top: usize, all_classes: bool) -> String {
    let counters = a.counters();
    let total = counters.total();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "nat-pmp-agent replay  mode {}  {} .. {}{}",
        a.mode.name(),
        time_str(a.first),
        time_str(a.last),
        if a.error.is_some() {
            "  (INCOMPLETE: stopped at an error, see below)"
        } else {
            ""
        }
    );
    for f in &a.files {
        let links: Vec<String> = f.link_types.iter().map(ToString::to_string).collect();
        let _ = writeln!(
            out,
            "  {}  {}  link type {}  {} frames",
            f.path.display(),
            if f.format.is_empty() { "?" } else { f.format },
            if links.is_empty() {
                "?".to_owned()
            } else {
                links.join(",")
            },
            f.frames
        );
    }
    let _ = writeln!(
        out,
        "frames: {} read, {} NAT-PMP/PCP (counted), {} other traffic (passed, not counted), \
         {} shorter than an Ethernet header (skipped)",
        a.frames, a.natpmp_frames, a.other_frames, a.skipped_short
    );
    notes_text(a, &mut out);
    let mut table = Table::new();
    table.load_preset(ASCII_MARKDOWN).set_header(vec![
        "opcode",
        "meaning",
        "class",
        "packets",
        "share",
        "bytes",
        "oversized",
        "dropped",
    ]);
    let mut row = |op: &str, meaning: &str, name: &str, c: &ClassCounters| {
        table.add_row(vec![
            op.to_owned(),
            meaning.to_owned(),
            name.to_owned(),
            c.packets().to_string(),
            format!("{:.1}%", share(c.packets(), total.packets())),
            c.bytes().to_string(),
            c.oversized_packets.to_string(),
            c.dropped_packets.to_string(),
        ]);
    };
    for class in shown_classes(&counters, all_classes) {
        let info = class.info();
        row(
            info.opcode,
            info.meaning,
            &row_name(class),
            counters.get(class),
        );
    }
    row("", "total", "", &total);
    right_align(&mut table, 3, 8);
    let _ = writeln!(out, "{table}");
    sources_text(a, top, total.packets(), &mut out);
    if let Some(e) = &a.error {
        let _ = writeln!(out, "\nINCOMPLETE: {e}");
    }
    out
}

/// Warnings and notes about frames the program saw differently.
fn notes_text(a: &Analysis, out: &mut String) {
    if a.refused > 0 {
        let _ = writeln!(
            out,
            "warning: the kernel refused {} frames (not counted): {}",
            a.refused,
            a.refused_reason.as_deref().unwrap_or("")
        );
    }
    if a.jumbo > 0 {
        let _ = writeln!(
            out,
            "note: {} frames were longer than {} bytes; BPF_PROG_TEST_RUN gives the program \
             only their first {} bytes (the rest are XDP fragments)",
            a.jumbo,
            super::TEST_RUN_LINEAR_MAX,
            super::TEST_RUN_LINEAR_MAX
        );
    }
    if a.cut_by_snaplen > 0 {
        let _ = writeln!(
            out,
            "note: {} frames were cut by the capture's snap length; a cut NAT-PMP datagram \
             counts as malformed_truncated",
            a.cut_by_snaplen
        );
    }
}

/// The top sources and the per-hour table.
fn sources_text(a: &Analysis, top: usize, total_packets: u64, out: &mut String) {
    let sources = a.sources_by_packets();
    let shown = &sources[..top.min(sources.len())];
    let _ = writeln!(out, "\ntop sources ({} of {}):", shown.len(), sources.len());
    let mut table = Table::new();
    table.load_preset(ASCII_MARKDOWN).set_header(vec![
        "source",
        "packets",
        "share",
        "bytes",
        "classes seen",
        "first seen",
        "last seen",
    ]);
    for (addr, s) in shown {
        table.add_row(vec![
            addr.to_string(),
            s.packets.to_string(),
            format!("{:.1}%", share(s.packets, total_packets)),
            s.bytes.to_string(),
            classes_seen(s),
            time_str(s.first_seen),
            time_str(s.last_seen),
        ]);
    }
    right_align(&mut table, 1, 4);
    let _ = writeln!(out, "{table}");

    let hours = a.hours();
    if !hours.is_empty() && !sources.is_empty() {
        let _ = writeln!(out, "\nNAT-PMP/PCP packets per hour by source (UTC):");
        let mut table = Table::new();
        let mut header = vec!["hour".to_owned()];
        header.extend(shown.iter().map(|(addr, _)| addr.to_string()));
        let others = sources.len() > shown.len();
        if others {
            header.push("others".to_owned());
        }
        header.push("total".to_owned());
        table.load_preset(ASCII_MARKDOWN).set_header(header);
        for h in hours {
            let mut cells = vec![hour_str(h)];
            let mut sum = 0;
            for (_, s) in shown {
                let n = s.per_hour.get(&h).copied().unwrap_or(0);
                sum += n;
                cells.push(n.to_string());
            }
            let all: u64 = sources
                .iter()
                .map(|(_, s)| s.per_hour.get(&h).copied().unwrap_or(0))
                .sum();
            if others {
                cells.push((all - sum).to_string());
            }
            cells.push(all.to_string());
            table.add_row(cells);
        }
        let cols = table.column_count();
        right_align(&mut table, 1, cols);
        let _ = writeln!(out, "{table}");
    }
}

/// Packets per second of `packets` over the capture's span (0 when the
/// capture spans no time).
fn pps(a: &Analysis, packets: u64) -> f64 {
    let span = match (a.first, a.last) {
        (Some(f), Some(l)) => l.duration_since(f).unwrap_or_default().as_secs_f64(),
        _ => 0.0,
    };
    if span > 0.0 {
        #[expect(clippy::cast_precision_loss, reason = "a rate for display")]
        let rate = packets as f64 / span;
        rate
    } else {
        0.0
    }
}

/// The JSON view: one object, in the report schema live reports share
/// (docs/report.md).
pub fn to_json(a: &Analysis) -> Value {
    let counters = a.counters();
    let total = counters.total();
    let classes = counters_json(&counters, |c| pps(a, counters.get(c).packets()));
    let sources: Vec<Value> = a
        .sources_by_packets()
        .into_iter()
        .map(|(addr, s)| {
            let sent = || {
                Class::ALL
                    .into_iter()
                    .filter(|c| s.classes[c.index() as usize] > 0)
            };
            let mut v = source_json(
                addr,
                s.packets,
                s.bytes,
                (time_str(s.first_seen), time_str(s.last_seen)),
                sent(),
            );
            let class_packets: Map<String, Value> = sent()
                .map(|c| (c.name().to_owned(), json!(s.classes[c.index() as usize])))
                .collect();
            let per_hour: Map<String, Value> = s
                .per_hour
                .iter()
                .map(|(h, n)| (hour_str(*h), json!(n)))
                .collect();
            if let Some(m) = v.as_object_mut() {
                m.insert("class_packets".into(), Value::Object(class_packets));
                m.insert("per_hour".into(), Value::Object(per_hour));
            }
            v
        })
        .collect();
    let files: Vec<Value> = a
        .files
        .iter()
        .map(|f| {
            json!({
                "path": f.path.display().to_string(),
                "format": f.format,
                "link_types": f.link_types,
                "frames": f.frames,
            })
        })
        .collect();
    json!({
        "mode": a.mode.name(),
        "files": files,
        "first": time_str(a.first),
        "last": time_str(a.last),
        "hours": a.hours().map(hour_str).collect::<Vec<_>>(),
        "frames": a.frames,
        "natpmp_frames": a.natpmp_frames,
        "other_frames": a.other_frames,
        "skipped_short": a.skipped_short,
        "refused": a.refused,
        "cut_by_snaplen": a.cut_by_snaplen,
        "jumbo": a.jumbo,
        "counters": classes,
        "oversized": total.oversized_packets,
        "total": class_json(&total, total.packets(), pps(a, total.packets())),
        "sources": sources,
        "kernel_agrees": a.disagreement().is_none(),
        "complete": a.error.is_none(),
        "error": a.error,
    })
}

/// The CSV view: one table in long form, whose first column says which part
/// of the report a row belongs to (`class`, `source` or `hour`).
pub fn write_csv(a: &Analysis, out: impl Write) -> Result<()> {
    let mut w = csv::Writer::from_writer(out);
    w.write_record([
        "table",
        "hour",
        "source",
        "class",
        "opcode",
        "packets",
        "bytes",
        "dropped_packets",
        "oversized",
        "share",
    ])
    .context("writing CSV")?;
    let counters = a.counters();
    let total = counters.total();
    let pct = |n: u64| format!("{:.2}", share(n, total.packets()));
    for class in Class::ALL {
        let c = counters.get(class);
        w.write_record([
            "class",
            "",
            "",
            class.name(),
            class.info().opcode,
            &c.packets().to_string(),
            &c.bytes().to_string(),
            &c.dropped_packets.to_string(),
            &c.oversized_packets.to_string(),
            &pct(c.packets()),
        ])
        .context("writing CSV")?;
    }
    let sources = a.sources_by_packets();
    for (addr, s) in &sources {
        w.write_record([
            "source",
            "",
            &addr.to_string(),
            "",
            "",
            &s.packets.to_string(),
            &s.bytes.to_string(),
            "",
            "",
            &pct(s.packets),
        ])
        .context("writing CSV")?;
    }
    for h in a.hours() {
        for (addr, s) in &sources {
            if let Some(n) = s.per_hour.get(&h) {
                w.write_record([
                    "hour",
                    &hour_str(h),
                    &addr.to_string(),
                    "",
                    "",
                    &n.to_string(),
                    "",
                    "",
                    "",
                    "",
                ])
                .context("writing CSV")?;
            }
        }
    }
    w.flush().context("writing CSV")?;
    Ok(())
}

/// Fails unless `path` names a chart format `plot` can write.
pub fn plot_format(path: &Path) -> Result<()> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("svg") => Ok(()),
        Some("png") => bail!(
            "{}: PNG charts are not built in (drawing text into a bitmap needs a font \
             rasteriser and system fonts); write an .svg and convert it, e.g. \
             `rsvg-convert -o chart.png chart.svg`",
            path.display()
        ),
        _ => bail!(
            "--plot {}: the chart is written as SVG; name an .svg file",
            path.display()
        ),
    }
}

/// Radius in pixels of the marker on each hour with traffic.
pub const MARKER_RADIUS: i32 = 4;

/// Draws packets per hour by source (the top `top` sources, the rest as
/// "others") as an SVG line chart.
pub fn plot(a: &Analysis, path: &Path, top: usize) -> Result<()> {
    use plotters::prelude::*;

    plot_format(path)?;
    let hours: Vec<u64> = a.hours().collect();
    let (Some(&h0), Some(&h1)) = (hours.first(), hours.last()) else {
        bail!("nothing to plot: no timestamped NAT-PMP/PCP frames were counted");
    };
    let sources = a.sources_by_packets();
    let shown: Vec<(String, Vec<u64>)> = {
        let series = |s: &Source| -> Vec<u64> {
            hours
                .iter()
                .map(|h| s.per_hour.get(h).copied().unwrap_or(0))
                .collect()
        };
        let mut v: Vec<(String, Vec<u64>)> = sources
            .iter()
            .take(top)
            .map(|(addr, s): &(IpAddr, &Source)| (addr.to_string(), series(s)))
            .collect();
        if sources.len() > top {
            let mut rest = vec![0; hours.len()];
            for (_, s) in &sources[top..] {
                for (r, n) in rest.iter_mut().zip(series(s)) {
                    *r += n;
                }
            }
            v.push((format!("others ({})", sources.len() - top), rest));
        }
        v
    };
    let y_max = shown
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .max()
        .unwrap_or(0)
        .max(1);
    let draw = || -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let root = SVGBackend::new(path, (1200, 600)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "NAT-PMP/PCP packets per hour by source (UTC)",
                ("sans-serif", 22),
            )
            .margin(15)
            .x_label_area_size(60)
            .y_label_area_size(70)
            .build_cartesian_2d(h0..h1 + 1, 0u64..y_max + y_max / 10 + 1)?;
        chart
            .configure_mesh()
            .x_desc("hour (UTC)")
            .y_desc("packets")
            .x_labels(12)
            .x_label_formatter(&|h| {
                let s = hour_str(*h);
                // "MM-DDTHH" keeps the axis readable.
                s.get(5..13).unwrap_or(&s).replace('T', " ") + "h"
            })
            .draw()?;
        for (i, (label, values)) in shown.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            chart
                .draw_series(LineSeries::new(
                    hours.iter().copied().zip(values.iter().copied()),
                    color.stroke_width(2),
                ))?
                .label(label.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
            // A marker on every hour with traffic: a line needs two points,
            // and a capture within one hour has one.
            chart.draw_series(
                hours
                    .iter()
                    .zip(values)
                    .filter(|(_, n)| **n > 0)
                    .map(|(h, n)| Circle::new((*h, *n), MARKER_RADIUS, color.filled())),
            )?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()?;
        root.present()?;
        Ok(())
    };
    draw()
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("drawing the chart into {}", path.display()))
}
