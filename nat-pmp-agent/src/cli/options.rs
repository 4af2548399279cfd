//! The one place run options are parsed, merged and checked.
//!
//! The `--config FILE` (TOML) takes every run flag as a key of the same name
//! without `--` (`iface`, `drop`, `xdp-mode`, ...). The keys are not
//! declared a second time: a key is accepted when [`RunArgs`] has a long
//! flag of that name, and its value is checked by clap exactly as the flag's
//! value would be. The file's settings become flags placed before the
//! command line's, so the command line wins.
//!
//! The file is the declared state: on start and on SIGHUP the agent applies
//! exactly what it (and the command line) says; a setting it leaves out is
//! its default (no `drop` means monitor mode, no `allow` an empty
//! allowlist), also over a pinned instance that had it, and each change is
//! reported.
//!
//! Contract: flags given on the command line win over the file; `--iface`
//! on the command line replaces the file's interfaces, while `allow`
//! prefixes from both add up (an allowlist is a set); boolean keys switch a
//! feature on (a flag cannot switch it off again, so leave them out of the
//! file to decide on the command line). An unknown key or a bad value is an
//! error naming the file, the key and its line.

use std::{ffi::OsString, path::Path, path::PathBuf};

use anyhow::{anyhow, bail, Context as _, Result};
use clap::{ArgAction, CommandFactory as _, FromArgMatches as _, Parser as _};
use nat_pmp_ebpf_common::Mode;

use super::{seconds, Cli, RunArgs};
use crate::{
    bpf::pin,
    live::{self, Output},
    net::iface::{AttachMode, LinkType},
};

/// The long names of the flags a config file may set: every run flag
/// but `--config` (and clap's own `--help`, `--version`).
pub fn file_keys() -> Vec<clap::Arg> {
    Cli::command()
        .get_arguments()
        .filter(|a| a.get_long().is_some())
        .filter(|a| !matches!(a.get_id().as_str(), "config" | "help" | "version"))
        .cloned()
        .collect()
}

/// The line of `text` on which `key` is set (1 when it cannot be found).
fn line_of(text: &str, key: &str) -> usize {
    text.lines()
        .position(|l| {
            l.trim_start()
                .strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map_or(1, |i| i + 1)
}

/// A clap error in one line: its first line, without the `error: `
/// prefix, and the possible values when clap lists them.
fn clap_reason(e: &clap::Error) -> String {
    let text = e.to_string();
    let mut lines = text.lines();
    let first = lines.next().unwrap_or_default();
    let mut reason = first.strip_prefix("error: ").unwrap_or(first).to_owned();
    if let Some(values) = lines
        .map(str::trim)
        .find(|l| l.starts_with("[possible values"))
    {
        reason.push(' ');
        reason.push_str(values);
    }
    reason
}

/// A config file's text as the flags it sets (in the file's order);
/// the error names the key and its line.
pub fn file_flags(text: &str) -> Result<Vec<String>, String> {
    let table: toml::Table = toml::from_str(text).map_err(|e| {
        let Some(span) = e.span() else {
            return e.message().to_owned();
        };
        let line_no = text[..span.start].matches('\n').count() + 1;
        format!("line {line_no}: {}", e.message())
    })?;
    let keys = file_keys();
    let mut flags = Vec::new();
    for (key, value) in &table {
        let line = line_of(text, key);
        let at = |msg: &str| format!("key `{key}` (line {line}): {msg}");
        let Some(arg) = keys.iter().find(|a| a.get_long() == Some(key.as_str())) else {
            let names: Vec<&str> = keys.iter().filter_map(clap::Arg::get_long).collect();
            return Err(format!(
                "unknown key `{key}` (line {line}); the keys are the run flags without `--`: {}",
                names.join(", ")
            ));
        };
        let flag = format!("--{key}");
        if !arg.get_action().takes_values() {
            match value {
                toml::Value::Boolean(true) => flags.push(flag),
                toml::Value::Boolean(false) => {}
                other => return Err(at(&format!("expected true or false, not {other}"))),
            }
            continue;
        }
        let values: Vec<&toml::Value> = match value {
            toml::Value::Array(list) if matches!(arg.get_action(), ArgAction::Append) => {
                list.iter().collect()
            }
            toml::Value::Array(_) => return Err(at("takes one value, not a list")),
            one => vec![one],
        };
        for v in values {
            let text = match v {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                other => {
                    return Err(at(&format!(
                        "expected a string or a number, not {}",
                        other.type_str()
                    )))
                }
            };
            // The value checked by clap, as the flag's would be.
            Cli::try_parse_from(["nat-pmp-agent", flag.as_str(), text.as_str()])
                .map_err(|e| at(&clap_reason(&e)))?;
            flags.push(flag.clone());
            flags.push(text);
        }
    }
    Ok(flags)
}

/// Reads `path` as [`file_flags`].
fn load(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the config file {}", path.display()))?;
    file_flags(&text).map_err(|e| anyhow!("config file {}: {e}", path.display()))
}

/// The run flags of `args` (the command line, program name first) over the
/// `file` flags: the file's go first, so the command line's win; the file's
/// interfaces only when the command line names none.
pub fn merge(args: &[OsString], cli: &RunArgs, mut file: Vec<String>) -> Result<RunArgs> {
    if !cli.iface.is_empty() {
        let mut kept = Vec::new();
        let mut it = file.into_iter();
        while let Some(f) = it.next() {
            if f == "--iface" {
                it.next();
            } else {
                kept.push(f);
            }
        }
        file = kept;
    }
    let mut line: Vec<OsString> = args.iter().take(1).cloned().collect();
    line.extend(file.into_iter().map(OsString::from));
    line.extend(args.iter().skip(1).cloned());
    let matches = Cli::command()
        .args_override_self(true)
        .try_get_matches_from(line)
        .map_err(|e| anyhow!("{}", clap_reason(&e)))
        .context("combining the config file with the command line")?;
    Ok(Cli::from_arg_matches(&matches)
        .map_err(|e| anyhow!("{}", clap_reason(&e)))?
        .run)
}

/// The run options of `args` (the command line, program name first): the
/// config file it names read afresh (also what SIGHUP re-runs), merged,
/// and checked.
pub fn options(cli: &RunArgs, args: &[OsString]) -> Result<live::Options> {
    let a = match &cli.config {
        Some(path) => merge(args, cli, load(path)?)?,
        None => cli.clone(),
    };
    check(a)
}

/// Checks merged run flags and turns them into the live agent's options.
fn check(a: RunArgs) -> Result<live::Options> {
    if a.iface.is_empty() {
        bail!("--iface is required (on the command line, or as `iface` in the --config file)");
    }
    if a.pin_dir.is_some() && !a.pin {
        bail!("--pin-dir is where --pin puts its pins: add --pin (or `pin = true`)");
    }
    if let Some(addr) = a.metrics {
        if !addr.ip().is_loopback() && !a.metrics_allow_remote {
            bail!(
                "--metrics {addr}: refusing to serve metrics on a non-loopback address; add \
                 --metrics-allow-remote if that is what you want (the counters reveal who \
                 scans you)"
            );
        }
    }
    Ok(live::Options {
        ifaces: a.iface,
        attach: a.xdp_mode.map_or(AttachMode::Auto, Into::into),
        interval: seconds("--interval", a.interval.unwrap_or(1.0))?,
        output: a.output.map_or(Output::Auto, Into::into),
        duration: a.duration.map(|d| seconds("--duration", d)).transpose()?,
        pin_root: a.pin.then(|| {
            a.pin_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from(pin::DEFAULT_PIN_ROOT))
        }),
        metrics: a.metrics,
        top_sources: a.top_sources.unwrap_or(10),
        all_classes: a.all_classes,
        wait: a.wait,
        settings: live::Settings {
            mode: if a.drop { Mode::Drop } else { Mode::Monitor },
            link: a.link_type.map_or(LinkType::Auto, Into::into),
            track_sources: !a.no_sources,
            allow: a.allow,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::allow;

    fn argv(a: &[&str]) -> Vec<OsString> {
        std::iter::once("nat-pmp-agent")
            .chain(a.iter().copied())
            .map(OsString::from)
            .collect()
    }

    fn merged(file: &str, cli: &[&str]) -> RunArgs {
        let args = argv(cli);
        let parsed = Cli::try_parse_from(&args).expect("a valid command line");
        merge(&args, &parsed.run, file_flags(file).expect("a valid file")).expect("merges")
    }

    #[test]
    fn every_flag_has_a_key() {
        let a = merged(
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
            &[],
        );
        assert_eq!(a.iface, ["wan0", "wan1"]);
        assert!(a.drop && a.pin && !a.metrics_allow_remote && a.no_sources && a.wait);
        assert_eq!(a.xdp_mode, Some(super::super::XdpModeArg::Skb));
        assert_eq!(a.link_type, Some(super::super::LinkTypeArg::RawIp));
        assert_eq!(a.interval, Some(2.5));
        assert_eq!(a.output, Some(super::super::OutputArg::Json));
        assert_eq!(a.duration, Some(10.0));
        assert_eq!(a.pin_dir, Some(PathBuf::from("/run/natpmp")));
        assert_eq!(a.metrics, Some("127.0.0.1:9999".parse().expect("addr")));
        assert_eq!(a.top_sources, Some(3));
        assert_eq!(
            a.allow.iter().map(allow::show).collect::<Vec<_>>(),
            ["198.51.100.0/24", "2001:db8::/32"]
        );
        // Every run flag is a key: the file's keys are the flags themselves.
        let keys: Vec<String> = file_keys()
            .iter()
            .filter_map(|a| a.get_long().map(str::to_owned))
            .collect();
        for flag in [
            "iface",
            "drop",
            "xdp-mode",
            "link-type",
            "interval",
            "output",
            "duration",
            "pin",
            "pin-dir",
            "metrics",
            "metrics-allow-remote",
            "top-sources",
            "allow",
            "no-sources",
            "wait",
        ] {
            assert!(
                keys.iter().any(|k| k == flag),
                "{flag} is not a key: {keys:?}"
            );
        }
        assert!(!keys.iter().any(|k| k == "config"), "{keys:?}");
    }

    #[test]
    fn flags_win_over_the_file() {
        let a = merged(
            "iface = \"wan0\"\ninterval = 5\nxdp-mode = \"native\"\nallow = [\"192.0.2.0/24\"]\n",
            &[
                "--iface",
                "eth1",
                "--interval",
                "0.5",
                "--allow",
                "198.51.100.7",
            ],
        );
        assert_eq!(a.iface, ["eth1"]);
        assert_eq!(a.interval, Some(0.5));
        assert_eq!(a.xdp_mode, Some(super::super::XdpModeArg::Native));
        assert_eq!(
            a.allow.iter().map(allow::show).collect::<Vec<_>>(),
            ["192.0.2.0/24", "198.51.100.7/32"]
        );
        let a = merged("iface = [\"wan0\", \"wan1\"]\n", &["--drop"]);
        assert_eq!(a.iface, ["wan0", "wan1"]);
        assert!(a.drop);
    }

    #[test]
    fn bad_values_name_the_key_and_line() {
        let e = file_flags("iface = \"wan0\"\nxdp-mode = \"fast\"\n").expect_err("bad value");
        assert!(
            e.contains("key `xdp-mode` (line 2)") && e.contains("fast"),
            "{e}"
        );
        let e = file_flags("interval = \"soon\"\n").expect_err("bad type");
        assert!(e.contains("key `interval` (line 1)"), "{e}");
        let e = file_flags("dorp = true\n").expect_err("unknown key");
        assert!(e.contains("dorp") && e.contains("line 1"), "{e}");
        let e = file_flags("metrics = \"localhost\"\n").expect_err("bad address");
        assert!(e.contains("key `metrics`"), "{e}");
        let e = file_flags("interval = [1, 2]\n").expect_err("a list for one value");
        assert!(e.contains("key `interval` (line 1)"), "{e}");
        let e = file_flags("drop = \"yes\"\n").expect_err("a string for a switch");
        assert!(e.contains("key `drop` (line 1)"), "{e}");
        let e = file_flags("config = \"/etc/x.toml\"\n").expect_err("no config in config");
        assert!(e.contains("unknown key `config`"), "{e}");
    }

    /// The flag reference in docs/operations.md lists every run flag (and
    /// nothing else) with its config key: a flag added to the CLI without
    /// its row, or a row left behind, fails here.
    #[test]
    fn the_docs_list_every_flag_with_its_key() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/operations.md");
        let doc = std::fs::read_to_string(path).expect("reading docs/operations.md");
        let mut rows: Vec<(String, String)> = doc
            .lines()
            .filter_map(|l| l.strip_prefix("| `--"))
            .map(|l| {
                let mut cells = l.split('|').map(str::trim);
                let flag = cells.next().unwrap_or_default().trim_end_matches('`');
                let key = cells.next().unwrap_or_default().trim_matches('`');
                (flag.to_owned(), key.to_owned())
            })
            .collect();
        rows.sort();
        let mut want: Vec<(String, String)> = file_keys()
            .iter()
            .filter_map(clap::Arg::get_long)
            .map(|f| (f.to_owned(), f.to_owned()))
            .chain(std::iter::once(("config".to_owned(), "-".to_owned())))
            .collect();
        want.sort();
        assert_eq!(
            rows, want,
            "docs/operations.md's flag table and the CLI differ"
        );
    }
}
