//! The `--config FILE` (TOML): every run flag as a key of the same name
//! without `--` (`iface`, `drop`, `xdp-mode`, `link-type`, `interval`, `output`,
//! `duration`, `pin`, `pin-dir`, `metrics`, `metrics-allow-remote`, `top-sources`,
//! `allow`, `no-sources`, `wait`).
//!
//! The file is the declared state: on start and on SIGHUP the agent applies
//! exactly what it (and the command line) says; a setting it leaves out is
//! its default (no `drop` means monitor mode, no `allow` an empty
//! allowlist), also over a pinned instance that had it, and each change is
//! reported.
//!
//! Contract: flags given on the command line win over the file; boolean keys
//! switch a feature on (a flag cannot switch it off again, so leave them out
//! of the file to decide on the command line). An unknown key or a bad value
//! is an error naming the file, the key and its line.

use std::{net::SocketAddr, path::Path, path::PathBuf};

use anyhow::{anyhow, Context as _, Result};
use nat_pmp_agent::{
    ebpf::{AttachMode, LinkType},
    monitor::Output,
};
use serde::Deserialize;

use crate::RunArgs;

/// The file's contents; every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileConfig {
    iface: Option<OneOrMany>,
    drop: Option<bool>,
    xdp_mode: Option<AttachMode>,
    link_type: Option<LinkType>,
    interval: Option<f64>,
    output: Option<Output>,
    duration: Option<f64>,
    pin: Option<bool>,
    pin_dir: Option<PathBuf>,
    metrics: Option<SocketAddr>,
    metrics_allow_remote: Option<bool>,
    top_sources: Option<usize>,
    allow: Option<Vec<String>>,
    no_sources: Option<bool>,
    wait: Option<bool>,
}

/// `iface = "wan0"` or `iface = ["wan0", "wan1"]`.
#[derive(Debug, Deserialize)]
#[serde(untagged, expecting = "an interface name or a list of interface names")]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// Reads and checks `path`.
pub fn load(path: &Path) -> Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the config file {}", path.display()))?;
    parse(&text).map_err(|e| anyhow!("config file {}: {e}", path.display()))
}

/// Parses a config file's text; the error names the key and its line.
pub fn parse(text: &str) -> Result<FileConfig, String> {
    toml::from_str(text).map_err(|e| {
        let Some(span) = e.span() else {
            return e.message().to_owned();
        };
        let line_no = text[..span.start].matches('\n').count() + 1;
        let line_start = text[..span.start].rfind('\n').map_or(0, |i| i + 1);
        let line = text[line_start..].lines().next().unwrap_or("");
        match line.split_once('=') {
            Some((key, _)) if !key.trim().is_empty() => {
                format!("key `{}` (line {line_no}): {}", key.trim(), e.message())
            }
            _ => format!("line {line_no}: {}", e.message()),
        }
    })
}

/// `cli` with what it leaves unset taken from `file`.
pub fn merge(mut cli: RunArgs, file: &FileConfig) -> Result<RunArgs> {
    if cli.iface.is_empty() {
        cli.iface = match &file.iface {
            Some(OneOrMany::One(i)) => vec![i.clone()],
            Some(OneOrMany::Many(v)) => v.clone(),
            None => Vec::new(),
        };
    }
    cli.drop |= file.drop.unwrap_or(false);
    cli.pin |= file.pin.unwrap_or(false);
    cli.metrics_allow_remote |= file.metrics_allow_remote.unwrap_or(false);
    cli.no_sources |= file.no_sources.unwrap_or(false);
    cli.wait |= file.wait.unwrap_or(false);
    cli.xdp_mode = cli.xdp_mode.or(file.xdp_mode);
    cli.link_type = cli.link_type.or(file.link_type);
    cli.interval = cli.interval.or(file.interval);
    cli.output = cli.output.or(file.output);
    cli.duration = cli.duration.or(file.duration);
    cli.pin_dir = cli.pin_dir.take().or_else(|| file.pin_dir.clone());
    cli.metrics = cli.metrics.or(file.metrics);
    cli.top_sources = cli.top_sources.or(file.top_sources);
    // Prefixes from both add up: an allowlist is a set.
    for p in file.allow.iter().flatten() {
        cli.allow
            .push(nat_pmp_agent::allow::parse(p).context("key `allow` of the config file")?);
    }
    Ok(cli)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_flag_has_a_key() {
        let f = parse(
            r#"
iface = ["wan0", "wan1"]
drop = true
xdp-mode = "skb"
link-type = "raw-ip"
interval = 2.5
output = "json"
duration = 10
pin = true
pin-dir = "/run/natpmp"
metrics = "127.0.0.1:9999"
metrics-allow-remote = false
top-sources = 3
allow = ["198.51.100.0/24", "2001:db8::/32"]
no-sources = true
wait = true
"#,
        )
        .expect("a valid file");
        let a = merge(RunArgs::default(), &f).expect("valid prefixes");
        assert_eq!(a.iface, ["wan0", "wan1"]);
        assert!(a.drop && a.pin && !a.metrics_allow_remote && a.no_sources && a.wait);
        assert_eq!(a.xdp_mode, Some(AttachMode::Skb));
        assert_eq!(a.link_type, Some(LinkType::RawIp));
        assert_eq!(a.interval, Some(2.5));
        assert_eq!(a.output, Some(Output::Json));
        assert_eq!(a.duration, Some(10.0));
        assert_eq!(a.pin_dir, Some(PathBuf::from("/run/natpmp")));
        assert_eq!(a.metrics, Some("127.0.0.1:9999".parse().expect("addr")));
        assert_eq!(a.top_sources, Some(3));
        assert_eq!(
            a.allow
                .iter()
                .map(nat_pmp_agent::allow::show)
                .collect::<Vec<_>>(),
            ["198.51.100.0/24", "2001:db8::/32"]
        );
    }

    #[test]
    fn flags_win_over_the_file() {
        let f = parse("iface = \"wan0\"\ninterval = 5\nxdp-mode = \"native\"\n").expect("valid");
        let cli = RunArgs {
            iface: vec!["eth1".into()],
            interval: Some(0.5),
            ..RunArgs::default()
        };
        let a = merge(cli, &f).expect("valid");
        assert_eq!(a.iface, ["eth1"]);
        assert_eq!(a.interval, Some(0.5));
        assert_eq!(a.xdp_mode, Some(AttachMode::Native));
    }

    #[test]
    fn bad_values_name_the_key_and_line() {
        let e = parse("iface = \"wan0\"\nxdp-mode = \"fast\"\n").expect_err("bad value");
        assert!(
            e.contains("key `xdp-mode` (line 2)") && e.contains("fast"),
            "{e}"
        );
        let e = parse("interval = \"soon\"\n").expect_err("bad type");
        assert!(e.contains("key `interval` (line 1)"), "{e}");
        let e = parse("dorp = true\n").expect_err("unknown key");
        assert!(e.contains("dorp") && e.contains("line 1"), "{e}");
        let e = parse("metrics = \"localhost\"\n").expect_err("bad address");
        assert!(e.contains("key `metrics`"), "{e}");
    }
}
