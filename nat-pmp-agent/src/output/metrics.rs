//! `--metrics ADDR`: the counters in the Prometheus/OpenMetrics text
//! exposition format at `http://ADDR/metrics`.
//!
//! Metric names are a public contract (add, never rename):
//! - `natpmp_packets_total{iface,class,action}`: datagrams, `action` is
//!   `passed` or `dropped`, `class` a [`Class::name`];
//! - `natpmp_bytes_total{iface,class,action}`: their frame bytes;
//! - `natpmp_oversized_total{iface,class}`: datagrams longer than their
//!   opcode needs (also counted in the two above);
//! - `natpmp_drop_mode{iface}`: 1 in drop mode, 0 in monitor mode;
//! - `natpmp_sources_tracked{iface}`: source addresses the agent knows now
//!   (at most `sources::LEDGER_MAX`);
//! - `natpmp_unattributed_packets_total{iface}`: counted datagrams
//!   attributed to no source; with every source's packets they add up to
//!   all counted datagrams;
//! - `natpmp_source_packets_total{iface,source}`: datagrams from each of the
//!   interface's top [`TOP_SOURCES`] senders by packets (ties by address):
//!   at most that many series per interface, however many addresses a
//!   spoofed scan uses (the rest are in `natpmp_sources_tracked` and the
//!   JSON report);
//! - `natpmp_answered_packets_total{iface,class}`: answers this router sent
//!   from port 5351 out of the interface (the egress program), per class;
//! - `natpmp_answered_bytes_total{iface,class}`: their frame bytes;
//! - `natpmp_exposed{iface}`: 1 once the interface answered anyone (the
//!   router is exposed: alert on it), 0 while it did not. The three are
//!   absent for an instance without the egress program (no tcx);
//! - `natpmp_attached{iface}`: 1 while the kernel says the filter is
//!   attached to the interface, 0 while it is not (the interface is gone, a
//!   PPPoE reconnect, or someone detached it): alert on 0. The agent checks
//!   on every link event and every report interval.
//!
//! The maps are read at scrape time, so a scrape is as fresh as the kernel's
//! counters and needs no report interval. Encoding is prometheus-client's
//! (the Prometheus project's Rust client); the HTTP side is `tiny_http` on
//! one thread of its own: a scrape endpoint serves one small GET every few
//! seconds, so a blocking single-threaded server is plenty and keeps the
//! async report loop free of it.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread::JoinHandle,
};

use anyhow::{anyhow, Context as _, Result};
use nat_pmp_ebpf_common::{Class, Mode};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric as _},
    metrics::{counter::ConstCounter, gauge::ConstGauge},
    registry::Registry,
};

use crate::{
    bpf::{answered::AnsweredMaps, sources, Maps},
    stats::answered::Answered,
};

/// The `Content-Type` of prometheus-client's text encoding (`OpenMetrics` 1.0).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// How many senders per interface `natpmp_source_packets_total` lists (the
/// top by packets): a fixed bound, so that a scan from spoofed addresses
/// cannot add series to a Prometheus (docs/prometheus.md counts them).
pub const TOP_SOURCES: usize = 10;

/// Which counter of a class an `action` label value reads.
type Pick = fn(&nat_pmp_ebpf_common::ClassCounters) -> u64;
/// A metric with an `action` label: name, help, and its two actions.
type PerAction = (&'static str, &'static str, [(&'static str, Pick); 2]);

/// One interface the endpoint reports: its name, its maps, and whether the
/// agent last found the filter attached (set by the agent's checks).
pub struct Source {
    pub iface: String,
    pub maps: Maps,
    /// The egress program's maps (answers), when the instance has them.
    pub answered: Option<AnsweredMaps>,
    pub attached: Arc<AtomicBool>,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Source({})", self.iface)
    }
}

/// Reads every interface's maps on each scrape.
#[derive(Debug)]
struct MapsCollector {
    sources: Mutex<Vec<Source>>,
}

impl std::fmt::Debug for Maps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Maps")
    }
}

/// `natpmp_sources_tracked`, `natpmp_unattributed_packets_total` and
/// `natpmp_source_packets_total`.
fn encode_sources(
    encoder: &mut DescriptorEncoder,
    readings: &[(&str, &crate::stats::sources::Sources)],
) -> Result<(), std::fmt::Error> {
    let gauge = ConstGauge::new(0i64);
    let mut family = encoder.encode_descriptor(
        "natpmp_sources_tracked",
        "Source addresses the agent knows for the XDP filter (bounded)",
        None,
        gauge.metric_type(),
    )?;
    for (iface, src) in readings {
        let labels = [("iface", *iface)];
        ConstGauge::new(i64::try_from(src.tracked).unwrap_or(i64::MAX))
            .encode(family.encode_family(&labels)?)?;
    }
    let counter = ConstCounter::new(0u64);
    let mut family = encoder.encode_descriptor(
        "natpmp_unattributed_packets",
        "Counted NAT-PMP/PCP datagrams attributed to no source (a full slot set within one \
         interval, or beyond the agent's bound)",
        None,
        counter.metric_type(),
    )?;
    for (iface, src) in readings {
        let labels = [("iface", *iface)];
        ConstCounter::new(src.unattributed.packets).encode(family.encode_family(&labels)?)?;
    }
    let mut family = encoder.encode_descriptor(
        "natpmp_source_packets",
        "NAT-PMP/PCP datagrams from each of the interface's top 10 senders by packets \
         (bounded: the others are counted in natpmp_sources_tracked)",
        None,
        counter.metric_type(),
    )?;
    for (iface, src) in readings {
        for s in src.top.iter().take(TOP_SOURCES) {
            let addr = s.addr.to_string();
            let labels = [("iface", *iface), ("source", addr.as_str())];
            ConstCounter::new(s.stats.packets).encode(family.encode_family(&labels)?)?;
        }
    }
    Ok(())
}

/// `natpmp_answered_packets_total`, `natpmp_answered_bytes_total` and
/// `natpmp_exposed`.
fn encode_answered(
    encoder: &mut DescriptorEncoder,
    answers: &[(&str, Answered)],
) -> Result<(), std::fmt::Error> {
    let per_class: [(&str, &str, Pick); 2] = [
        (
            "natpmp_answered_packets",
            "NAT-PMP/PCP answers this router sent from port 5351 out of the interface \
             (exposure: RFC 6886 forbids answering on the WAN)",
            nat_pmp_ebpf_common::ClassCounters::packets,
        ),
        (
            "natpmp_answered_bytes",
            "Frame bytes of the answers this router sent from port 5351 out of the interface",
            nat_pmp_ebpf_common::ClassCounters::bytes,
        ),
    ];
    let counter = ConstCounter::new(0u64);
    for (name, help, pick) in per_class {
        let mut family = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
        for (iface, a) in answers {
            for class in exported_classes() {
                let labels = [("iface", *iface), ("class", class.name())];
                ConstCounter::new(pick(a.classes.get(class)))
                    .encode(family.encode_family(&labels)?)?;
            }
        }
    }
    let gauge = ConstGauge::new(0i64);
    let mut family = encoder.encode_descriptor(
        "natpmp_exposed",
        "1 once the router answered NAT-PMP/PCP on the interface since the egress program \
         loaded (exposed), 0 while it did not",
        None,
        gauge.metric_type(),
    )?;
    for (iface, a) in answers {
        let labels = [("iface", *iface)];
        ConstGauge::new(i64::from(a.exposed())).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for MapsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let sources = self.sources.lock().map_err(|_| std::fmt::Error)?;
        // A map that cannot be read fails the scrape (HTTP 500) rather than
        // reporting zeros a dashboard would take for real.
        let mut readings = Vec::with_capacity(sources.len());
        let mut answers: Vec<(&str, Answered)> = Vec::new();
        for Source {
            iface,
            maps,
            answered,
            ..
        } in sources.iter()
        {
            if let Some(a) = answered {
                answers.push((iface.as_str(), a.read().map_err(|_| std::fmt::Error)?));
            }
            let snap = maps.snapshot().map_err(|_| std::fmt::Error)?;
            let mode = maps.mode().map_err(|_| std::fmt::Error)?;
            let src = sources::read(maps, TOP_SOURCES).map_err(|_| std::fmt::Error)?;
            readings.push((iface.as_str(), snap, mode, src));
        }
        let per_action: [PerAction; 2] = [
            (
                "natpmp_packets",
                "NAT-PMP/PCP datagrams (UDP port 5351) seen by the XDP filter",
                [
                    ("passed", |c| c.passed_packets),
                    ("dropped", |c| c.dropped_packets),
                ],
            ),
            (
                "natpmp_bytes",
                "Frame bytes of the NAT-PMP/PCP datagrams seen by the XDP filter",
                [
                    ("passed", |c| c.passed_bytes),
                    ("dropped", |c| c.dropped_bytes),
                ],
            ),
        ];
        for (name, help, actions) in per_action {
            let counter = ConstCounter::new(0u64);
            let mut family = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
            for (iface, snap, _, _) in &readings {
                for class in exported_classes() {
                    for (action, pick) in actions {
                        let labels = [
                            ("iface", *iface),
                            ("class", class.name()),
                            ("action", action),
                        ];
                        ConstCounter::new(pick(snap.get(class)))
                            .encode(family.encode_family(&labels)?)?;
                    }
                }
            }
        }
        let counter = ConstCounter::new(0u64);
        let mut family = encoder.encode_descriptor(
            "natpmp_oversized",
            "NAT-PMP/PCP datagrams longer than their opcode needs",
            None,
            counter.metric_type(),
        )?;
        for (iface, snap, _, _) in &readings {
            for class in exported_classes() {
                let labels = [("iface", *iface), ("class", class.name())];
                ConstCounter::new(snap.get(class).oversized_packets)
                    .encode(family.encode_family(&labels)?)?;
            }
        }
        let gauge = ConstGauge::new(0i64);
        let mut family = encoder.encode_descriptor(
            "natpmp_drop_mode",
            "1 when the filter drops datagrams to port 5351, 0 when it only counts",
            None,
            gauge.metric_type(),
        )?;
        for (iface, _, mode, _) in &readings {
            let labels = [("iface", *iface)];
            ConstGauge::new(i64::from(*mode == Mode::Drop))
                .encode(family.encode_family(&labels)?)?;
        }
        let senders: Vec<(&str, &crate::stats::sources::Sources)> =
            readings.iter().map(|(i, _, _, s)| (*i, s)).collect();
        encode_sources(&mut encoder, &senders)?;
        encode_answered(&mut encoder, &answers)?;
        let mut family = encoder.encode_descriptor(
            "natpmp_attached",
            "1 while the kernel says the XDP filter is attached to the interface, 0 while it \
             is not (interface gone, link detached): the WAN is then not protected",
            None,
            gauge.metric_type(),
        )?;
        for s in sources.iter() {
            let labels = [("iface", s.iface.as_str())];
            ConstGauge::new(i64::from(s.attached.load(Ordering::Relaxed)))
                .encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// Renders the exposition text for `sources` (one scrape).
pub fn render(registry: &Registry) -> Result<String> {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry)
        .map_err(|_| anyhow!("reading the counters for /metrics failed"))?;
    Ok(out)
}

/// A registry with one collector over `sources` (interface name, maps).
pub fn registry(sources: Vec<Source>) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(MapsCollector {
        sources: Mutex::new(sources),
    }));
    registry
}

/// The HTTP endpoint; stops (and joins its thread) when dropped.
pub struct Server {
    http: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Listens on `addr` and serves `/metrics` on a thread of its own.
    pub fn start(addr: SocketAddr, sources: Vec<Source>) -> Result<Server> {
        let http = tiny_http::Server::http(addr)
            .map_err(|e| anyhow!("{e}"))
            .with_context(|| {
                format!(
                    "listening for --metrics on {addr} (is the port in use? pick another with \
                     --metrics ADDR:PORT)"
                )
            })?;
        let http = Arc::new(http);
        let registry = registry(sources);
        let server = Arc::clone(&http);
        let thread = std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || serve(&server, &registry))
            .context("starting the metrics thread")?;
        Ok(Server {
            http,
            thread: Some(thread),
        })
    }
}

fn serve(server: &tiny_http::Server, registry: &Registry) {
    for request in server.incoming_requests() {
        let path = request.url().split('?').next().unwrap_or("");
        let response = if path == "/metrics" {
            match render(registry) {
                Ok(body) => {
                    tiny_http::Response::from_string(body).with_header(header(CONTENT_TYPE))
                }
                Err(e) => {
                    tiny_http::Response::from_string(format!("{e:#}\n")).with_status_code(500)
                }
            }
        } else {
            tiny_http::Response::from_string("nat-pmp-agent: the metrics are at /metrics\n")
                .with_status_code(404)
        };
        // A scraper that hangs up early is its own problem.
        let _ = request.respond(response);
    }
}

fn header(content_type: &str) -> tiny_http::Header {
    tiny_http::Header {
        field: "Content-Type"
            .parse()
            .unwrap_or_else(|()| unreachable!("a valid header name")),
        value: content_type
            .parse()
            .unwrap_or_else(|_| unreachable!("a valid header value")),
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.http.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The classes exported as label values: every counted class, not the
/// aggregate `pcp` (the sum of the `pcp_*` classes), so that summing a
/// metric over `class` counts each datagram once; `class=~"pcp.*"` sums PCP.
pub fn exported_classes() -> impl Iterator<Item = Class> {
    Class::ALL.into_iter().filter(|c| !c.is_aggregate())
}
