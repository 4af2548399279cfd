//! A fleet of routers in one Prometheus, for real: Debian's `prometheus`
//! server, run by the test in a monitoring namespace of its own with the
//! scrape config of `contrib/prometheus/` (file-based service discovery: the
//! test writes the targets files), scrapes two agents, each in its own router
//! namespace with its own veth WAN; known traffic to each, read back through
//! Prometheus' HTTP query API. The alert and recording rules are checked and
//! unit-tested with `promtool`, and loaded into that Prometheus; every
//! metric name the Grafana dashboard and the rules query must be one the agent
//! really exports.
//!
//! Topology: router `k` (0, 1) has `wan0` 198.18.0.1 towards its own
//! internet namespace, and `mgmt0` 198.18.1k.1 towards `monk` 198.18.1k.2
//! in the monitoring namespace, where Prometheus listens on that namespace's
//! own loopback. Guards delete the namespaces and end the agents and
//! Prometheus by PID even when an assertion fails.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    io::{Read as _, Write as _},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use nat_pmp_ebpf_common::Class;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use promql_parser::{
    parser::{self, Expr},
    util::{walk_expr, ExprVisitor},
};
use serde_json::Value;
use tempfile::TempDir;

use crate::support::{
    netns::NetNs,
    process::{Agent, Proc},
    require_root,
    wan::{bind, send, veth_pair, WanLink, INTERNET_ADDR, ROUTER_ADDR},
};

/// `contrib/prometheus/` of the agent crate.
fn contrib() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/prometheus")
}

/// The agent's metrics port on each router's management address.
const METRICS_PORT: u16 = 9351;
/// Where Prometheus listens: the monitoring namespace's own loopback.
const PROMETHEUS: &str = "127.0.0.1:9090";
/// The job name of `contrib/prometheus/prometheus.yml`.
const JOB: &str = "nat-pmp-agent";

/// Runs `promtool ARGS` in `dir`; fails with its output unless it succeeds.
fn promtool(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "running promtool: {e} (Debian package `prometheus`; `cargo xtask setup` \
                 installs it); refusing to skip"
            )
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "promtool {args:?} failed ({}):\n{text}",
        out.status
    );
    text
}

#[test]
fn promtool_checks_and_unit_tests_the_rules() {
    let dir = contrib();
    let check = promtool(&dir, &["check", "rules", "nat-pmp.rules.yml"]);
    assert!(check.contains("SUCCESS: 10 rules found"), "{check}");
    let test = promtool(&dir, &["test", "rules", "nat-pmp.rules.test.yml"]);
    assert!(test.contains("SUCCESS"), "{test}");
    // Each alert of the rules file has a firing and a not-firing case.
    let rules = std::fs::read_to_string(dir.join("nat-pmp.rules.yml")).expect("rules");
    let tests = std::fs::read_to_string(dir.join("nat-pmp.rules.test.yml")).expect("tests");
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert_eq!(alerts.len(), 5, "{alerts:?}");
    for alert in alerts {
        let cases: Vec<&str> = tests
            .split("- eval_time:")
            .filter(|case| case.contains(&format!("alertname: {alert}\n")))
            .collect();
        assert!(
            cases.iter().any(|c| c.contains("exp_alerts: []")),
            "{alert}: no case where it does not fire"
        );
        assert!(
            cases.iter().any(|c| c.contains("exp_labels:")),
            "{alert}: no case where it fires"
        );
    }
}

/// Collects the metric names an expression selects.
struct Names(BTreeSet<String>);

impl ExprVisitor for Names {
    type Error = String;

    fn pre_visit(&mut self, expr: &Expr) -> Result<bool, String> {
        let vs = match expr {
            Expr::VectorSelector(vs) => vs,
            Expr::MatrixSelector(ms) => &ms.vs,
            _ => return Ok(true),
        };
        let name = vs.name.clone().or_else(|| {
            vs.matchers
                .matchers
                .iter()
                .find(|m| m.name == "__name__")
                .map(|m| m.value.clone())
        });
        let name = name.ok_or_else(|| format!("a selector without a metric name: {vs}"))?;
        self.0.insert(name);
        Ok(true)
    }
}

/// The metric names a PromQL expression selects; Grafana's interval
/// variables become a duration first.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut q = expr.to_owned();
    for var in ["$__rate_interval", "$__range", "$__interval"] {
        q = q.replace(var, "5m");
    }
    let ast = parser::parse(&q).unwrap_or_else(|e| panic!("PromQL {expr:?} does not parse: {e}"));
    let mut names = Names(BTreeSet::new());
    walk_expr(&mut names, &ast).unwrap_or_else(|e| panic!("{expr}: {e}"));
    assert!(!names.0.is_empty(), "{expr} selects no metric");
    names.0
}

/// Every PromQL expression of the Grafana dashboard: the panels' targets
/// and the series of the template variables' `label_values(SERIES, label)`.
fn dashboard_queries() -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/grafana-dashboard.json");
    let text = std::fs::read_to_string(&path).expect("reading the dashboard");
    let d: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut out = Vec::new();
    for var in d["templating"]["list"].as_array().expect("variables") {
        if var["type"] == "query" {
            let q = var["query"]["query"].as_str().expect("a variable's query");
            let series = q
                .strip_prefix("label_values(")
                .and_then(|r| r.rsplit_once(','))
                .map_or_else(
                    || panic!("not label_values(SERIES, LABEL): {q}"),
                    |(s, _)| s.to_owned(),
                );
            out.push(series);
        }
    }
    for panel in d["panels"].as_array().expect("panels") {
        for t in panel["targets"].as_array().into_iter().flatten() {
            out.push(t["expr"].as_str().expect("a target's expr").to_owned());
        }
    }
    out
}

/// HTTP GET `path` from `host` (`ADDR:PORT`) inside `ns`: the status and
/// body.
fn http_get(ns: &NetNs, host: &str, path: &str) -> Result<(u16, String), String> {
    ns.enter(|| {
        let mut s = TcpStream::connect(host).map_err(|e| format!("connecting to {host}: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(|e| e.to_string())?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").map_err(|e| e.to_string())?;
        let mut resp = String::new();
        s.read_to_string(&mut resp).map_err(|e| e.to_string())?;
        let (head, body) = resp
            .split_once("\r\n\r\n")
            .ok_or_else(|| format!("not an HTTP response: {resp}"))?;
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("no status in {head}"))?;
        Ok((status, body.to_owned()))
    })
    .expect("entering the namespace")
}

/// The sample names of a real scrape of the agent.
fn exported_names(body: &str) -> BTreeSet<String> {
    let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned())))
        .expect("the exposition text parses");
    scrape.samples.into_iter().map(|s| s.metric).collect()
}

/// Series Prometheus writes itself for every target (not the agent's).
const PROMETHEUS_OWN: &[&str] = &["up"];

#[test]
fn dashboard_queries_use_metrics_the_agent_exports() {
    require_root();
    let link = WanLink::new("fleet-dash");
    let addr = format!("127.0.0.1:{METRICS_PORT}");
    let agent = Agent::start(
        &link.router,
        &["--iface", "wan0", "--drop", "--metrics", &addr],
    );
    let s = bind(&link.internet, INTERNET_ADDR, 0);
    send(&s, ROUTER_ADDR, Class::NatpmpExternalAddressRequest, 3);
    agent.wait_for_total(3);
    let (status, body) = http_get(&link.router, &addr, "/metrics").expect("scraping");
    assert_eq!(status, 200, "{body}");
    let exported = exported_names(&body);
    // Every family of the agent has a sample now (one source sent).
    for family in [
        "natpmp_packets_total",
        "natpmp_source_packets_total",
        "natpmp_attached",
        "natpmp_answered_packets_total",
        "natpmp_exposed",
    ] {
        assert!(exported.contains(family), "{family} not in\n{body}");
    }
    let queries = dashboard_queries();
    assert!(queries.len() > 15, "{queries:?}");
    let mut used = BTreeSet::new();
    for q in &queries {
        for name in metric_names(q) {
            assert!(
                exported.contains(&name) || PROMETHEUS_OWN.contains(&name.as_str()),
                "the dashboard queries {name} ({q}), which the agent does not export:\n{body}"
            );
            used.insert(name);
        }
    }
    // The fleet view uses the per-source metric and the health metrics.
    for name in [
        "natpmp_source_packets_total",
        "natpmp_attached",
        "natpmp_drop_mode",
        "natpmp_answered_packets_total",
        "natpmp_exposed",
        "up",
    ] {
        assert!(used.contains(name), "the dashboard does not use {name}");
    }
    agent.stop(libc::SIGTERM);
}

/// The monitoring side: a namespace and the Prometheus server running in it.
struct Prometheus {
    /// Declared first: dropped (killed by PID) before its directory goes.
    _proc: Proc,
    ns: NetNs,
    dir: TempDir,
}

impl Prometheus {
    /// Writes the test's config from `contrib/prometheus/prometheus.yml`
    /// (1 s intervals, the rules of contrib, targets under the temp
    /// directory) and starts `prometheus` in `ns`.
    fn start(ns: NetNs) -> Prometheus {
        let dir = tempfile::tempdir().expect("temp dir");
        let targets = dir.path().join("targets");
        std::fs::create_dir(&targets).expect("targets dir");
        let shipped =
            std::fs::read_to_string(contrib().join("prometheus.yml")).expect("the shipped config");
        let rules = contrib().join("nat-pmp.rules.yml");
        let mut config = shipped.clone();
        for (from, to) in [
            ("scrape_interval: 30s", "scrape_interval: 1s".to_owned()),
            (
                "evaluation_interval: 30s",
                "evaluation_interval: 1s".to_owned(),
            ),
            ("scrape_timeout: 10s", "scrape_timeout: 1s".to_owned()),
            (
                "/etc/prometheus/nat-pmp.rules.yml",
                rules.display().to_string(),
            ),
            (
                "/etc/prometheus/nat-pmp-targets/*.yml",
                format!("{}/*.yml", targets.display()),
            ),
        ] {
            assert!(config.contains(from), "{from} not in the shipped config");
            config = config.replace(from, &to);
        }
        let path = dir.path().join("prometheus.yml");
        std::fs::write(&path, &config).expect("writing the config");
        promtool(dir.path(), &["check", "config", "prometheus.yml"]);
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log");
        let child = ns
            .command("prometheus")
            .arg(format!("--config.file={}", path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={PROMETHEUS}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("starting prometheus (Debian package `prometheus`: `cargo xtask setup`)");
        let p = Prometheus {
            _proc: Proc(child),
            ns,
            dir,
        };
        p.wait("Prometheus ready", || {
            matches!(http_get(&p.ns, PROMETHEUS, "/-/ready"), Ok((200, _))).then_some(())
        });
        p
    }

    /// Writes the file-based service discovery file `name`.yml: `targets`
    /// with a `router` label each.
    fn add_targets(&self, name: &str, targets: &[(&str, &str)]) {
        let mut yaml = String::new();
        for (target, router) in targets {
            writeln!(
                yaml,
                "- targets: ['{target}']\n  labels:\n    router: {router}"
            )
            .expect("formatting");
        }
        let tmp = self.dir.path().join(format!(".{name}.tmp"));
        std::fs::write(&tmp, yaml).expect("writing targets");
        // Renamed into place: Prometheus never reads a half-written file.
        std::fs::rename(&tmp, self.dir.path().join(format!("targets/{name}.yml")))
            .expect("renaming targets");
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// GET `/api/v1/PATH`: its `data`; panics unless the status is success.
    fn api(&self, path: &str) -> Value {
        let (status, body) = http_get(&self.ns, PROMETHEUS, &format!("/api/v1/{path}"))
            .unwrap_or_else(|e| panic!("{e}\n{}", self.log()));
        let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
        assert!(
            status == 200 && v["status"] == "success",
            "{path}: {status} {body}"
        );
        v["data"].clone()
    }

    /// An instant query's vector: each sample's labels and value.
    fn query(&self, q: &str) -> Vec<(BTreeMap<String, String>, f64)> {
        let data = self.api(&format!(
            "query?query={}",
            utf8_percent_encode(q, NON_ALPHANUMERIC)
        ));
        assert_eq!(data["resultType"], "vector", "{q}: {data}");
        data["result"]
            .as_array()
            .expect("result")
            .iter()
            .map(|s| {
                let labels = serde_json::from_value(s["metric"].clone()).expect("labels");
                let value = s["value"][1]
                    .as_str()
                    .and_then(|v| v.parse().ok())
                    .expect("a value");
                (labels, value)
            })
            .collect()
    }

    /// `q`'s samples keyed by the values of `keys`.
    fn by(&self, q: &str, keys: &[&str]) -> BTreeMap<Vec<String>, f64> {
        self.query(q)
            .into_iter()
            .map(|(l, v)| (keys.iter().map(|k| l[*k].clone()).collect(), v))
            .collect()
    }

    /// Polls `f` (every 200 ms, up to 60 s) until it returns something.
    fn wait<T>(&self, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
        let end = Instant::now() + Duration::from_mins(1);
        loop {
            if let Some(v) = f() {
                return v;
            }
            assert!(
                Instant::now() < end,
                "timed out waiting for: {what}\nprometheus log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// One router: its namespaces, its agent, its metrics address.
struct Router {
    agent: Agent,
    link: WanLink,
    target: String,
}

fn key(instance: &str, class: Class, action: &str) -> Vec<String> {
    vec![
        instance.to_owned(),
        class.name().to_owned(),
        action.to_owned(),
    ]
}

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one scenario, read top to bottom: start, scrape, send, read back"
)]
#[expect(clippy::cast_precision_loss, reason = "small counts, exact in f64")]
fn a_real_prometheus_scrapes_a_fleet_of_agents() {
    require_root();
    let prom = Prometheus::start(NetNs::new("fleet-mon").expect("the monitoring namespace"));
    // Router 0 drops, router 1 only counts.
    let routers: Vec<Router> = (0..2u8)
        .map(|k| {
            let link = WanLink::new(&format!("fleet{k}"));
            let mgmt = format!("198.18.1{k}.1");
            veth_pair(
                (&link.router, "mgmt0", &mgmt),
                (&prom.ns, &format!("mon{k}"), &format!("198.18.1{k}.2")),
            );
            let target = format!("{mgmt}:{METRICS_PORT}");
            let mut args = vec!["--iface", "wan0", "--metrics", &target];
            args.push("--metrics-allow-remote");
            if k == 0 {
                args.push("--drop");
            }
            let agent = Agent::start(&link.router, &args);
            Router {
                agent,
                link,
                target,
            }
        })
        .collect();
    // File-based service discovery: a file per router.
    for (k, r) in routers.iter().enumerate() {
        prom.add_targets(&format!("r{k}"), &[(&r.target, &format!("router-{k}"))]);
    }
    let (t0, t1) = (routers[0].target.clone(), routers[1].target.clone());
    let (t0, t1) = (t0.as_str(), t1.as_str());

    // Both scraped, with at least two samples before any traffic (rate()
    // then starts from a real zero).
    let attached = format!("count_over_time(natpmp_attached{{job=\"{JOB}\"}}[5m]) >= 2");
    prom.wait("two scrapes of each agent", || {
        let n = prom.by(&attached, &["instance"]);
        (n.len() == 2).then_some(())
    });
    let up = prom.by(&format!("up{{job=\"{JOB}\"}}"), &["instance", "router"]);
    assert_eq!(
        up,
        BTreeMap::from([
            (vec![t0.to_owned(), "router-0".to_owned()], 1.0),
            (vec![t1.to_owned(), "router-1".to_owned()], 1.0),
        ]),
        "both targets up, with the label of their service-discovery file"
    );
    assert_eq!(
        prom.by("natpmp_drop_mode", &["instance", "iface"]),
        BTreeMap::from([
            (vec![t0.to_owned(), "wan0".to_owned()], 1.0),
            (vec![t1.to_owned(), "wan0".to_owned()], 0.0),
        ])
    );

    // Known traffic (bounded counts) to each router.
    let sent: [&[(Class, u64)]; 2] = [
        &[
            (Class::NatpmpExternalAddressRequest, 40),
            (Class::NatpmpMapUdpRequest, 10),
            (Class::PcpAnnounceRequest, 5),
        ],
        &[
            (Class::NatpmpExternalAddressRequest, 20),
            (Class::NatpmpMapTcpRequest, 6),
        ],
    ];
    let mut expected = BTreeMap::new();
    let mut totals = Vec::new();
    for (k, (r, mix)) in routers.iter().zip(sent).enumerate() {
        let s = bind(&r.link.internet, INTERNET_ADDR, 0);
        let action = if k == 0 { "dropped" } else { "passed" };
        for (class, n) in mix {
            send(&s, ROUTER_ADDR, *class, *n);
            expected.insert(key(&r.target, *class, action), *n as f64);
        }
        let total: u64 = mix.iter().map(|(_, n)| n).sum();
        let report = r.agent.wait_for_total(total);
        assert_eq!(report["total"]["packets"], total, "{report}");
        totals.push(total);
    }

    // Per router, per class, per action: what was sent, through Prometheus.
    let counts =
        format!("sum by (instance, class, action) (natpmp_packets_total{{job=\"{JOB}\"}}) > 0");
    let got = prom.wait("the counts in Prometheus", || {
        let got = prom.by(&counts, &["instance", "class", "action"]);
        (got == expected).then_some(got)
    });
    assert_eq!(got, expected);

    // rate() is sane: each router's counter went from 0 to its total within
    // the window, so the rate times the window is at least the total, and
    // at most the total plus the extrapolation to the window's end (under
    // one scrape interval of the several the series spans).
    let rates = prom.by(
        &format!("sum by (instance) (rate(natpmp_packets_total{{job=\"{JOB}\"}}[5m]))"),
        &["instance"],
    );
    for (r, total) in routers.iter().zip(&totals) {
        let rate = rates[&vec![r.target.clone()]];
        let n = *total as f64;
        assert!(
            rate * 300.0 >= n * 0.999 && rate * 300.0 <= n * 1.6,
            "{}: rate {rate}/s over 5m for {n} datagrams",
            r.target
        );
    }

    // The recording rules evaluate on the real series.
    let recorded = prom.wait("the recording rules", || {
        let got = prom.by("instance:natpmp_requests:rate5m > 0", &["instance"]);
        (got.len() == 2).then_some(got)
    });
    assert!(recorded.contains_key(&vec![t0.to_owned()]), "{recorded:?}");
    let dropped = prom.wait("instance:natpmp_dropped:rate5m", || {
        let got = prom.by("instance:natpmp_dropped:rate5m > 0", &["instance"]);
        (!got.is_empty()).then_some(got)
    });
    assert_eq!(
        dropped.keys().collect::<Vec<_>>(),
        [&vec![t0.to_owned()]],
        "only router 0 drops"
    );
    let by_class = prom.wait("class:natpmp_packets:rate5m", || {
        let got = prom.by("class:natpmp_packets:rate5m > 0", &["class"]);
        (got.len() == 4).then_some(got)
    });
    assert!(
        by_class.contains_key(&vec![Class::NatpmpMapTcpRequest.name().to_owned()]),
        "{by_class:?}"
    );
    // Every rule is loaded and healthy, and queries metrics the agent
    // exports (or Prometheus' `up`, or a rule's own record).
    let groups = prom.api("rules");
    let rules: Vec<&Value> = groups["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules"))
        .collect();
    assert_eq!(rules.len(), 10, "{groups}");
    let exported = scrape_from(&prom.ns, t0);
    let recorded_names: BTreeSet<String> = rules
        .iter()
        .filter(|r| r["type"] == "recording")
        .map(|r| r["name"].as_str().expect("name").to_owned())
        .collect();
    for rule in &rules {
        assert_eq!(rule["health"], "ok", "{rule}");
        let q = rule["query"].as_str().expect("query");
        for name in metric_names(q) {
            assert!(
                exported.contains(&name)
                    || recorded_names.contains(&name)
                    || PROMETHEUS_OWN.contains(&name.as_str()),
                "rule {} queries {name}, which the agent does not export",
                rule["name"]
            );
        }
    }

    // Per-source, bounded: each router's one sender, with what it sent.
    let sources = prom.by(
        &format!("natpmp_source_packets_total{{job=\"{JOB}\"}}"),
        &["instance", "source"],
    );
    assert_eq!(
        sources,
        BTreeMap::from([
            (
                vec![t0.to_owned(), INTERNET_ADDR.to_owned()],
                totals[0] as f64
            ),
            (
                vec![t1.to_owned(), INTERNET_ADDR.to_owned()],
                totals[1] as f64
            ),
        ])
    );

    // The series count per router is the one docs/prometheus.md gives:
    // 7 per exported class (5 of the XDP path, 2 of answers), 5 per
    // interface (with natpmp_exposed), one per listed source.
    let classes = nat_pmp_agent::output::metrics::exported_classes().count();
    let series = prom.by(
        &format!("count by (instance) ({{job=\"{JOB}\", __name__=~\"natpmp_.*\"}})"),
        &["instance"],
    );
    for r in &routers {
        assert_eq!(
            series[&vec![r.target.clone()]].to_string(),
            (7 * classes + 5 + 1).to_string(),
            "{}",
            r.target
        );
    }
    assert_eq!(
        7 * classes + 5,
        159,
        "docs/prometheus.md says 159 per interface"
    );

    // An agent that stops reporting: up goes to 0 (NatPmpAgentDown's input).
    let mut routers = routers;
    let last = routers.pop().expect("router 1");
    last.agent.stop(libc::SIGTERM);
    prom.wait("up == 0 for the stopped agent", || {
        let down = prom.by(&format!("up{{job=\"{JOB}\"}} == 0"), &["instance"]);
        down.contains_key(&vec![t1.to_owned()]).then_some(())
    });
    drop(last.link);
    for r in routers {
        r.agent.stop(libc::SIGTERM);
    }
}

/// The sample names of a scrape of `target` (`ADDR:PORT`) made from `ns`.
fn scrape_from(ns: &NetNs, target: &str) -> BTreeSet<String> {
    let (status, body) = http_get(ns, target, "/metrics").expect("scraping the agent");
    assert_eq!(status, 200, "{body}");
    exported_names(&body)
}
