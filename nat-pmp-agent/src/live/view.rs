//! What the live agent shows each interval: one reading of every
//! interface, rendered as the live view on a terminal ([`super::tui`]), a
//! plain table or JSON lines.
//!
//! Contract: the live view is used only for `--output auto` with stdout on
//! a terminal (and `TERM` not `dumb`); `--output table`, `--output json` and
//! a stdout that is not a terminal get exactly the plain tables and JSON
//! lines they always did. The final report is the plain table (or JSON) in
//! every case: the live view gives the terminal back first.

use std::{
    io::{IsTerminal as _, Write as _},
    time::{Instant, SystemTime},
};

use anyhow::{Context as _, Result};
use crossterm::{cursor::MoveTo, terminal::Clear, terminal::ClearType, QueueableCommand as _};

use super::{
    instance::Instance,
    tui::{Action, Tui},
    Output,
};
use crate::{
    bpf::sources,
    output::report::{self, Header, Report},
    say,
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
    /// The live view, while it owns the terminal.
    tui: Option<Tui>,
}

/// Sources the live view reads (it sorts them by rate too, and a tall
/// terminal shows more than `--top-sources`).
const TUI_SOURCES: usize = 100;

impl View {
    /// The view `output` asks for; with the live view, the channel its
    /// keys arrive on. A live view that cannot start (no usable terminal)
    /// falls back to the plain table, with a note.
    pub(super) fn new(
        output: Output,
        interval: std::time::Duration,
    ) -> (
        Self,
        Option<tokio::sync::mpsc::UnboundedReceiver<crossterm::event::Event>>,
    ) {
        let stdout_tty = std::io::stdout().is_terminal();
        let table = match output {
            Output::Auto => stdout_tty,
            Output::Table => true,
            Output::Json => false,
        };
        let dumb = !std::env::var("TERM").is_ok_and(|t| !t.is_empty() && t != "dumb");
        let (tui, keys) = if output == Output::Auto && stdout_tty && !dumb {
            match Tui::start(interval) {
                Ok((t, k)) => (Some(t), Some(k)),
                Err(e) => {
                    say!("note: no live view, plain tables instead: {e:#}");
                    (None, None)
                }
            }
        } else {
            (None, None)
        };
        let view = View {
            table,
            // The live view leaves the screen as it found it: the final
            // table goes below what was there.
            redraw: table && stdout_tty && tui.is_none(),
            started: Instant::now(),
            previous: None,
            tui,
        };
        (view, keys)
    }

    /// How many sources to read for the next report.
    pub(super) fn sources_wanted(&self, top: usize) -> usize {
        if self.tui.is_some() {
            top.max(TUI_SOURCES)
        } else {
            top
        }
    }

    /// A key or a resize: whether the agent is to stop (`q`: the path
    /// SIGTERM takes).
    pub(super) fn on_event(&mut self, event: &crossterm::event::Event) -> Result<bool> {
        match self.tui.as_mut() {
            Some(t) => Ok(t.on_event(event)? == Action::Quit),
            None => Ok(false),
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
        if let Some(tui) = self.tui.as_mut() {
            if !is_final {
                return if let [one] = &reports[..] {
                    tui.update(one, &reports, now)
                } else {
                    let header = report::total_header(&reports);
                    tui.update(&report::total_report(&reports, &header), &reports, now)
                };
            }
            // The final report is the plain one, on the terminal given back.
            tui.leave();
            self.tui = None;
        }
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
