//! The live view as a person sees it: the real agent, attached to a veth in
//! a namespace, runs in a pseudo-terminal (portable-pty) of 80x24 or
//! 120x40 while requests arrive from the peer namespace; its screen is read
//! through a terminal emulator (vt100). No line may be wider than the
//! terminal (the emulator would have wrapped it), the opcode-0 row must show
//! exactly the count sent, a resize must redraw to the new size, and `q`,
//! SIGTERM and SIGINT must each exit 0 with the final report and nothing
//! left attached. `--output table` on a terminal stays the plain table.

use std::{
    io::{Read as _, Write as _},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use nat_pmp_ebpf_common::Class;
use portable_pty::{native_pty_system, Child, CommandBuilder, MasterPty, PtySize};

use crate::support::{
    agent::AGENT,
    require_root,
    wan::{bind, send, WanLink, INTERNET_ADDR, ROUTER_ADDR},
};

/// The terminal as the emulator sees it, and every byte the agent wrote.
struct Term {
    parser: vt100::Parser,
    raw: Vec<u8>,
}

/// The agent in a pseudo-terminal; killed (by its PID) on drop if it still
/// runs.
struct PtyAgent {
    master: Box<dyn MasterPty + Send>,
    writer: Box<dyn std::io::Write + Send>,
    child: Box<dyn Child + Send + Sync>,
    term: Arc<Mutex<Term>>,
}

fn size(rows: u16, cols: u16) -> PtySize {
    PtySize {
        rows,
        cols,
        pixel_width: 0,
        pixel_height: 0,
    }
}

impl PtyAgent {
    /// `nat-pmp-agent --iface wan0 --interval 0.2 ARGS` in the router's
    /// namespace, on a terminal of `rows` x `cols` (`TERM=xterm-256color`).
    fn start(link: &WanLink, rows: u16, cols: u16, args: &[&str]) -> PtyAgent {
        let pair = native_pty_system()
            .openpty(size(rows, cols))
            .unwrap_or_else(|e| panic!("opening a pseudo-terminal: {e:#}"));
        let mut cmd = CommandBuilder::new("ip");
        cmd.args(["netns", "exec", &link.router.name, AGENT]);
        cmd.args(["--iface", "wan0", "--interval", "0.2"]);
        cmd.args(args);
        cmd.env("TERM", "xterm-256color");
        let child = pair
            .slave
            .spawn_command(cmd)
            .unwrap_or_else(|e| panic!("starting the agent in the pseudo-terminal: {e:#}"));
        drop(pair.slave);
        let mut reader = pair.master.try_clone_reader().expect("the pty's reader");
        let writer = pair.master.take_writer().expect("the pty's writer");
        let term = Arc::new(Mutex::new(Term {
            parser: vt100::Parser::new(rows, cols, 0),
            raw: Vec::new(),
        }));
        let t = Arc::clone(&term);
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            // Ends at EOF, or with EIO once the agent (the last holder of the
            // terminal's other side) has exited.
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let mut t = t.lock().unwrap();
                t.parser.process(&buf[..n]);
                t.raw.extend_from_slice(&buf[..n]);
            }
        });
        PtyAgent {
            master: pair.master,
            writer,
            child,
            term,
        }
    }

    /// The screen's rows, and whether each was wrapped (a line that was
    /// wider than the terminal).
    fn screen(&self) -> (Vec<String>, Vec<bool>) {
        let t = self.term.lock().unwrap();
        let s = t.parser.screen();
        let (rows, cols) = s.size();
        let text = s.rows(0, cols).collect();
        let wrapped = (0..rows).map(|r| s.row_wrapped(r)).collect();
        (text, wrapped)
    }

    fn raw(&self) -> String {
        String::from_utf8_lossy(&self.term.lock().unwrap().raw).into_owned()
    }

    /// Waits up to `limit` for a screen that `ok` accepts; panics with the
    /// last screen otherwise.
    fn wait_for(&self, what: &str, limit: Duration, ok: impl Fn(&[String]) -> bool) -> Vec<String> {
        let end = Instant::now() + limit;
        loop {
            let (rows, _) = self.screen();
            if ok(&rows) {
                return rows;
            }
            assert!(
                Instant::now() <= end,
                "{what}: not on the screen within {limit:?}; the screen:\n{}\nthe agent wrote:\n{}",
                rows.join("\n"),
                self.raw()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The terminal changes size, as a window does.
    fn resize(&self, rows: u16, cols: u16) {
        let mut t = self.term.lock().unwrap();
        self.master
            .resize(size(rows, cols))
            .expect("resizing the pty");
        t.parser.screen_mut().set_size(rows, cols);
    }

    /// Whether the terminal shows the alternate screen (the live view's).
    fn alternate(&self) -> bool {
        self.term.lock().unwrap().parser.screen().alternate_screen()
    }

    fn press(&mut self, key: &[u8]) {
        self.writer.write_all(key).expect("typing into the pty");
        self.writer.flush().expect("typing into the pty");
    }

    fn signal(&self, sig: i32) {
        let pid = self.child.process_id().expect("the agent's PID");
        let pid = i32::try_from(pid).expect("pid fits i32");
        // SAFETY: kill has no memory preconditions; the PID is our child's
        // (`ip netns exec` execs the agent), not yet reaped.
        unsafe { libc::kill(pid, sig) };
    }

    /// Waits for the agent to exit; whether it exited 0.
    fn exit(&mut self) -> bool {
        let end = Instant::now() + Duration::from_secs(15);
        while Instant::now() < end {
            if let Some(st) = self.child.try_wait().expect("waiting for the agent") {
                // Let the reader take in the last bytes.
                std::thread::sleep(Duration::from_millis(300));
                return st.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the agent did not exit; it wrote:\n{}", self.raw());
    }
}

impl Drop for PtyAgent {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.signal(libc::SIGTERM);
            std::thread::sleep(Duration::from_secs(2));
            if matches!(self.child.try_wait(), Ok(None)) {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
    }
}

/// The packets column of the row labelled `label` (the short label from
/// the class table), if the row is on the screen.
fn packets(rows: &[String], label: &str) -> Option<u64> {
    rows.iter().find_map(|r| {
        r.strip_prefix(label)?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}

/// `n` opcode-0 requests from the internet side to the router's WAN; the
/// socket they left from.
fn send_op0(link: &WanLink, n: u64) -> std::net::UdpSocket {
    let sock = bind(&link.internet, INTERNET_ADDR, 0);
    send(&sock, ROUTER_ADDR, Class::NatpmpExternalAddressRequest, n);
    sock
}

/// No row of the screen was wrapped.
fn assert_fits(agent: &PtyAgent, cols: u16) {
    let (rows, wrapped) = agent.screen();
    for (i, (r, w)) in rows.iter().zip(&wrapped).enumerate() {
        assert!(
            !w && r.chars().count() <= usize::from(cols),
            "row {i} is wider than the terminal ({cols}):\n{}",
            rows.join("\n")
        );
    }
}

/// The live view after the agent attached: the header says where and how.
fn wait_attached(agent: &PtyAgent) -> Vec<String> {
    agent.wait_for(
        "the header of an attached filter",
        Duration::from_secs(30),
        |rows| {
            rows.first().is_some_and(|h| {
                h.contains("wan0") && h.contains("monitor") && h.contains("attached")
            })
        },
    )
}

/// The plain final report after the live view gave the terminal back: its
/// opcode-0 row's packets.
fn final_op0(raw: &str) -> u64 {
    let after = raw.rsplit_once("\x1b[?1049l").map_or_else(
        || panic!("the live view never left the alternate screen:\n{raw}"),
        |(_, a)| a,
    );
    assert!(
        after.contains("(final)"),
        "no final report after the live view:\n{after}"
    );
    let name = Class::NatpmpExternalAddressRequest.name();
    let row = after
        .lines()
        .find_map(|l| Some(l.split_once(name)?.1).filter(|r| r.trim_start().starts_with("v0 op 0")))
        .unwrap_or_else(|| panic!("no opcode-0 row in the final report:\n{after}"));
    // `v0 op 0`, then the packets (not the drop log's lines, which name the
    // class too).
    row.split_whitespace()
        .nth(3)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no packets cell in {row:?}"))
}

/// The agent exited 0 after `how`, gave the terminal back, printed the
/// plain final report with every request sent, and left nothing attached.
fn assert_ended_cleanly(agent: &mut PtyAgent, link: &WanLink, sent: u64, how: &str) {
    assert!(
        agent.exit(),
        "{how} must exit 0; the agent wrote:\n{}",
        agent.raw()
    );
    let alternate = agent.alternate();
    assert!(
        !alternate,
        "{how} left the terminal on the alternate screen"
    );
    assert_eq!(final_op0(&agent.raw()), sent, "{how}: the final report");
    assert!(
        !link.router.xdp_attached("wan0"),
        "{how} left the filter attached"
    );
}

/// One run: a terminal of `rows` x `cols`, `sent` opcode-0 requests, a
/// resize to `(rows2, cols2)`, then `q`.
fn live_view_at(rows: u16, cols: u16, (rows2, cols2): (u16, u16), sent: u64) {
    require_root();
    let link = WanLink::new("tui");
    let mut agent = PtyAgent::start(&link, rows, cols, &[]);
    wait_attached(&agent);
    assert!(agent.alternate());
    let sock = send_op0(&link, sent);
    send(&sock, ROUTER_ADDR, Class::NatpmpMapUdpRequest, 2);
    let screen = agent.wait_for(
        "the opcode-0 row with every request",
        Duration::from_secs(15),
        |r| packets(r, "op0 req") == Some(sent) && packets(r, "total") == Some(sent + 2),
    );
    assert_eq!(packets(&screen, "map udp req"), Some(2));
    assert_fits(&agent, cols);
    // The source that sent them, with its classes in short labels.
    assert!(
        screen
            .iter()
            .any(|r| r.starts_with(INTERNET_ADDR) && r.contains("op0 req,map udp req")),
        "no source row:\n{}",
        screen.join("\n")
    );
    // Sorted by rate then packets: the busier class first.
    let at = |l: &str| screen.iter().position(|r| r.starts_with(l)).unwrap();
    assert!(at("op0 req") < at("map udp req"));
    // Wider columns where there is room (share and bytes).
    assert_eq!(screen.iter().any(|r| r.contains("bytes")), cols >= 110);

    agent.resize(rows2, cols2);
    let wide = cols2 >= 110;
    let screen = agent.wait_for("a redraw at the new size", Duration::from_secs(10), |r| {
        r.len() == usize::from(rows2)
            && packets(r, "op0 req") == Some(sent)
            && r.iter()
                .any(|l| l.contains("class") && l.contains("bytes") == wide)
            && r.last().is_some_and(|l| l.contains("q quit"))
    });
    assert_fits(&agent, cols2);
    assert!(screen[0].contains("wan0"));

    agent.press(b"q");
    assert_ended_cleanly(&mut agent, &link, sent, "`q`");
}

#[test]
fn at_80x24_every_row_fits_counts_are_exact_and_q_detaches() {
    live_view_at(24, 80, (40, 120), 37);
}

#[test]
fn at_120x40_every_row_fits_counts_are_exact_and_q_detaches() {
    live_view_at(40, 120, (24, 80), 53);
}

#[test]
fn sigterm_and_sigint_end_the_live_view_like_q() {
    require_root();
    let link = WanLink::new("tui-sig");
    for (sig, sent) in [(libc::SIGTERM, 5), (libc::SIGINT, 3)] {
        let mut agent = PtyAgent::start(&link, 24, 80, &[]);
        wait_attached(&agent);
        send_op0(&link, sent);
        agent.wait_for("the opcode-0 row", Duration::from_secs(15), |r| {
            packets(r, "op0 req").is_some_and(|n| n > 0)
        });
        agent.signal(sig);
        assert_ended_cleanly(&mut agent, &link, sent, &format!("signal {sig}"));
    }
}

#[test]
fn keys_pause_sort_and_help_and_change_no_mode() {
    require_root();
    let link = WanLink::new("tui-keys");
    let mut agent = PtyAgent::start(&link, 24, 80, &["--drop"]);
    agent.wait_for("the header", Duration::from_secs(30), |r| {
        r.first()
            .is_some_and(|h| h.contains("drop") && h.contains("attached"))
    });
    agent.press(b"s");
    agent.wait_for("sort by packets", Duration::from_secs(5), |r| {
        r[0].contains("sort packets")
    });
    agent.press(b"p");
    agent.wait_for("paused", Duration::from_secs(5), |r| {
        r[0].contains("PAUSED")
    });
    // Counting goes on while the display is paused.
    send_op0(&link, 4);
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(
        packets(&agent.screen().0, "op0 req"),
        None,
        "a paused display changed"
    );
    agent.press(b"p");
    agent.wait_for(
        "the requests sent while paused",
        Duration::from_secs(10),
        |r| packets(r, "op0 req") == Some(4),
    );
    // The drop log's lines went to stderr, which the view holds: the last
    // one is the line above the keys, and nothing scribbled over the view.
    let op0 = Class::NatpmpExternalAddressRequest.name();
    agent.wait_for("the drop log's last line", Duration::from_secs(10), |r| {
        r.len() >= 2 && r[r.len() - 2].contains("dropped natpmp_external")
    });
    agent.press(b"?");
    agent.wait_for("the keys", Duration::from_secs(5), |r| {
        r.iter().any(|l| l.contains("No key changes the filter"))
    });
    // Keys that mean something elsewhere change nothing here.
    for k in [b"x", b"m", b"d", b"0"] {
        agent.press(k);
    }
    std::thread::sleep(Duration::from_millis(500));
    assert!(agent.screen().0[0].contains("drop"), "the mode changed");
    assert_fits(&agent, 80);
    agent.press(b"q");
    assert_ended_cleanly(&mut agent, &link, 4, "`q`");
    // What stderr got meanwhile (the drop log) was held, shown above the
    // keys (the screen checked above), and written out on exit.
    let after = agent.raw();
    let after = after.rsplit_once("\x1b[?1049l").map_or("", |(_, a)| a);
    assert!(
        after.contains(&format!("dropped {op0} from {INTERNET_ADDR}")),
        "the held drop log was not written out:\n{after}"
    );
}

#[test]
fn output_table_on_a_terminal_stays_the_plain_table() {
    require_root();
    let link = WanLink::new("tui-plain");
    let mut agent = PtyAgent::start(&link, 24, 200, &["--output", "table", "--duration", "1"]);
    assert!(agent.exit(), "{}", agent.raw());
    let raw = agent.raw();
    assert!(
        !raw.contains("\x1b[?1049h"),
        "--output table took the alternate screen"
    );
    assert!(
        raw.contains("natpmp_external_address_request") && raw.contains("(final)"),
        "{raw}"
    );
}
