//! What the live agent shows each interval: one reading of every
//! interface, rendered as a table or JSON lines.

use std::{
    io::{IsTerminal as _, Write as _},
    time::{Instant, SystemTime},
};

use anyhow::{Context as _, Result};
use crossterm::{cursor::MoveTo, terminal::Clear, terminal::ClearType, QueueableCommand as _};

use super::{instance::Instance, Output};
use crate::{
    bpf::sources,
    output::report::{self, Header, Report},
    stats::{answered::Answered, counters::Snapshot, sources::Sources},
};

/// One interface's reading: header, counters, top sources, answers.
pub(super) type Reading = (Header, Snapshot, Sources, Option<Answered>);

/// One reading of every interface: its header (with the live mode and
/// protection), its counters, its top sources and the answers it sent
/// (when its egress program is there).
pub(super) fn read(instances: &[Instance], top: usize) -> Result<Vec<Reading>> {
    instances
        .iter()
        .map(|i| {
            Ok((
                Header {
                    iface: i.iface.clone(),
                    mode: i.filter.mode()?.name(),
                    xdp_mode: match (i.watch.guard.attached, i.filter.attachment()) {
                        (true, Some(a)) => a.mode.name(),
                        _ => "none",
                    },
                    guard: Some(i.watch.guard.clone()),
                },
                i.filter.snapshot()?,
                sources::read(i.filter.maps(), top)?,
                i.filter.answered().transpose()?,
            ))
        })
        .collect()
}

/// Renders reports; keeps what the next rates need.
pub(super) struct View {
    pub(super) table: bool,
    pub(super) redraw: bool,
    pub(super) started: Instant,
    pub(super) previous: Option<(Instant, Vec<Snapshot>)>,
}

impl View {
    pub(super) fn new(output: Output) -> Self {
        let stdout_tty = std::io::stdout().is_terminal();
        let table = match output {
            Output::Auto => stdout_tty,
            Output::Table => true,
            Output::Json => false,
        };
        View {
            table,
            redraw: table && stdout_tty,
            started: Instant::now(),
            previous: None,
        }
    }

    pub(super) fn emit(
        &mut self,
        now_read: &[Reading],
        is_final: bool,
        all_classes: bool,
    ) -> Result<()> {
        let now = Instant::now();
        let uptime = now.duration_since(self.started);
        let reports: Vec<Report> = now_read
            .iter()
            .enumerate()
            .map(|(i, (header, totals, sources, answered))| Report {
                header,
                uptime,
                totals: *totals,
                last_interval: self.previous.as_ref().and_then(|(at, prev)| {
                    prev.get(i)
                        .map(|p| (totals.since(p), now.duration_since(*at)))
                }),
                is_final,
                sources: Some(sources.clone()),
                answered: answered.clone(),
            })
            .collect();
        self.previous = Some((now, now_read.iter().map(|r| r.1).collect()));
        let mut out = std::io::stdout().lock();
        if self.table {
            if self.redraw {
                out.queue(Clear(ClearType::All))
                    .and_then(|o| o.queue(MoveTo(0, 0)))
                    .context("clearing the terminal")?;
            }
            // Without redrawing, a blank line keeps successive tables apart.
            let gap = if self.redraw { "" } else { "\n" };
            write!(
                out,
                "{}{gap}",
                report::combined_table(&reports, all_classes)
            )
        } else {
            writeln!(
                out,
                "{}",
                report::combined_json(&reports, SystemTime::now())
            )
        }
        .and_then(|()| out.flush())
        .context("writing the report to stdout")
    }
}
