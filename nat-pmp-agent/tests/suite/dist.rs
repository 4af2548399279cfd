//! The release folder of `cargo xtask dist` (which `cargo xtask test` builds
//! before the suite): checked, not assumed.
//!
//! - both static binaries are static ELF files of their machine, and the
//!   folder's SHA256SUMS covers and matches every file;
//! - the aarch64 agent runs under qemu-user (Debian's `qemu-user-static`):
//!   `--version`, `--help`, and `probe` against a responder on loopback
//!   (qemu-user has no `bpf()` syscall, so nothing that loads BPF can run);
//! - each package holds exactly the files listed here (a missing or an
//!   unexpected file fails), for its architecture, with the config as a
//!   conffile and maintainer scripts that never start or enable the unit
//!   and never touch bpffs;
//! - the amd64 package really installs here with `dpkg -i`: its binary
//!   runs, `systemd-analyze verify` accepts its unit, the unit is not
//!   enabled and nothing was started; `dpkg --purge` then leaves nothing
//!   behind (file lists compared). A guard purges it even when an assertion
//!   fails.

use std::{
    collections::BTreeSet,
    fs,
    net::UdpSocket,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    thread,
    time::{Duration, Instant},
};

use nat_pmp_agent::probe::sample_payload;
use nat_pmp_ebpf_common::Class;
use serde_json::Value;

use crate::support::require_root;

const VERSION: &str = env!("CARGO_PKG_VERSION");
const PACKAGE: &str = "nat-pmp-agent";

/// Where `cargo xtask dist` wrote the release folder.
fn dist_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
        PathBuf::from,
    );
    let dir = target.join("dist");
    assert!(
        dir.join("SHA256SUMS").is_file(),
        "{} holds no release (no SHA256SUMS): run `cargo xtask dist` first (`cargo xtask test` \
         does); refusing to skip",
        dir.display()
    );
    dir
}

fn static_binary(arch: &str) -> PathBuf {
    dist_dir().join(format!("nat-pmp-agent-{VERSION}-{arch}-linux-musl"))
}

fn deb(arch: &str) -> PathBuf {
    dist_dir().join(format!("nat-pmp-agent_{VERSION}-1_{arch}.deb"))
}

/// Runs `cmd` to completion (stdin closed) and returns its output.
fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}; is it installed? (`cargo xtask setup`)"))
}

/// Runs `cmd`, panics with its stderr unless it succeeds, returns stdout.
fn ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every file (not directory) each package must hold, without the leading
/// `./`. The man pages are one per visible (sub)command.
const CONTENTS: &[&str] = &[
    "etc/nat-pmp-agent/nat-pmp-agent.toml",
    "usr/lib/systemd/system/nat-pmp-agent.service",
    "usr/sbin/nat-pmp-agent",
    "usr/share/bash-completion/completions/nat-pmp-agent",
    "usr/share/doc/nat-pmp-agent/README.md",
    "usr/share/doc/nat-pmp-agent/copyright",
    "usr/share/doc/nat-pmp-agent/install.md",
    "usr/share/doc/nat-pmp-agent/operations.md",
    "usr/share/doc/nat-pmp-agent/protection.md",
    "usr/share/fish/vendor_completions.d/nat-pmp-agent.fish",
    "usr/share/man/man8/nat-pmp-agent-allow-add.8.gz",
    "usr/share/man/man8/nat-pmp-agent-allow-del.8.gz",
    "usr/share/man/man8/nat-pmp-agent-allow-list.8.gz",
    "usr/share/man/man8/nat-pmp-agent-allow.8.gz",
    "usr/share/man/man8/nat-pmp-agent-audit.8.gz",
    "usr/share/man/man8/nat-pmp-agent-detach.8.gz",
    "usr/share/man/man8/nat-pmp-agent-mode.8.gz",
    "usr/share/man/man8/nat-pmp-agent-probe.8.gz",
    "usr/share/man/man8/nat-pmp-agent-replay.8.gz",
    "usr/share/man/man8/nat-pmp-agent-status.8.gz",
    "usr/share/man/man8/nat-pmp-agent.8.gz",
    "usr/share/nat-pmp-agent/grafana-dashboard.json",
    "usr/share/nat-pmp-agent/prometheus/nat-pmp.rules.test.yml",
    "usr/share/nat-pmp-agent/prometheus/nat-pmp.rules.yml",
    "usr/share/nat-pmp-agent/prometheus/prometheus.yml",
    "usr/share/nat-pmp-agent/prometheus/targets/example.yml",
    "usr/share/zsh/vendor-completions/_nat-pmp-agent",
];

const CONFFILE: &str = "/etc/nat-pmp-agent/nat-pmp-agent.toml";
const UNIT: &str = "/usr/lib/systemd/system/nat-pmp-agent.service";

/// The files `dpkg-deb -c` lists (directories left out).
fn deb_files(deb: &Path) -> BTreeSet<String> {
    ok(Command::new("dpkg-deb").arg("-c").arg(deb))
        .lines()
        .filter(|l| !l.starts_with('d'))
        .map(|l| {
            let path = l.split_whitespace().nth(5).expect("a dpkg-deb -c line");
            path.trim_start_matches("./").to_owned()
        })
        .collect()
}

#[test]
fn sha256sums_covers_and_matches_every_release_file() {
    let dir = dist_dir();
    let sums = fs::read_to_string(dir.join("SHA256SUMS")).expect("reading SHA256SUMS");
    let listed: BTreeSet<&str> = sums
        .lines()
        .map(|l| l.split_whitespace().nth(1).expect("a SHA256SUMS line"))
        .collect();
    let expected: BTreeSet<String> = [
        format!("nat-pmp-agent-{VERSION}-x86_64-linux-musl"),
        format!("nat-pmp-agent-{VERSION}-aarch64-linux-musl"),
        format!("nat-pmp-agent_{VERSION}-1_amd64.deb"),
        format!("nat-pmp-agent_{VERSION}-1_arm64.deb"),
    ]
    .into();
    assert_eq!(
        listed,
        expected.iter().map(String::as_str).collect(),
        "SHA256SUMS must list exactly the four release files"
    );
    let present: BTreeSet<String> = fs::read_dir(&dir)
        .expect("reading the release folder")
        .map(|e| {
            e.expect("a folder entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|n| n != "SHA256SUMS")
        .collect();
    assert_eq!(present, expected, "the release folder holds exactly these");
    let checked = ok(Command::new("sha256sum")
        .args(["-c", "SHA256SUMS"])
        .current_dir(&dir));
    assert_eq!(checked.matches(": OK").count(), 4, "{checked}");
}

/// Machine, interpreter and needed libraries from the ELF headers.
fn elf_facts(path: &Path) -> (u16, Option<String>, Vec<String>) {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let elf = goblin::elf::Elf::parse(&bytes)
        .unwrap_or_else(|e| panic!("{} is not an ELF file: {e}", path.display()));
    (
        elf.header.e_machine,
        elf.interpreter.map(str::to_owned),
        elf.libraries.iter().map(|s| (*s).to_owned()).collect(),
    )
}

#[test]
fn both_binaries_are_static_elf_files_of_their_machine() {
    use goblin::elf::header::{EM_AARCH64, EM_X86_64};
    for (arch, machine) in [("aarch64", EM_AARCH64), ("x86_64", EM_X86_64)] {
        let path = static_binary(arch);
        let (m, interp, libs) = elf_facts(&path);
        assert_eq!(m, machine, "{}: ELF machine", path.display());
        assert_eq!(
            interp,
            None,
            "{}: a static binary has no interpreter",
            path.display()
        );
        assert!(libs.is_empty(), "{}: needs {libs:?}", path.display());
    }
}

fn qemu_aarch64(args: &[&str]) -> Output {
    let out = run(Command::new("timeout")
        .args(["60", "qemu-aarch64-static"])
        .arg(static_binary("aarch64"))
        .args(args));
    assert_ne!(
        out.status.code(),
        Some(127),
        "qemu-aarch64-static is missing: Debian's qemu-user-static (`cargo xtask setup`)"
    );
    out
}

#[test]
fn the_aarch64_binary_runs_under_qemu_version_help_and_probe() {
    const COUNT: usize = 10;
    let v = qemu_aarch64(&["--version"]);
    assert!(v.status.success(), "{v:?}");
    assert_eq!(
        String::from_utf8_lossy(&v.stdout).trim(),
        format!("nat-pmp-agent {VERSION}")
    );
    let h = qemu_aarch64(&["--help"]);
    assert!(h.status.success(), "{h:?}");
    let help = String::from_utf8_lossy(&h.stdout);
    for word in [
        "Usage: nat-pmp-agent",
        "--iface",
        "--drop",
        "probe",
        "status",
    ] {
        assert!(help.contains(word), "--help lacks {word:?}:\n{help}");
    }

    // A gateway that answers every datagram, on loopback, bounded in count
    // and time.
    let sock = UdpSocket::bind("127.0.0.1:0").expect("binding the responder");
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("read timeout");
    let port = sock.local_addr().expect("responder address").port();
    let responder = thread::spawn(move || {
        let answer = sample_payload(Class::NatpmpExternalAddressResponse);
        let (mut buf, mut answered) = ([0u8; 1500], 0usize);
        let end = Instant::now() + Duration::from_mins(1);
        while answered < COUNT && Instant::now() < end {
            if let Ok((_, from)) = sock.recv_from(&mut buf) {
                sock.send_to(&answer, from).expect("answering");
                answered += 1;
            }
        }
        answered
    });
    let count = COUNT.to_string();
    let port = port.to_string();
    let p = qemu_aarch64(&[
        "probe",
        "127.0.0.1",
        "--port",
        &port,
        "--class",
        "natpmp_external_address_request",
        "--count",
        &count,
        "--rate",
        "100",
        "--wait",
        "1",
        "--json",
    ]);
    assert!(p.status.success(), "probe under qemu: {p:?}");
    let answered = responder.join().expect("the responder thread");
    assert_eq!(answered, COUNT, "the responder saw every probe");
    let result: Value = serde_json::from_slice(&p.stdout).expect("probe JSON");
    assert_eq!(result["sent"]["natpmp_external_address_request"], COUNT);
    assert_eq!(result["answers"]["natpmp_external_address_response"], COUNT);
    assert_eq!(result["exposed"], true);
}

#[test]
fn each_package_holds_exactly_its_files_and_never_starts_or_touches_bpffs() {
    let expected: BTreeSet<String> = CONTENTS.iter().map(|s| (*s).to_owned()).collect();
    for (arch, machine) in [
        ("amd64", goblin::elf::header::EM_X86_64),
        ("arm64", goblin::elf::header::EM_AARCH64),
    ] {
        let deb = deb(arch);
        let files = deb_files(&deb);
        let missing: Vec<_> = expected.difference(&files).collect();
        let extra: Vec<_> = files.difference(&expected).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "{}: missing {missing:?}, unexpected {extra:?}",
            deb.display()
        );
        let field = |f: &str| ok(Command::new("dpkg-deb").args(["-f"]).arg(&deb).arg(f));
        assert_eq!(field("Architecture").trim(), arch);
        assert_eq!(field("Package").trim(), PACKAGE);
        assert_eq!(field("Version").trim(), format!("{VERSION}-1"));

        // The packaged binary is the static one of the release folder.
        let tmp = tempfile::tempdir().expect("a temporary directory");
        ok(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(tmp.path()));
        let inside = tmp.path().join("usr/sbin/nat-pmp-agent");
        let outside = static_binary(if arch == "amd64" { "x86_64" } else { "aarch64" });
        assert!(
            fs::read(&inside).expect("packaged binary") == fs::read(&outside).expect("binary"),
            "{arch}: the packaged binary differs from {}",
            outside.display()
        );
        assert_eq!(elf_facts(&inside).0, machine);

        let control = tmp.path().join("DEBIAN");
        ok(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&control));
        let conffiles = fs::read_to_string(control.join("conffiles")).unwrap_or_default();
        assert_eq!(conffiles.trim(), CONFFILE, "{arch}: conffiles");
        for script in ["preinst", "postinst", "prerm", "postrm"] {
            let Ok(text) = fs::read_to_string(control.join(script)) else {
                continue;
            };
            for bad in [
                "/sys/fs/bpf",
                "bpffs",
                "detach",
                "deb-systemd-invoke start",
                "--now",
            ] {
                assert!(
                    !text.contains(bad),
                    "{arch} {script} contains {bad:?}:\n{text}"
                );
            }
            assert!(
                !text.contains("systemctl start") && !text.contains("systemctl enable"),
                "{arch} {script} starts or enables the unit:\n{text}"
            );
            // Enabling happens only to restore a state the admin chose
            // (deb-systemd-helper was-enabled), never by default.
            for line in text
                .lines()
                .filter(|l| l.contains("deb-systemd-helper enable"))
            {
                assert!(
                    text.contains("was-enabled"),
                    "{arch} {script}: enables the unit unconditionally: {line}"
                );
            }
        }
    }
}

/// Every path under these roots whose name mentions the package: what an
/// install may add and a purge must remove. (man-db's trigger may keep a
/// formatted page under /var/cache/man: man-db's cache, not the package's.)
const WATCHED: &[&str] = &[
    "/etc",
    "/usr/sbin",
    "/usr/lib/systemd",
    "/usr/share/nat-pmp-agent",
    "/usr/share/doc",
    "/usr/share/man/man8",
    "/usr/share/bash-completion",
    "/usr/share/zsh",
    "/usr/share/fish",
    "/var/lib/systemd",
    "/var/lib/dpkg/info",
];

fn ours_on_disk() -> BTreeSet<PathBuf> {
    fn walk(dir: &Path, found: &mut BTreeSet<PathBuf>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.to_string_lossy().contains(PACKAGE) {
                found.insert(path.clone());
            }
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&path, found);
            }
        }
    }
    let mut found = BTreeSet::new();
    for root in WATCHED {
        walk(Path::new(root), &mut found);
    }
    found
}

fn installed() -> bool {
    let out = run(Command::new("dpkg-query").args(["-W", "-f=${db:Status-Status}", PACKAGE]));
    out.status.success() && String::from_utf8_lossy(&out.stdout).trim() != "not-installed"
}

/// `dpkg ARGS`, retried while another dpkg or apt holds the lock (other
/// work on this machine may install packages), for at most two minutes.
fn dpkg(args: &[&str]) -> Output {
    let end = Instant::now() + Duration::from_mins(2);
    loop {
        let out = run(Command::new("dpkg")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive"));
        let locked = String::from_utf8_lossy(&out.stderr).contains("lock");
        if out.status.success() || !locked || Instant::now() > end {
            return out;
        }
        thread::sleep(Duration::from_secs(2));
    }
}

/// Purges the package on drop, so a failed assertion leaves nothing
/// installed.
struct Purge;

impl Drop for Purge {
    fn drop(&mut self) {
        if installed() {
            let out = dpkg(&["--purge", PACKAGE]);
            if !out.status.success() {
                eprintln!(
                    "dist: could not purge {PACKAGE}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
}

/// Is a process running the installed binary?
fn installed_binary_runs() -> bool {
    fs::read_dir("/proc").is_ok_and(|d| {
        d.flatten().any(|e| {
            fs::read_link(e.path().join("exe"))
                .is_ok_and(|exe| exe == Path::new("/usr/sbin/nat-pmp-agent"))
        })
    })
}

#[test]
fn the_amd64_package_installs_runs_verifies_stays_disabled_and_purges_clean() {
    require_root();
    let deb = deb("amd64");
    assert!(
        !installed(),
        "{PACKAGE} is already installed on this machine: this test installs and purges it \
         itself; `dpkg --purge {PACKAGE}` first if it is a leftover"
    );
    let before = ours_on_disk();
    assert!(
        before.is_empty(),
        "files of an earlier install are left on this machine: {before:?}"
    );
    let _purge = Purge;
    let out = dpkg(&["-i", deb.to_str().expect("UTF-8 path")]);
    assert!(
        out.status.success(),
        "dpkg -i {}: {}{}",
        deb.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(installed(), "dpkg says {PACKAGE} is not installed");
    let listed: BTreeSet<PathBuf> = ok(Command::new("dpkg").args(["-L", PACKAGE]))
        .lines()
        .map(PathBuf::from)
        .filter(|p| p.is_file())
        .collect();
    for f in CONTENTS {
        assert!(
            listed.contains(&Path::new("/").join(f)),
            "dpkg -L lacks /{f}: {listed:?}"
        );
    }

    let v = ok(Command::new("/usr/sbin/nat-pmp-agent").arg("--version"));
    assert_eq!(v.trim(), format!("nat-pmp-agent {VERSION}"));
    ok(Command::new("/usr/sbin/nat-pmp-agent").args(["status", "--help"]));
    ok(Command::new("bash").args([
        "-c",
        ". /usr/share/bash-completion/completions/nat-pmp-agent && complete -p nat-pmp-agent",
    ]));
    let verify = run(Command::new("systemd-analyze").args(["verify", UNIT]));
    assert!(
        verify.status.success() && verify.stderr.is_empty(),
        "systemd-analyze verify {UNIT}: {}",
        String::from_utf8_lossy(&verify.stderr)
    );
    let unit = fs::read_to_string(UNIT).expect("the unit");
    assert!(
        unit.contains(
            "ExecStart=/usr/sbin/nat-pmp-agent --config /etc/nat-pmp-agent/nat-pmp-agent.toml"
        ),
        "the unit runs the packaged binary with the packaged config"
    );

    // Installed disabled, never started.
    let enabled =
        run(Command::new("systemctl").args(["--root=/", "is-enabled", "nat-pmp-agent.service"]));
    assert_eq!(
        String::from_utf8_lossy(&enabled.stdout).trim(),
        "disabled",
        "systemctl is-enabled: {enabled:?}"
    );
    for wants in [
        "/etc/systemd/system/multi-user.target.wants/nat-pmp-agent.service",
        "/usr/lib/systemd/system/multi-user.target.wants/nat-pmp-agent.service",
    ] {
        assert!(!Path::new(wants).exists(), "{wants} enables the unit");
    }
    assert!(!installed_binary_runs(), "the package started the agent");
    let conffiles = ok(Command::new("dpkg-query").args(["-W", "-f=${Conffiles}", PACKAGE]));
    assert!(conffiles.contains(CONFFILE), "conffiles: {conffiles}");

    let out = dpkg(&["--purge", PACKAGE]);
    assert!(
        out.status.success(),
        "dpkg --purge: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !installed(),
        "{PACKAGE} is still known to dpkg after --purge"
    );
    let left: Vec<_> = listed.iter().filter(|p| p.exists()).collect();
    assert!(left.is_empty(), "purge left the package's files: {left:?}");
    let after = ours_on_disk();
    assert_eq!(after, before, "purge left files behind");
}
