//! Text tables a person reads: the classes that saw traffic plus the three
//! NAT-PMP request rows; `--all-classes` shows every row; PCP rows sit
//! together right under their `pcp` aggregate.

use nat_pmp_agent::replay;
use nat_pmp_ebpf_common::{
    capgen::{write_file, Spec},
    Class, Mode,
};

/// The class names in a text table's rows, in order.
fn rows(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let name = *cells.get(3)?;
            Class::from_name(name).map(|c| c.name().to_owned())
        })
        .collect()
}

#[test]
fn tables_show_what_saw_traffic_and_the_request_rows() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert!(
        euid == 0,
        "replay loads the XDP program: run as root; refusing to skip"
    );
    let dir = tempfile::tempdir().expect("a temporary directory");
    let capture = dir.path().join("scan.pcap");
    let comp = write_file(
        &Spec {
            count: 2000,
            ..Spec::default()
        },
        &capture,
    )
    .expect("writing the capture");
    let analysis = replay::replay(&replay::Options {
        files: vec![capture],
        mode: Mode::Monitor,
        progress: false,
    })
    .expect("replaying");
    let counters = analysis.counters();

    let text = replay::report::to_text(&analysis, 5, false);
    let shown = rows(&text);
    let want: Vec<String> = Class::DISPLAY
        .into_iter()
        .filter(|&c| c.always_shown() || counters.get(c).packets() > 0)
        .map(|c| c.name().to_owned())
        .collect();
    assert_eq!(shown, want, "{text}");
    for c in [
        Class::NatpmpExternalAddressRequest,
        Class::NatpmpMapUdpRequest,
        Class::NatpmpMapTcpRequest,
    ] {
        assert!(
            shown.iter().any(|n| n == c.name()),
            "{} always shown",
            c.name()
        );
    }
    let silent = Class::ALL
        .into_iter()
        .find(|&c| !c.always_shown() && counters.get(c).packets() == 0)
        .expect("a class the generated scan never sends");
    assert!(!shown.iter().any(|n| n == silent.name()), "{text}");
    // Every class of the composition is in the table.
    for name in comp.counters.keys() {
        assert!(shown.contains(name), "{name} saw traffic: {text}");
    }

    let all = rows(&replay::report::to_text(&analysis, 5, true));
    let every: Vec<String> = Class::DISPLAY.iter().map(|c| c.name().to_owned()).collect();
    assert_eq!(all, every, "--all-classes shows every row in display order");
    let pcp = all.iter().position(|n| n == "pcp").expect("the pcp row");
    let children: Vec<usize> = all
        .iter()
        .enumerate()
        .filter(|(_, n)| n.starts_with("pcp_"))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(
        children,
        (pcp + 1..=pcp + children.len()).collect::<Vec<_>>(),
        "the pcp_* rows follow their aggregate"
    );
}
