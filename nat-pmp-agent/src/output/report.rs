//! Reports: the state a report is made of, and its two views (a table for
//! people, one JSON object per line for scripts).
//!
//! Contract: the JSON field names and class names are a public contract read
//! by scripts and dashboards: fields are added, never renamed. `pcp` (in
//! `counters` and in the table) is the sum of every `pcp_*` class; `total`
//! counts each datagram once.
//!
//! Several interfaces ([`combined_json`]): with one interface the report is
//! that interface's. With several, `iface` is the comma-separated list of
//! interfaces, `mode` and `xdp_mode` are the common value or `mixed`,
//! `counters`, `oversized` and `total` are sums over all interfaces, and the
//! per-interface reports are under `interfaces`, keyed by name, each with
//! the same fields as a single report except `time` (docs/report.md, and
//! its JSON Schema docs/report.schema.json).
//!
//! With the sources read, a report also has `sources_tracked` (senders the
//! agent knows now), `sources` (the top senders by packets: `address`,
//! `packets`, `bytes`, `first_seen`, `last_seen`, `classes`) and
//! `unattributed` (counted datagrams attributed to no sender: the sources'
//! packets plus it add up to every counted datagram).
//!
//! With the egress program's answers read, a report also has `answered`
//! (answers sent from port 5351: per class, totals, top destinations, the
//! last one), `exposed` (any answer) and `exposure` (the exposure line, or
//! null); see [`super::exposure`] and docs/exposure.md.

use std::{fmt::Write as _, time::Duration};

use comfy_table::{presets::UTF8_BORDERS_ONLY, CellAlignment, Table};
use nat_pmp_ebpf_common::{Class, ClassCounters};
use serde_json::{json, Map, Value};

use super::exposure::{answered_json, exposure_line};
use crate::stats::{answered::Answered, counters::Snapshot, sources::Sources};

/// What a report is about.
#[derive(Clone, Debug)]
pub struct Header {
    pub iface: String,
    /// `monitor` or `drop`.
    pub mode: &'static str,
    /// `native` or `skb`.
    pub xdp_mode: &'static str,
    /// Whether the filter protects the interface now, as the running agent
    /// last read it from the kernel (`None` outside a running agent).
    pub guard: Option<Guard>,
}

/// Whether a running agent's filter protects its interface, read from the
/// kernel on every report and link event.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Guard {
    /// The kernel says the filter's link holds a device of this namespace
    /// that runs the program.
    pub attached: bool,
    /// `attached`, `gone` (the interface does not exist: deleted, a PPPoE
    /// reconnect), `waiting` (`--wait`: not created yet), `detached` (its
    /// link was detached and this agent will not undo it: `nat-pmp-agent
    /// detach`), `reattaching` (detached by someone; attaching again failed
    /// so far), `elsewhere` (the link holds a device of another namespace).
    pub state: &'static str,
    /// The device attached to.
    pub ifindex: Option<u32>,
    /// With `--pin`: whether the pins are in place (the filter outlives the
    /// agent); `None` without `--pin`.
    pub pinned: Option<bool>,
    /// Seconds since start in which the interface was not protected.
    pub unprotected_secs: f64,
    /// How many times the agent attached the filter again.
    pub reattachments: u64,
    /// The last re-attach after a new-link event: milliseconds from the
    /// event to the filter attached again.
    pub last_reattach_ms: Option<f64>,
    /// The allowlist (prefixes drop mode lets through), read from the map.
    pub allow: Vec<String>,
    /// The one-line explanation shown while not attached (or not pinned).
    pub alert: Option<String>,
}

/// One report: totals since attach, and the rate over the last interval.
#[derive(Clone, Debug)]
pub struct Report<'a> {
    pub header: &'a Header,
    pub uptime: Duration,
    pub totals: Snapshot,
    /// Counted during the last interval, and that interval's length.
    pub last_interval: Option<(Snapshot, Duration)>,
    /// The last report before exit.
    pub is_final: bool,
    /// The top senders, when the sources map was read.
    pub sources: Option<Sources>,
    /// The answers sent from port 5351, when the egress maps were read.
    pub answered: Option<Answered>,
}

/// The classes a text table shows, in display order (PCP rows right under
/// their `pcp` aggregate): every class with `all`, else the three NAT-PMP
/// request rows (the honeypot's table) and every class that saw traffic.
pub fn shown_classes(totals: &Snapshot, all: bool) -> impl Iterator<Item = Class> + '_ {
    Class::DISPLAY
        .into_iter()
        .filter(move |&c| all || c.always_shown() || totals.get(c).packets() > 0)
}

/// A class's name in a text table: a `pcp_*` row indented under `pcp`.
pub fn row_name(class: Class) -> String {
    if class.parent().is_some() {
        format!("  {}", class.name())
    } else {
        class.name().to_owned()
    }
}

/// `part` as a percentage of `whole` (0 when `whole` is 0).
pub fn share(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        #[expect(clippy::cast_precision_loss, reason = "a percentage for display")]
        let pct = part as f64 * 100.0 / whole as f64;
        pct
    }
}

/// `count` per second over `over` (0 for an empty span).
pub fn per_second(count: u64, over: Duration) -> f64 {
    let secs = over.as_secs_f64();
    if secs <= 0.0 {
        0.0
    } else {
        #[expect(clippy::cast_precision_loss, reason = "a rate for display")]
        let rate = count as f64 / secs;
        rate
    }
}

impl Report<'_> {
    /// A line the live view (`live::tui`) shows across its whole width,
    /// highlighted, right under its header, when `Some`: the exposure line
    /// ([`Report::exposure`]: `EXPOSED: ...` once answers left the WAN), the
    /// same line the plain table and the JSON carry.
    pub fn status_line(&self) -> Option<String> {
        self.exposure(std::time::SystemTime::now())
    }

    /// The packets per second of `class` (of the total for `None`) over the
    /// last interval; 0 before the second reading.
    pub fn rate(&self, class: Option<Class>) -> f64 {
        self.last_interval.map_or(0.0, |(delta, over)| {
            let c = class.map_or_else(|| delta.total(), |c| *delta.get(c));
            per_second(c.packets(), over)
        })
    }

    /// The JSON view: one object, printed on one line.
    pub fn to_json(&self, time: std::time::SystemTime) -> Value {
        let total = self.totals.total();
        let counters = counters_json(&self.totals, |c| self.rate(Some(c)));
        let mut v = json!({
            "time": humantime::format_rfc3339_millis(time).to_string(),
            "iface": self.header.iface,
            "mode": self.header.mode,
            "xdp_mode": self.header.xdp_mode,
            "uptime_secs": round2(self.uptime.as_secs_f64()),
            "final": self.is_final,
            "counters": counters,
            "oversized": self.totals.oversized(),
            "total": class_json(&total, total.packets(), self.rate(None)),
        });
        if let (Some(src), Some(m)) = (&self.sources, v.as_object_mut()) {
            m.insert("sources_tracked".into(), json!(src.tracked));
            m.insert("sources".into(), sources_json(src));
            m.insert("unattributed".into(), json!(src.unattributed.packets));
        }
        if let (Some(a), Some(m)) = (&self.answered, v.as_object_mut()) {
            m.insert("answered".into(), answered_json(a, time));
            m.insert("exposed".into(), json!(a.exposed()));
            m.insert("exposure".into(), json!(self.exposure(time)));
        }
        if let (Some(g), Some(m)) = (&self.header.guard, v.as_object_mut()) {
            m.insert("attached".into(), json!(g.attached));
            m.insert("state".into(), json!(g.state));
            m.insert("ifindex".into(), json!(g.ifindex));
            m.insert("pinned".into(), json!(g.pinned));
            m.insert("unprotected_secs".into(), json!(round2(g.unprotected_secs)));
            m.insert("reattachments".into(), json!(g.reattachments));
            m.insert(
                "last_reattach_ms".into(),
                json!(g.last_reattach_ms.map(|ms| (ms * 1000.0).round() / 1000.0)),
            );
            m.insert("allow".into(), json!(g.allow));
            m.insert("alert".into(), json!(g.alert));
            // Generic (skb) XDP sees a GSO/GRO super-packet once: it counts
            // (and drops) the whole train as one datagram.
            m.insert(
                "counts".into(),
                json!(if self.header.xdp_mode == "skb" {
                    "gso_super_packets"
                } else {
                    "datagrams"
                }),
            );
        }
        v
    }

    /// The exposure line ([`exposure_line`]) of this report, if any answer
    /// was counted.
    pub fn exposure(&self, now: std::time::SystemTime) -> Option<String> {
        let a = self.answered.as_ref()?;
        exposure_line(&self.header.iface, a, self.header.mode == "drop", now)
    }

    /// The table view, like the honeypot report's table plus rates: the
    /// classes of [`shown_classes`] (every class with `all_classes`). Any
    /// answer sent from 5351 puts the exposure line above everything.
    pub fn to_table(&self, all_classes: bool) -> String {
        let total = self.totals.total();
        let mut out = String::new();
        if let Some(line) = self.exposure(std::time::SystemTime::now()) {
            let _ = writeln!(out, "{line}");
        }
        let secs = self.uptime.as_secs();
        let _ = writeln!(
            out,
            "nat-pmp-agent  iface {}  xdp {}  mode {}  uptime {}:{:02}:{:02}{}",
            self.header.iface,
            self.header.xdp_mode,
            self.header.mode,
            secs / 3600,
            secs / 60 % 60,
            secs % 60,
            if self.is_final { "  (final)" } else { "" },
        );
        if let Some(g) = &self.header.guard {
            if let Some(alert) = &g.alert {
                let _ = writeln!(out, "{alert}");
            }
            if !g.allow.is_empty() {
                let _ = writeln!(out, "allowed sources: {}", g.allow.join(" "));
            }
        }
        let mut table = Table::new();
        table.load_preset(UTF8_BORDERS_ONLY).set_header(vec![
            "class", "opcode", "packets", "share", "pkt/s", "dropped", "bytes",
        ]);
        let mut row = |name: &str, opcode: &str, c: &ClassCounters, pps: f64| {
            table.add_row(vec![
                name.to_owned(),
                opcode.to_owned(),
                c.packets().to_string(),
                format!("{:.1}%", share(c.packets(), total.packets())),
                format!("{pps:.1}"),
                c.dropped_packets.to_string(),
                c.bytes().to_string(),
            ]);
        };
        for class in shown_classes(&self.totals, all_classes) {
            row(
                &row_name(class),
                class.info().opcode,
                self.totals.get(class),
                self.rate(Some(class)),
            );
        }
        row("total", "", &total, self.rate(None));
        for i in 1..7 {
            if let Some(col) = table.column_mut(i) {
                col.set_cell_alignment(CellAlignment::Right);
            }
        }
        let _ = writeln!(out, "{table}");
        let _ = writeln!(
            out,
            "oversized (longer than their opcode needs): {}",
            self.totals.oversized()
        );
        if let Some(src) = &self.sources {
            let _ = writeln!(
                out,
                "top sources ({} tracked; unattributed: {}):",
                src.tracked, src.unattributed.packets
            );
            let mut t = Table::new();
            t.load_preset(UTF8_BORDERS_ONLY).set_header(vec![
                "source",
                "packets",
                "bytes",
                "first seen",
                "last seen",
                "classes",
            ]);
            for s in &src.top {
                let at = |ns| {
                    humantime::format_rfc3339_seconds(crate::net::sys::wall_time(ns)).to_string()
                };
                t.add_row(vec![
                    s.addr.to_string(),
                    s.stats.packets.to_string(),
                    s.stats.bytes.to_string(),
                    at(s.stats.first_seen_ns),
                    at(s.stats.last_seen_ns),
                    s.sent().map(Class::label).collect::<Vec<_>>().join(", "),
                ]);
            }
            for i in 1..3 {
                if let Some(col) = t.column_mut(i) {
                    col.set_cell_alignment(CellAlignment::Right);
                }
            }
            let _ = writeln!(out, "{t}");
        }
        if let Some(a) = &self.answered {
            out.push_str(&answered_table(a));
        }
        out
    }
}

/// The `answered` section of the text table: answers sent from 5351 per
/// class and the top destinations, or one line when there were none.
fn answered_table(a: &Answered) -> String {
    let mut out = String::new();
    if !a.exposed() {
        let _ = writeln!(out, "answered from port 5351: none (not exposed)");
        return out;
    }
    let _ = writeln!(
        out,
        "answered from port 5351: {} packets, {} bytes, to {} destinations:",
        a.packets(),
        a.bytes(),
        a.destinations
    );
    let mut t = Table::new();
    t.load_preset(UTF8_BORDERS_ONLY)
        .set_header(vec!["answered class", "packets", "bytes"]);
    for (class, c) in a.answered_classes() {
        t.add_row(vec![
            class.name().to_owned(),
            c.packets().to_string(),
            c.bytes().to_string(),
        ]);
    }
    let _ = writeln!(out, "{t}");
    let mut t = Table::new();
    t.load_preset(UTF8_BORDERS_ONLY)
        .set_header(vec!["answered to", "packets", "bytes", "last"]);
    for d in &a.top {
        t.add_row(vec![
            d.addr.to_string(),
            d.packets.to_string(),
            d.bytes.to_string(),
            humantime::format_rfc3339_seconds(d.last_seen).to_string(),
        ]);
    }
    let _ = writeln!(out, "{t}");
    out
}

/// The JSON view of one or several interfaces (see the module docs): one
/// interface's report as it is; for several, their sum with each
/// interface's report under `interfaces`.
pub fn combined_json(reports: &[Report], time: std::time::SystemTime) -> Value {
    if let [one] = reports {
        return one.to_json(time);
    }
    let mut interfaces = Map::new();
    for r in reports {
        let mut v = r.to_json(time);
        if let Some(m) = v.as_object_mut() {
            m.shift_remove("time");
        }
        interfaces.insert(r.header.iface.clone(), v);
    }
    let header = total_header(reports);
    let mut top = total_report(reports, &header).to_json(time);
    if let Some(m) = top.as_object_mut() {
        m.insert("interfaces".to_owned(), Value::Object(interfaces));
    }
    top
}

/// The table view of one or several interfaces: one section each, and a
/// total when there are several.
pub fn combined_table(reports: &[Report], all_classes: bool) -> String {
    let mut out = String::new();
    for r in reports {
        out.push_str(&r.to_table(all_classes));
    }
    if reports.len() > 1 {
        let header = total_header(reports);
        let total = total_report(reports, &header);
        let _ = write!(out, "\n{}", total.to_table(all_classes));
    }
    out
}

fn common(values: impl Iterator<Item = &'static str>) -> &'static str {
    let mut it = values.peekable();
    let first = it.peek().copied().unwrap_or("");
    if it.all(|v| v == first) {
        first
    } else {
        "mixed"
    }
}

/// The header of several interfaces' reports taken as one: the
/// comma-separated interfaces, and the common mode and XDP mode or `mixed`.
pub fn total_header(reports: &[Report]) -> Header {
    Header {
        iface: reports
            .iter()
            .map(|r| r.header.iface.as_str())
            .collect::<Vec<_>>()
            .join(","),
        mode: common(reports.iter().map(|r| r.header.mode)),
        xdp_mode: common(reports.iter().map(|r| r.header.xdp_mode)),
        guard: total_guard(reports),
    }
}

/// Several interfaces are protected when each of them is.
fn total_guard(reports: &[Report]) -> Option<Guard> {
    let guards: Vec<&Guard> = reports
        .iter()
        .filter_map(|r| r.header.guard.as_ref())
        .collect();
    if guards.len() != reports.len() {
        return None;
    }
    let attached = guards.iter().all(|g| g.attached);
    Some(Guard {
        attached,
        state: common(guards.iter().map(|g| g.state)),
        ifindex: None,
        pinned: guards
            .iter()
            .map(|g| g.pinned)
            .reduce(|a, b| a.zip(b).map(|(a, b)| a && b))
            .flatten(),
        unprotected_secs: guards
            .iter()
            .map(|g| g.unprotected_secs)
            .fold(0.0, f64::max),
        reattachments: guards.iter().map(|g| g.reattachments).sum(),
        last_reattach_ms: None,
        allow: Vec::new(),
        alert: None,
    })
}

/// Several interfaces' reports as one (under [`total_header`]): counters,
/// rates and sources summed.
pub fn total_report<'a>(reports: &[Report], header: &'a Header) -> Report<'a> {
    let totals = reports
        .iter()
        .fold(Snapshot::default(), |acc, r| acc.add(&r.totals));
    let last_interval = reports
        .iter()
        .map(|r| r.last_interval)
        .reduce(|a, b| match (a, b) {
            (Some((da, over)), Some((db, _))) => Some((da.add(&db), over)),
            _ => None,
        })
        .flatten();
    let parts: Vec<&Sources> = reports.iter().filter_map(|r| r.sources.as_ref()).collect();
    let answered: Vec<&Answered> = reports.iter().filter_map(|r| r.answered.as_ref()).collect();
    Report {
        header,
        uptime: reports.iter().map(|r| r.uptime).max().unwrap_or_default(),
        totals,
        last_interval,
        is_final: reports.iter().all(|r| r.is_final),
        sources: (!parts.is_empty()).then(|| Sources::merge(&parts)),
        answered: (!answered.is_empty()).then(|| Answered::merge(&answered)),
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// One class's counters in every JSON report (live, replay, status): the
/// same fields everywhere (docs/report.md). `share` is a percentage of
/// `total_packets`; `pps` packets per second (over the last interval live,
/// over the capture's span in a replay).
pub fn class_json(c: &ClassCounters, total_packets: u64, pps: f64) -> Value {
    json!({
        "packets": c.packets(),
        "bytes": c.bytes(),
        "dropped_packets": c.dropped_packets,
        "dropped_bytes": c.dropped_bytes,
        "oversized": c.oversized_packets,
        "share": round2(share(c.packets(), total_packets)),
        "pps": round2(pps),
    })
}

/// The `counters` object: every class by its stable name, with `pps(class)`.
pub fn counters_json(totals: &Snapshot, pps: impl Fn(Class) -> f64) -> Value {
    let total = totals.total().packets();
    let mut counters = Map::new();
    for class in Class::ALL {
        counters.insert(
            class.name().to_owned(),
            class_json(totals.get(class), total, pps(class)),
        );
    }
    Value::Object(counters)
}

/// One sender in every JSON report: the same fields live and in a replay
/// (docs/report.md); `classes` are the names of the classes it sent, in
/// class order. A replay adds what a capture tells (`class_packets`,
/// `per_hour`) with [`Map::insert`] on the result.
pub fn source_json(
    address: std::net::IpAddr,
    packets: u64,
    bytes: u64,
    (first_seen, last_seen): (String, String),
    classes: impl Iterator<Item = Class>,
) -> Value {
    json!({
        "address": address.to_string(),
        "packets": packets,
        "bytes": bytes,
        "first_seen": first_seen,
        "last_seen": last_seen,
        "classes": classes.map(Class::name).collect::<Vec<_>>(),
    })
}

/// The `sources` array of the JSON report.
pub fn sources_json(sources: &Sources) -> Value {
    Value::Array(
        sources
            .top
            .iter()
            .map(|s| {
                source_json(
                    s.addr,
                    s.stats.packets,
                    s.stats.bytes,
                    (
                        rfc3339(s.stats.first_seen_ns),
                        rfc3339(s.stats.last_seen_ns),
                    ),
                    s.sent(),
                )
            })
            .collect(),
    )
}

fn rfc3339(ktime_ns: u64) -> String {
    humantime::format_rfc3339_millis(crate::net::sys::wall_time(ktime_ns)).to_string()
}
