//! The live view on a terminal, for an operator who watches it over SSH in
//! whatever terminal they have: built on ratatui over crossterm (as bpftop
//! is), it fits the terminal it gets and redraws on resize, shows what moves
//! (rates, and a sparkline of the last minute per class and for the total),
//! sorts the busiest classes and sources first, and answers keys like top.
//!
//! Contract:
//! - Used only when `--output auto` meets a terminal on stdout (and `TERM`
//!   is not `dumb`): `--output table`, `--output json` and every non-terminal
//!   stdout keep the plain tables and JSON lines byte for byte
//!   ([`super::view`]).
//! - Fits: the header (interfaces, mode, XDP mode, uptime, whether the
//!   filter is attached; a full-width highlighted line for every alert and
//!   for [`Report::status_line`]), every class that saw traffic (packets,
//!   rate, dropped; short labels from the class table,
//!   [`ClassInfo::label`](nat_pmp_ebpf_common::ClassInfo::label)), the total,
//!   then as many top sources as the rows left hold. No line is wider than
//!   the terminal; a wider terminal gets more columns (share, bytes) and
//!   longer sparklines, a taller one more sources. Classes that do not fit
//!   one per row are packed into columns (without sparklines). The rows are
//!   the counted classes: the `pcp` aggregate (the sum of the `pcp_*` rows)
//!   is in the JSON and the plain table, not here, so the rows add up to the
//!   total.
//! - Keys: `q` (and Ctrl-C, which raw mode turns into a key) ends the agent
//!   by the very path SIGTERM takes: the same final report (the plain table,
//!   printed after the terminal is given back), the same exit code, nothing
//!   left attached unless `--pin`. `s` cycles the sort (rate, packets,
//!   name), `p` pauses the display (the counting and the history go on),
//!   `?` shows the keys. No key changes the filter: its mode is changed by
//!   `nat-pmp-agent mode` only.
//! - While the view owns the terminal, stderr (notes, warnings, the drop
//!   log's samples) would scribble over it: it is held (the `gag` crate
//!   redirects the descriptor), its last line is shown at the bottom, and
//!   everything held is written to stderr when the terminal is given back
//!   (also on a panic).

use std::{
    collections::{HashMap, VecDeque},
    fmt::Write as _,
    io::{Read as _, Stdout},
    net::IpAddr,
    sync::{Mutex, Once},
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context as _, Result};
use nat_pmp_ebpf_common::Class;
use ratatui::{
    backend::{Backend, CrosstermBackend},
    crossterm::event::{Event, KeyCode, KeyEventKind, KeyModifiers},
    layout::{Constraint, Layout, Rect},
    style::{Modifier, Style},
    text::{Line, Span},
    widgets::{Block, Clear, Paragraph, RenderDirection, Sparkline, Wrap},
    Frame, Terminal,
};

use crate::{
    output::report::{per_second, Report},
    say,
    stats::answered::Answered,
};

/// The span of the sparklines.
const HISTORY: Duration = Duration::from_mins(1);
/// Lines of held stderr kept to write out on exit (the drop log is rate
/// limited, but a long session could still hold many).
const HELD_LINES_MAX: usize = 10_000;

/// What the agent's loop does after a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Action {
    /// End the agent, as on SIGTERM.
    Quit,
    /// Nothing more (the view redrew if it had to).
    Continue,
}

/// The order of the class and source rows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) enum Sort {
    /// Packets per second over the last interval, most first (then packets).
    #[default]
    Rate,
    /// Packets since attach, most first.
    Packets,
    /// The class table's order; sources by address.
    Name,
}

impl Sort {
    fn next(self) -> Sort {
        match self {
            Sort::Rate => Sort::Packets,
            Sort::Packets => Sort::Name,
            Sort::Name => Sort::Rate,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Sort::Rate => "rate",
            Sort::Packets => "packets",
            Sort::Name => "name",
        }
    }
}

/// One class row (or the total): counters, the rate and the history.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct Row {
    /// `None` for the total.
    pub class: Option<Class>,
    pub packets: u64,
    pub bytes: u64,
    pub share: f64,
    pub pps: f64,
    pub dropped: u64,
    /// Packets per interval over the last minute, newest first.
    pub history: Vec<u64>,
}

impl Row {
    fn label(&self) -> &'static str {
        self.class.map_or("total", Class::label)
    }
}

/// One sender row.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct SourceRow {
    pub addr: IpAddr,
    pub packets: u64,
    pub pps: f64,
    /// Since its last datagram, to a report interval's resolution.
    pub idle: Option<Duration>,
    /// The classes it sent, in class order.
    pub classes: Vec<Class>,
}

/// What one screen shows: made from a reading ([`History::screen`]), drawn
/// at any size ([`draw`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct Screen {
    pub ifaces: String,
    pub mode: &'static str,
    pub xdp_mode: &'static str,
    pub uptime: Duration,
    /// `attached`, `gone`, ... (mixed states of several interfaces: their
    /// common value or `mixed`); `None` before the first reading.
    pub state: Option<&'static str>,
    /// Answers sent from port 5351 out of the WANs (the egress program's
    /// count, docs/exposure.md); `None` without an egress program.
    pub answered: Option<u64>,
    /// Full-width highlighted lines: [`Report::status_line`], then each
    /// interface's alert.
    pub alerts: Vec<String>,
    /// The allowlists (prefixes drop mode lets through), as the plain
    /// table's `allowed sources` line.
    pub allow: Vec<String>,
    /// The counted classes that saw traffic.
    pub classes: Vec<Row>,
    pub total: Row,
    pub sources: Vec<SourceRow>,
    pub tracked: usize,
    pub unattributed: u64,
    pub is_final: bool,
}

/// What the view remembers between readings: each row's last minute and
/// each source's last packet count (for its rate).
#[derive(Debug)]
pub(super) struct History {
    rows: HashMap<Option<Class>, VecDeque<(Instant, u64)>>,
    sources: HashMap<IpAddr, u64>,
    last: Option<Instant>,
}

impl History {
    pub(super) fn new() -> History {
        History {
            rows: HashMap::new(),
            sources: HashMap::new(),
            last: None,
        }
    }

    /// Takes in one reading: `total` is the reports as one (the one report
    /// itself with one interface), `parts` each interface's (for their
    /// alerts); returns what to show.
    pub(super) fn screen(&mut self, total: &Report, parts: &[Report], now: Instant) -> Screen {
        if let Some((delta, _)) = total.last_interval {
            let mut push = |key: Option<Class>, packets: u64| {
                let h = self.rows.entry(key).or_default();
                h.push_front((now, packets));
                while h
                    .back()
                    .is_some_and(|(at, _)| now.duration_since(*at) > HISTORY)
                {
                    h.pop_back();
                }
            };
            push(None, delta.total().packets());
            for c in Class::ALL {
                push(Some(c), delta.get(c).packets());
            }
        }
        let history = |key: Option<Class>| -> Vec<u64> {
            self.rows
                .get(&key)
                .map(|h| h.iter().map(|(_, n)| *n).collect())
                .unwrap_or_default()
        };
        let total_counters = total.totals.total();
        let row = |class: Option<Class>| {
            let c = class.map_or(total_counters, |c| *total.totals.get(c));
            Row {
                class,
                packets: c.packets(),
                bytes: c.bytes(),
                share: crate::output::report::share(c.packets(), total_counters.packets()),
                pps: total.rate(class),
                dropped: c.dropped_packets,
                history: history(class),
            }
        };
        let classes = Class::DISPLAY
            .into_iter()
            .filter(|c| !c.is_aggregate() && total.totals.get(*c).packets() > 0)
            .map(|c| row(Some(c)))
            .collect();
        let over = self.last.map(|at| now.duration_since(at));
        let wall = SystemTime::now();
        let sources: Vec<SourceRow> = total
            .sources
            .iter()
            .flat_map(|s| &s.top)
            .map(|s| SourceRow {
                addr: s.addr,
                packets: s.stats.packets,
                // A source new since the last reading sent all it has in
                // this interval; before the second reading, no rate.
                pps: over.map_or(0.0, |over| {
                    let before = self.sources.get(&s.addr).copied().unwrap_or(0);
                    per_second(s.stats.packets.saturating_sub(before), over)
                }),
                idle: wall
                    .duration_since(crate::net::sys::wall_time(s.stats.last_seen_ns))
                    .ok(),
                classes: s.sent().collect(),
            })
            .collect();
        self.sources = sources.iter().map(|s| (s.addr, s.packets)).collect();
        self.last = Some(now);
        let mut alerts: Vec<String> = total.status_line().into_iter().collect();
        let mut allow: Vec<String> = Vec::new();
        for r in parts {
            for p in r.header.guard.iter().flat_map(|g| &g.allow) {
                if !allow.contains(p) {
                    allow.push(p.clone());
                }
            }
            if let Some(alert) = r.header.guard.as_ref().and_then(|g| g.alert.as_ref()) {
                alerts.push(if parts.len() > 1 {
                    format!("{}: {alert}", r.header.iface)
                } else {
                    alert.clone()
                });
            }
        }
        Screen {
            ifaces: total.header.iface.clone(),
            mode: total.header.mode,
            xdp_mode: total.header.xdp_mode,
            uptime: total.uptime,
            state: total.header.guard.as_ref().map(|g| g.state),
            answered: total.answered.as_ref().map(Answered::packets),
            alerts,
            allow,
            classes,
            total: row(None),
            sources,
            tracked: total.sources.as_ref().map_or(0, |s| s.tracked),
            unattributed: total.sources.as_ref().map_or(0, |s| s.unattributed.packets),
            is_final: total.is_final,
        }
    }
}

/// What the keys set: how the screen is shown.
#[derive(Clone, Debug, Default)]
pub(super) struct Ui {
    pub sort: Sort,
    /// The screen shown while paused (readings go on underneath).
    pub frozen: Option<Screen>,
    pub help: bool,
    /// The last line held from stderr.
    pub message: Option<String>,
    /// The report interval: the sparklines' resolution.
    pub interval: Duration,
}

impl Ui {
    /// What `event` does to the view.
    pub(super) fn on_event(&mut self, event: &Event, shown: &Screen) -> Action {
        let Event::Key(key) = event else {
            return Action::Continue;
        };
        if key.kind != KeyEventKind::Press {
            return Action::Continue;
        }
        match key.code {
            KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => Action::Quit,
            KeyCode::Char('q' | 'Q') => Action::Quit,
            _ if self.help => {
                self.help = false;
                Action::Continue
            }
            KeyCode::Char('s' | 'S') => {
                self.sort = self.sort.next();
                Action::Continue
            }
            KeyCode::Char('p' | 'P') => {
                self.frozen = match self.frozen {
                    Some(_) => None,
                    None => Some(shown.clone()),
                };
                Action::Continue
            }
            KeyCode::Char('?' | 'h' | 'H') => {
                self.help = true;
                Action::Continue
            }
            _ => Action::Continue,
        }
    }
}

/// A count in `width` columns: exact when it fits, else with a unit
/// (`12.3M`).
fn count(n: u64, width: usize) -> String {
    let exact = n.to_string();
    if exact.len() <= width {
        return exact;
    }
    #[expect(
        clippy::cast_precision_loss,
        reason = "an abbreviated count for display"
    )]
    let mut v = n as f64;
    for unit in ["k", "M", "G", "T", "P", "E"] {
        v /= 1000.0;
        if v < 999.95 {
            return format!("{v:.1}{unit}");
        }
    }
    exact
}

/// A rate: one decimal below 1000, abbreviated above.
fn rate(pps: f64, width: usize) -> String {
    let s = format!("{pps:.1}");
    if s.len() <= width {
        return s;
    }
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "a non-negative rate for display"
    )]
    let n = pps.round().max(0.0) as u64;
    count(n, 0)
}

/// A duration as `1:02:03`.
fn hms(d: Duration) -> String {
    let s = d.as_secs();
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// Idle time as `5s`, `3m`, `2h`, `4d`.
fn ago(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86_400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// `history` (packets per interval, newest first) as at most `width` bars
/// of the last minute, newest first: each bar sums the same whole number of
/// intervals (uneven bars would draw a pattern that is not in the traffic).
fn buckets(history: &[u64], interval: Duration, width: u16) -> Vec<u64> {
    let per_minute = (HISTORY.as_secs_f64() / interval.as_secs_f64().max(0.001)).ceil();
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "intervals in a minute: positive, at most 60,000"
    )]
    let per_minute = per_minute.clamp(1.0, 60_000.0) as usize;
    let per_bar = per_minute.div_ceil(usize::from(width.max(1)));
    let mut out = vec![0u64; per_minute.div_ceil(per_bar)];
    for (i, packets) in history.iter().take(per_minute).enumerate() {
        out[i / per_bar] += packets;
    }
    out
}

/// The columns of the class rows at a width.
struct Columns {
    extra: bool,
    spark: u16,
}

impl Columns {
    const LABEL: usize = nat_pmp_ebpf_common::LABEL_MAX;
    const NUM: usize = 10;
    const RATE: usize = 9;
    const SHARE: usize = 6;

    fn at(width: u16) -> Columns {
        let extra = width >= 110;
        let fixed = Self::LABEL + 1 + (Self::NUM + 1) * 2 + Self::RATE + 1;
        let fixed = fixed
            + if extra {
                Self::SHARE + 1 + Self::NUM + 1
            } else {
                0
            };
        Columns {
            extra,
            spark: width.saturating_sub(u16::try_from(fixed).unwrap_or(u16::MAX)),
        }
    }

    fn text(
        &self,
        label: &str,
        packets: &str,
        pps: &str,
        dropped: &str,
        share: &str,
        bytes: &str,
    ) -> String {
        let (lw, num, rw) = (Self::LABEL, Self::NUM, Self::RATE);
        let mut s = format!("{label:<lw$} {packets:>num$} {pps:>rw$} {dropped:>num$} ");
        if self.extra {
            let sw = Self::SHARE;
            let _ = write!(s, "{share:>sw$} {bytes:>num$} ");
        }
        s
    }

    fn header(&self) -> String {
        self.text("class", "packets", "pkt/s", "dropped", "share", "bytes") + "last minute"
    }

    fn row(&self, r: &Row) -> String {
        self.text(
            r.label(),
            &count(r.packets, Self::NUM),
            &rate(r.pps, Self::RATE),
            &count(r.dropped, Self::NUM),
            &format!("{:.1}%", r.share),
            &count(r.bytes, Self::NUM),
        )
    }
}

/// Rows of `rows` in the order `sort` asks for.
fn sorted_classes(rows: &[Row], sort: Sort) -> Vec<&Row> {
    let mut v: Vec<&Row> = rows.iter().collect();
    let pos = |r: &Row| r.class.map(|c| Class::DISPLAY.iter().position(|d| *d == c));
    match sort {
        Sort::Rate => v.sort_by(|a, b| {
            b.pps
                .total_cmp(&a.pps)
                .then(b.packets.cmp(&a.packets))
                .then(pos(a).cmp(&pos(b)))
        }),
        Sort::Packets => v.sort_by(|a, b| b.packets.cmp(&a.packets).then(pos(a).cmp(&pos(b)))),
        Sort::Name => v.sort_by_key(|r| pos(r)),
    }
    v
}

fn sorted_sources(rows: &[SourceRow], sort: Sort) -> Vec<&SourceRow> {
    let mut v: Vec<&SourceRow> = rows.iter().collect();
    match sort {
        Sort::Rate => v.sort_by(|a, b| {
            b.pps
                .total_cmp(&a.pps)
                .then(b.packets.cmp(&a.packets))
                .then(a.addr.cmp(&b.addr))
        }),
        Sort::Packets => v.sort_by(|a, b| b.packets.cmp(&a.packets).then(a.addr.cmp(&b.addr))),
        Sort::Name => v.sort_by_key(|s| s.addr),
    }
    v
}

/// A source's classes in `width` columns: short labels, then `+N` for
/// those that do not fit.
fn class_labels(classes: &[Class], width: usize) -> String {
    let mut out = String::new();
    for (i, c) in classes.iter().enumerate() {
        let sep = if out.is_empty() { "" } else { "," };
        let more = classes.len() - i - 1;
        let tail = if more > 0 {
            format!(",+{more}")
        } else {
            String::new()
        };
        if out.len() + sep.len() + c.label().len() + tail.len() > width {
            let rest = classes.len() - i;
            let plus = format!("{sep}+{rest}");
            if out.len() + plus.len() <= width {
                out += &plus;
            }
            return out;
        }
        out += sep;
        out += c.label();
    }
    out
}

const BOLD: Style = Style::new().add_modifier(Modifier::BOLD);
const HEAD: Style = Style::new().add_modifier(Modifier::REVERSED);

/// The header (where, how, the view's own state), then a highlighted line
/// for each alert and an allowlist line.
fn header(shown: &Screen, ui: &Ui, width: usize) -> Vec<Line<'static>> {
    let mut spans = Vec::new();
    if ui.frozen.is_some() {
        spans.push(Span::styled(" PAUSED ", HEAD.add_modifier(Modifier::BOLD)));
        spans.push(Span::raw(" "));
    }
    let state = shown.state.unwrap_or("starting");
    let state_style = if state == "attached" {
        Style::new().green()
    } else {
        Style::new().red().add_modifier(Modifier::BOLD)
    };
    spans.extend([
        Span::styled(shown.ifaces.clone(), BOLD),
        Span::raw(format!("  {}  xdp {}  ", shown.mode, shown.xdp_mode)),
        Span::styled(state, state_style),
        Span::raw(format!("  up {}", hms(shown.uptime))),
    ]);
    // The exposure state: answers the router sent from 5351 out of its WAN
    // (the EXPOSED line below says more).
    if let Some(n) = shown.answered {
        spans.push(Span::raw("  "));
        spans.push(if n == 0 {
            Span::styled("not exposed", Style::new().green())
        } else {
            Span::styled(
                format!("EXPOSED ({n})"),
                Style::new().red().add_modifier(Modifier::BOLD),
            )
        });
    }
    spans.push(Span::raw(format!("  sort {}", ui.sort.name())));
    if shown.is_final {
        spans.push(Span::raw("  (final)"));
    }
    let mut lines = vec![Line::from(spans)];
    // Alerts and the status line: full width, highlighted, wrapped (at most
    // three lines each).
    let alert_style = Style::new().white().on_red().add_modifier(Modifier::BOLD);
    for a in &shown.alerts {
        for chunk in wrap(a, width).into_iter().take(3) {
            lines.push(Line::styled(format!("{chunk:<width$}"), alert_style));
        }
    }
    if !shown.allow.is_empty() {
        lines.push(Line::raw(format!(
            "allowed sources: {}",
            shown.allow.join(" ")
        )));
    }
    lines
}

/// The last held stderr line, and the keys.
fn footer(ui: &Ui) -> Vec<Line<'static>> {
    let mut footer = Vec::new();
    if let Some(m) = &ui.message {
        footer.push(Line::styled(m.clone(), Style::new().yellow()));
    }
    footer.push(Line::from(vec![
        Span::styled("q", BOLD),
        Span::raw(" quit  "),
        Span::styled("s", BOLD),
        Span::raw(" sort  "),
        Span::styled("p", BOLD),
        Span::raw(if ui.frozen.is_some() {
            " resume  "
        } else {
            " pause  "
        }),
        Span::styled("?", BOLD),
        Span::raw(" help"),
    ]));
    footer
}

/// The class rows and the total, added to `lines`; the rows that get a
/// sparkline (line index, row).
fn class_lines<'a>(
    lines: &mut Vec<Line<'static>>,
    shown: &'a Screen,
    sort: Sort,
    cols: &Columns,
    area: Rect,
    footer: usize,
) -> Vec<(usize, &'a Row)> {
    let width = usize::from(area.width);
    let room = usize::from(area.height).saturating_sub(lines.len() + footer + 2); // + header, total
    let classes = sorted_classes(&shown.classes, sort);
    let mut sparks = Vec::new();
    lines.push(Line::styled(format!("{:<width$}", cols.header()), HEAD));
    if classes.len() <= room {
        for r in classes {
            sparks.push((lines.len(), r));
            lines.push(Line::raw(cols.row(r)));
        }
    } else {
        // Packed: as many cells of 38 columns as fit across, no sparklines.
        let cell = 38;
        let across = (width / cell).max(1);
        let needed = classes.len().div_ceil(across);
        for y in 0..needed.min(room) {
            let mut s = String::new();
            for x in 0..across {
                if let Some(r) = classes.get(x * needed + y) {
                    let text = format!(
                        "{:<12} {:>10} {:>9}/s",
                        r.label(),
                        count(r.packets, 10),
                        rate(r.pps, 7)
                    );
                    let _ = write!(s, "{text:<cell$}");
                }
            }
            lines.push(Line::raw(s));
        }
    }
    sparks.push((lines.len(), &shown.total));
    lines.push(Line::styled(cols.row(&shown.total), BOLD));
    sparks
}

/// As many top sources as `left` rows hold (with their title and column
/// header), added to `lines`.
fn source_lines(
    lines: &mut Vec<Line<'static>>,
    shown: &Screen,
    sort: Sort,
    width: usize,
    left: usize,
) {
    if left < 3 || shown.sources.is_empty() {
        return;
    }
    lines.push(Line::styled(
        format!(
            "top sources ({} tracked, {} unattributed)",
            shown.tracked, shown.unattributed
        ),
        BOLD,
    ));
    let addr_w = shown
        .sources
        .iter()
        .map(|s| s.addr.to_string().len())
        .max()
        .unwrap_or(7)
        .clamp(7, 39);
    let (num, rw) = (Columns::NUM, Columns::RATE);
    let src_line = |addr: &str, packets: &str, pps: &str, idle: &str, classes: &str| {
        format!("{addr:<addr_w$} {packets:>num$} {pps:>rw$} {idle:>5} {classes}")
    };
    let classes_w = width.saturating_sub(addr_w + num + rw + 5 + 4);
    lines.push(Line::styled(
        format!(
            "{:<width$}",
            src_line("source", "packets", "pkt/s", "idle", "classes")
        ),
        HEAD,
    ));
    for s in sorted_sources(&shown.sources, sort)
        .into_iter()
        .take(left - 2)
    {
        lines.push(Line::raw(src_line(
            &s.addr.to_string(),
            &count(s.packets, num),
            &rate(s.pps, rw),
            &s.idle.map_or_else(|| "-".to_owned(), ago),
            &class_labels(&s.classes, classes_w),
        )));
    }
}

/// Draws `screen` as `ui` says on the whole frame.
pub(super) fn draw(frame: &mut Frame, screen: &Screen, ui: &Ui) {
    let area = frame.area();
    let shown = ui.frozen.as_ref().unwrap_or(screen);
    let mut lines = header(shown, ui, usize::from(area.width));
    let footer = footer(ui);
    let cols = Columns::at(area.width);
    let sparks = class_lines(&mut lines, shown, ui.sort, &cols, area, footer.len());
    let left = usize::from(area.height).saturating_sub(lines.len() + footer.len());
    source_lines(&mut lines, shown, ui.sort, usize::from(area.width), left);

    let body_h = u16::try_from(lines.len()).unwrap_or(u16::MAX);
    let footer_h = u16::try_from(footer.len()).unwrap_or(u16::MAX);
    let [body, _, foot] = Layout::vertical([
        Constraint::Length(body_h),
        Constraint::Fill(1),
        Constraint::Length(footer_h),
    ])
    .areas(area);
    frame.render_widget(Paragraph::new(lines), body);
    frame.render_widget(Paragraph::new(footer), foot);

    // Sparklines at the end of their rows.
    if cols.spark >= 4 {
        let x = area.x + area.width - cols.spark;
        for (y, r) in sparks {
            let Ok(y) = u16::try_from(y) else { continue };
            if y >= body.height {
                continue;
            }
            let rect = Rect::new(x, body.y + y, cols.spark - 1, 1);
            let data = buckets(&r.history, ui.interval, rect.width);
            frame.render_widget(
                Sparkline::default()
                    .data(data)
                    .direction(RenderDirection::RightToLeft)
                    .style(if r.class.is_none() {
                        Style::new().cyan()
                    } else {
                        Style::new().green()
                    }),
                rect,
            );
        }
    }

    if ui.help {
        draw_help(frame, area);
    }
}

/// Splits `text` into pieces of at most `width` characters, at spaces
/// where it can.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let width = width.max(1);
    let mut out = Vec::new();
    let mut line = String::new();
    for word in text.split(' ') {
        let mut word = word.to_owned();
        loop {
            let need = usize::from(!line.is_empty()) + word.chars().count();
            if line.chars().count() + need <= width {
                if !line.is_empty() {
                    line.push(' ');
                }
                line += &word;
                break;
            }
            if line.is_empty() {
                let head: String = word.chars().take(width).collect();
                word = word.chars().skip(width).collect();
                out.push(head);
            } else {
                out.push(std::mem::take(&mut line));
            }
        }
    }
    if !line.is_empty() || out.is_empty() {
        out.push(line);
    }
    out
}

/// The keys, in a box over the middle of the screen.
fn draw_help(frame: &mut Frame, area: Rect) {
    let text = vec![
        Line::raw("q, Ctrl-C  quit: final report, detach (unless --pin)"),
        Line::raw("s          sort: rate, packets, name"),
        Line::raw("p          pause the display (counting goes on)"),
        Line::raw("?          this help; any key closes it"),
        Line::raw(""),
        Line::raw("No key changes the filter: `nat-pmp-agent mode`"),
        Line::raw("does. Rows: the classes that saw traffic."),
    ];
    let w = area.width.min(58);
    let h = area.height.min(9);
    let rect = Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    );
    frame.render_widget(Clear, rect);
    frame.render_widget(
        Paragraph::new(text)
            .wrap(Wrap { trim: false })
            .block(Block::bordered().title(" keys ")),
        rect,
    );
}

/// Stderr, redirected while the view owns the terminal; taken back (and
/// what it held written out) by [`release_stderr`], also from the panic
/// hook.
static HELD: Mutex<Option<gag::BufferRedirect>> = Mutex::new(None);

/// Gives stderr back and writes `held` and whatever is still unread to it.
fn release_stderr(held: &mut Vec<String>, dropped: usize) {
    let rest = HELD
        .try_lock()
        .ok()
        .and_then(|mut h| h.take())
        .map(|mut r| {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            drop(r); // stderr is the terminal again
            s
        });
    if dropped > 0 {
        say!("nat-pmp-agent: {dropped} earlier lines of stderr were not kept while the live view ran");
    }
    for line in held.drain(..) {
        say!("{line}");
    }
    if let Some(rest) = rest {
        for line in rest.lines() {
            say!("{line}");
        }
    }
}

/// The live view: the terminal it owns, the keys it reads, what it shows.
pub(super) struct Tui {
    terminal: Terminal<CrosstermBackend<Stdout>>,
    history: History,
    pub(super) ui: Ui,
    screen: Screen,
    /// Every line held from stderr, to write out on exit.
    held: Vec<String>,
    held_dropped: usize,
    partial: String,
    released: bool,
}

impl Tui {
    /// Takes the terminal (raw mode, the alternate screen), holds stderr and
    /// starts the key reader, whose events arrive on the returned channel.
    pub(super) fn start(
        interval: Duration,
    ) -> Result<(Tui, tokio::sync::mpsc::UnboundedReceiver<Event>)> {
        static HOOK: Once = Once::new();
        HOOK.call_once(|| {
            let prev = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                release_stderr(&mut Vec::new(), 0);
                prev(info);
            }));
        });
        // ratatui's own hook (added by try_init, so run first) gives the
        // terminal back before ours gives stderr back.
        let terminal = ratatui::try_init()
            .inspect_err(|_| ratatui::restore()) // raw mode may be on already
            .context("taking the terminal for the live view")?;
        let mut tui = Tui {
            terminal,
            history: History::new(),
            ui: Ui {
                interval,
                ..Ui::default()
            },
            screen: Screen::default(),
            held: Vec::new(),
            held_dropped: 0,
            partial: String::new(),
            released: false,
        };
        match gag::BufferRedirect::stderr() {
            Ok(r) => {
                if let Ok(mut h) = HELD.lock() {
                    *h = Some(r);
                }
            }
            Err(e) => {
                tui.ui.message = Some(format!(
                    "stderr is not held ({e}): lines may scribble over this view"
                ));
            }
        }
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        // crossterm's reads block: a thread of their own, ending when the
        // view is gone (or the terminal fails).
        std::thread::Builder::new()
            .name("keys".into())
            .spawn(move || {
                while let Ok(ev) = ratatui::crossterm::event::read() {
                    if tx.send(ev).is_err() {
                        break;
                    }
                }
            })
            .context("starting the live view's key reader")?;
        tui.redraw()?;
        Ok((tui, rx))
    }

    /// Takes in a reading and draws it (unless paused).
    pub(super) fn update(&mut self, total: &Report, parts: &[Report], now: Instant) -> Result<()> {
        self.screen = self.history.screen(total, parts, now);
        self.read_held();
        self.redraw()
    }

    /// What a key does; redraws.
    pub(super) fn on_event(&mut self, event: &Event) -> Result<Action> {
        let action = self.ui.on_event(event, &self.screen);
        if action == Action::Continue {
            self.redraw()?;
        }
        Ok(action)
    }

    fn redraw(&mut self) -> Result<()> {
        let (screen, ui) = (&self.screen, &self.ui);
        self.terminal
            .draw(|f| draw(f, screen, ui))
            .map(|_| ())
            .context("drawing the live view")
    }

    /// Moves what stderr got since the last call into `held`; its last line
    /// becomes the message line.
    fn read_held(&mut self) {
        let mut new = String::new();
        if let Ok(mut h) = HELD.try_lock() {
            if let Some(r) = h.as_mut() {
                let _ = r.read_to_string(&mut new);
            }
        }
        if new.is_empty() {
            return;
        }
        self.partial += &new;
        while let Some(at) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=at).collect();
            let line = line.trim_end().to_owned();
            // Shown without its escape sequences (env_logger colours what
            // it writes to a terminal) or other control characters: they
            // would move the cursor under ratatui's feet.
            let plain = strip_ansi_escapes::strip_str(&line);
            self.ui.message = Some(plain.chars().filter(|c| !c.is_control()).collect());
            if self.held.len() >= HELD_LINES_MAX {
                self.held.remove(0);
                self.held_dropped += 1;
            }
            self.held.push(line);
        }
    }

    /// Gives the terminal and stderr back (what stderr held is written
    /// out). Also on drop.
    pub(super) fn leave(&mut self) {
        if self.released {
            return;
        }
        self.released = true;
        self.read_held();
        let _ = self.terminal.show_cursor();
        ratatui::restore();
        if !self.partial.is_empty() {
            self.held.push(std::mem::take(&mut self.partial));
        }
        release_stderr(&mut self.held, self.held_dropped);
        let _ = self.terminal.backend_mut().flush();
    }
}

impl Drop for Tui {
    fn drop(&mut self) {
        self.leave();
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv6Addr};

    use ratatui::backend::TestBackend;

    use super::*;

    fn screen(classes: &[(Class, u64)], sources: usize) -> Screen {
        let rows: Vec<Row> = classes
            .iter()
            .map(|&(c, n)| Row {
                class: Some(c),
                packets: n,
                bytes: n * 60,
                share: 0.0,
                pps: f64::from(u32::try_from(n).unwrap()) / 10.0,
                dropped: n / 2,
                history: (0..60).map(|i| i % 7).collect(),
            })
            .collect();
        let total: u64 = classes.iter().map(|c| c.1).sum();
        Screen {
            ifaces: "wan0".into(),
            mode: "drop",
            xdp_mode: "native",
            uptime: Duration::from_secs(3723),
            state: Some("attached"),
            answered: Some(0),
            alerts: vec![],
            allow: vec![],
            classes: rows,
            total: Row {
                class: None,
                packets: total,
                history: (0..60).map(|i| i % 5).collect(),
                ..Row::default()
            },
            sources: (0..sources)
                .map(|i| SourceRow {
                    addr: IpAddr::V6(Ipv6Addr::new(
                        0x2001,
                        0xdb8,
                        0xffff,
                        0xffff,
                        0xffff,
                        0xffff,
                        0xffff,
                        u16::try_from(i).unwrap(),
                    )),
                    packets: 1000 - u64::try_from(i).unwrap(),
                    pps: f64::from(u32::try_from(i).unwrap()),
                    idle: Some(Duration::from_secs(75)),
                    classes: Class::ALL.to_vec(),
                })
                .collect(),
            tracked: sources,
            unattributed: 0,
            is_final: false,
        }
    }

    fn render(s: &Screen, ui: &Ui, w: u16, h: u16) -> Vec<String> {
        let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
        t.draw(|f| draw(f, s, ui)).unwrap();
        let buf = t.backend().buffer().clone();
        (0..h)
            .map(|y| {
                (0..w)
                    .map(|x| buf[(x, y)].symbol().to_owned())
                    .collect::<String>()
            })
            .collect()
    }

    fn ui() -> Ui {
        Ui {
            interval: Duration::from_secs(1),
            ..Ui::default()
        }
    }

    #[test]
    fn every_class_and_the_total_fit_80x24_with_the_sources_that_fit() {
        let s = screen(
            &[
                (Class::NatpmpExternalAddressRequest, 1234),
                (Class::NatpmpMapUdpRequest, 77),
                (Class::PcpMapRequest, 5),
            ],
            30,
        );
        let lines = render(&s, &ui(), 80, 24);
        let text = lines.join("\n");
        assert!(
            lines[0].contains("wan0")
                && lines[0].contains("drop")
                && lines[0].contains("xdp native")
        );
        assert!(
            lines[0].contains("up 1:02:03") && lines[0].contains("attached"),
            "{text}"
        );
        for label in ["op0 req", "map udp req", "pcp map req", "total"] {
            assert!(text.contains(label), "{label} missing:\n{text}");
        }
        // Sorted by rate: the busiest first.
        let at = |l: &str| lines.iter().position(|x| x.starts_with(l)).unwrap();
        assert!(at("op0 req") < at("map udp req") && at("map udp req") < at("pcp map req"));
        // Sources fill the rest, up to the key line.
        let shown = lines.iter().filter(|l| l.starts_with("2001:db8")).count();
        assert_eq!(shown, 24 - 1 - 1 - 3 - 1 - 2 - 1, "{text}");
        assert!(lines[23].contains("q quit"));
        // The compact classes of a source.
        assert!(text.contains("op0 req,+22"), "{text}");
    }

    #[test]
    fn classes_that_do_not_fit_are_packed_into_columns() {
        let all: Vec<(Class, u64)> = Class::ALL
            .into_iter()
            .filter(|c| !c.is_aggregate())
            .map(|c| (c, 10 + u64::from(c.index())))
            .collect();
        let s = screen(&all, 5);
        let lines = render(&s, &ui(), 80, 24);
        let text = lines.join("\n");
        for c in Class::ALL.into_iter().filter(|c| !c.is_aggregate()) {
            assert!(text.contains(c.label()), "{} missing:\n{text}", c.label());
        }
        assert!(text.contains("total"));
    }

    #[test]
    fn a_wide_terminal_gets_more_columns_and_sources() {
        let s = screen(&[(Class::NatpmpExternalAddressRequest, 3)], 30);
        let narrow = render(&s, &ui(), 80, 24);
        let wide = render(&s, &ui(), 120, 40);
        assert!(!narrow.iter().any(|l| l.contains("bytes")));
        assert!(wide
            .iter()
            .any(|l| l.contains("share") && l.contains("bytes")));
        let count = |v: &[String]| v.iter().filter(|l| l.starts_with("2001:db8")).count();
        assert!(count(&wide) > count(&narrow));
    }

    #[test]
    fn keys_sort_pause_help_and_quit_and_nothing_else() {
        use ratatui::crossterm::event::KeyEvent;
        let key = |c| Event::Key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE));
        let s = screen(&[(Class::NatpmpExternalAddressRequest, 3)], 0);
        let mut ui = ui();
        assert_eq!(ui.on_event(&key('s'), &s), Action::Continue);
        assert_eq!(ui.sort, Sort::Packets);
        ui.on_event(&key('s'), &s);
        ui.on_event(&key('s'), &s);
        assert_eq!(ui.sort, Sort::Rate);
        ui.on_event(&key('p'), &s);
        assert_eq!(ui.frozen.as_ref(), Some(&s));
        let lines = render(&screen(&[], 0), &ui, 80, 24);
        assert!(lines[0].contains("PAUSED") && lines.join("").contains("op0 req"));
        ui.on_event(&key('p'), &s);
        assert!(ui.frozen.is_none());
        ui.on_event(&key('?'), &s);
        assert!(render(&s, &ui, 80, 24)
            .join("\n")
            .contains("No key changes the filter"));
        ui.on_event(&key('x'), &s);
        assert!(!ui.help);
        for c in ['d', 'm', 'D', '0', ' '] {
            assert_eq!(ui.on_event(&key(c), &s), Action::Continue);
        }
        assert_eq!(ui.on_event(&key('q'), &s), Action::Quit);
        let ctrl_c = Event::Key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL));
        assert_eq!(ui.on_event(&ctrl_c, &s), Action::Quit);
    }

    #[test]
    fn alerts_and_the_status_line_span_the_width() {
        let mut s = screen(&[(Class::NatpmpExternalAddressRequest, 3)], 0);
        s.alerts = vec!["EXPOSED: answers leave the WAN ".repeat(4)];
        let lines = render(&s, &ui(), 80, 24);
        assert!(lines[1].starts_with("EXPOSED") && lines[2].contains("answers"));
    }

    #[test]
    fn buckets_cover_the_last_minute() {
        let h = vec![1; 60];
        assert_eq!(buckets(&h, Duration::from_secs(1), 20), vec![3; 20]);
        assert_eq!(buckets(&h, Duration::from_secs(1), 100).len(), 60);
        assert_eq!(buckets(&h, Duration::from_secs(10), 100).len(), 6);
        assert_eq!(
            class_labels(
                &[Class::NatpmpExternalAddressRequest, Class::PcpMapRequest],
                10
            ),
            "op0 req,+1"
        );
        assert_eq!(count(12_345_678_901, 10), "12.3G");
        assert_eq!(count(42, 10), "42");
        assert_eq!(wrap("ab cd ef", 5), ["ab cd", "ef"]);
    }
}
