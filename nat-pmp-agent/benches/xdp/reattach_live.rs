//! The re-attach gap as an operator sees it: the WAN interface created
//! again under an agent in drop mode, NAT-PMP requests sent into it from the
//! moment it is up, and the time from the kernel's new-link event until they
//! stop getting through.
//!
//! Two kinds of WAN, each in a namespace of its own, both created by the
//! `TUNSETIFF` ioctl (the kernel sends `RTM_NEWLINK` inside it) and brought
//! up with `SIOCSIFFLAGS` right after (a down tun refuses writes with `EIO`):
//! - `tun0`, a tun device (raw IP, as `ppp0` is). Like `ppp0` it has no
//!   native XDP (the kernel answers `EOPNOTSUPP`): skb mode only.
//! - `tap0`, a tap device (Ethernet), whose driver has native XDP: for
//!   native mode (and skb mode, to compare). A veth would not do: its peer
//!   can only be brought up after the pair exists, that needs the RTNL lock,
//!   and the agent's attach call holds it through its RCU grace period, so
//!   no datagram could get in before the call returned.
//!
//! Per round, on a thread inside the namespace: `t0` is taken right before
//! the `TUNSETIFF` ioctl, and numbered UDP-map requests to 198.18.9.1:5351
//! (an address on `lo`) are written into the device as fast as it takes them
//! for [`WINDOW`]. A listener on 198.18.9.1:5351 gets whatever the filter let
//! through. The filter was in force by the return of the write of the first
//! datagram that did not arrive; every later one must not have arrived
//! either (checked, as are the kernel's UDP counters and the agent's own
//! dropped count).

use std::{
    collections::HashMap,
    fs::File,
    io::{ErrorKind, Write as _},
    net::{Ipv4Addr, UdpSocket},
    os::fd::AsRawFd as _,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context as _, Result};
use nat_pmp_ebpf_common::{
    frames::{ethernet_between, ipv4_between, udp, with_ipv4_checksum, V4Frag},
    headers::{ETH_P_IP, IPPROTO_UDP},
    NATPMP_PORT,
};

use crate::{
    agent::Reattached,
    env::netns,
    support::{
        netns::NetNs,
        process::Agent,
        tun::{ifreq, open_tun_file, tunsetiff},
    },
};

/// How long each round sends after `t0`.
const WINDOW: Duration = Duration::from_millis(50);
/// At most this many datagrams per round.
const MAX_SENDS: usize = 100_000;
/// The listener's receive buffer: room for every datagram of a round, so
/// none is lost to a full socket (checked with `UdpRcvbufErrors`).
const RCVBUF: libc::c_int = 64 << 20;
const ROUTER: [u8; 4] = [198, 18, 9, 1];
const PEER: [u8; 4] = [198, 18, 9, 2];
const SPORT: u16 = 41_000;
/// Where the request's lifetime field, which carries the sequence number,
/// starts in the IP packet.
const SEQ_AT: usize = 20 + 8 + 8;
/// The source MAC address of the frames written into the tap.
const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x9a, 0x02];

/// The kind of WAN interface.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Wan {
    Tun,
    Tap,
}

impl Wan {
    pub fn name(self) -> &'static str {
        match self {
            Wan::Tun => "tun",
            Wan::Tap => "tap",
        }
    }

    fn iface(self) -> &'static str {
        match self {
            Wan::Tun => "tun0",
            Wan::Tap => "tap0",
        }
    }

    /// Bytes before the IP packet in what is written.
    fn l2_len(self) -> usize {
        match self {
            Wan::Tun => 0,
            Wan::Tap => 14,
        }
    }
}

/// How a round's in-force time bounds the truth.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Bound {
    /// Datagrams got through, then none did: the filter came into force
    /// between the return of the last write that got through and the
    /// return of the next (the time given).
    Exact,
    /// No datagram got through: the filter was in force by the return of
    /// the first write, maybe earlier.
    AtMost,
    /// Every datagram of the window got through: not in force within it.
    AtLeast,
}

/// One round.
pub struct Round {
    /// `t0` to in force (see [`Bound`]), ms.
    pub in_force_ms: f64,
    pub bound: Bound,
    /// The time between the returns of the two writes that bracket the
    /// in-force point: the measurement's resolution, ms.
    pub resolution_ms: f64,
    /// Datagrams that reached the listener.
    pub passed: usize,
    /// Datagrams written.
    pub sent: usize,
    /// `t0` to `TUNSETIFF` returned, ms.
    pub created_ms: f64,
    /// `t0` to `SIOCSIFFLAGS` (up) returned, ms.
    pub up_ms: f64,
    /// The agent's own report: its event read to the attach call returned.
    pub agent_total_ms: f64,
    /// Of which the attach call.
    pub agent_attach_ms: f64,
}

/// Where the writing thread and the agent run.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Sched {
    /// The writer on CPU 0, the agent on the last CPU: the writer's busy
    /// loop cannot take the agent's CPU.
    Pinned,
    /// Both left to the scheduler.
    Free,
    /// Both left to the scheduler, the agent at real-time priority
    /// (`chrt -f 1`: `SCHED_FIFO`), so that it preempts the writer.
    FreeFifo,
}

/// One WAN kind and XDP mode's rounds.
pub struct Effective {
    pub wan: Wan,
    pub xdp_mode: &'static str,
    pub sched: Sched,
    pub rounds: Vec<Round>,
}

/// Starts the agent on `iface` in `ns`, on CPU `cpu` if given, at
/// real-time priority if `fifo` (`chrt`, `taskset` and `ip netns exec` exec
/// it: the PID is the agent's).
fn start_agent(
    ns: &NetNs,
    agent: &Path,
    iface: &str,
    xdp_mode: &str,
    cpu: Option<usize>,
    fifo: bool,
) -> Result<Agent> {
    let mut argv: Vec<String> = Vec::new();
    if fifo {
        argv.extend(["chrt", "-f", "1"].map(String::from));
    }
    if let Some(c) = cpu {
        argv.extend(["taskset".into(), "-c".into(), c.to_string()]);
    }
    argv.extend(["ip", "netns", "exec", &ns.name].map(String::from));
    Agent::spawn(
        Command::new(&argv[0])
            .args(&argv[1..])
            .arg(agent)
            .args(["--iface", iface, "--drop", "--wait", "--xdp-mode", xdp_mode])
            .args(["--output", "json", "--interval", "0.5"]),
    )
}

/// The agent's totals (packets, dropped), from the first report that counts
/// at least `dropped` dropped packets, or the last one within 5 s.
fn totals(a: &Agent, dropped: u64) -> Result<(u64, u64)> {
    let end = Instant::now() + Duration::from_secs(5);
    let mut last = None;
    while Instant::now() < end {
        let Ok(r) = a.lines.recv_timeout(Duration::from_secs(2)) else {
            continue;
        };
        let t = (
            r["total"]["packets"].as_u64().context("total.packets")?,
            r["total"]["dropped_packets"]
                .as_u64()
                .context("total.dropped_packets")?,
        );
        last = Some(t);
        if t.1 >= dropped {
            break;
        }
    }
    last.context("no report from the agent on stdout")
}

/// Brings `name` up through `ctl`, a socket of its namespace.
fn set_up(ctl: &UdpSocket, name: &str) -> Result<()> {
    let mut ifr = ifreq(name.as_bytes(), 0);
    // SAFETY: SIOCGIFFLAGS reads the name and writes the flags of a
    // struct ifreq; `ifr` is that large and lives across the call.
    let rc = unsafe { libc::ioctl(ctl.as_raw_fd(), libc::SIOCGIFFLAGS, ifr.as_mut_ptr()) };
    if rc != 0 {
        bail!("SIOCGIFFLAGS {name}: {}", std::io::Error::last_os_error());
    }
    let flags = i16::from_ne_bytes([ifr[16], ifr[17]]);
    #[expect(clippy::cast_possible_truncation, reason = "IFF_UP is 1")]
    let up = libc::IFF_UP as i16;
    ifr[16..18].copy_from_slice(&(flags | up).to_ne_bytes());
    // SAFETY: as above; SIOCSIFFLAGS only reads `ifr`.
    let rc = unsafe { libc::ioctl(ctl.as_raw_fd(), libc::SIOCSIFFLAGS, ifr.as_mut_ptr()) };
    if rc != 0 {
        bail!(
            "SIOCSIFFLAGS {name} up: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// The MAC address of `name`, through `ctl`, a socket of its namespace.
fn mac_of(ctl: &UdpSocket, name: &str) -> Result<[u8; 6]> {
    let mut ifr = ifreq(name.as_bytes(), 0);
    // SAFETY: SIOCGIFHWADDR reads the name and writes a struct sockaddr
    // at offset 16 of a struct ifreq; `ifr` is that large.
    let rc = unsafe { libc::ioctl(ctl.as_raw_fd(), libc::SIOCGIFHWADDR, ifr.as_mut_ptr()) };
    if rc != 0 {
        bail!("SIOCGIFHWADDR {name}: {}", std::io::Error::last_os_error());
    }
    // struct sockaddr: the family (2 bytes), then the address.
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&ifr[18..24]);
    Ok(mac)
}

/// The datagram, as written into the WAN: an IPv4/UDP datagram from
/// 198.18.9.2 to 198.18.9.1:5351 carrying a NAT-PMP UDP-map request
/// (version 0, opcode 1, internal and external port 5351), its lifetime
/// field carrying the sequence number; for the tap behind an Ethernet
/// header to `dst`. The UDP checksum is 0 (none, allowed for IPv4).
fn frame(wan: Wan, dst: [u8; 6]) -> Vec<u8> {
    let mut request = [0u8; 12];
    request[1] = 1;
    request[4..6].copy_from_slice(&NATPMP_PORT.to_be_bytes());
    request[6..8].copy_from_slice(&NATPMP_PORT.to_be_bytes());
    let ip = with_ipv4_checksum(ipv4_between(
        PEER,
        ROUTER,
        IPPROTO_UDP,
        V4Frag::default(),
        &[],
        &udp(SPORT, NATPMP_PORT, &request),
    ));
    match wan {
        Wan::Tap => ethernet_between(PEER_MAC, dst, &[], ETH_P_IP, &ip),
        Wan::Tun => ip,
    }
}

/// The calling thread's namespace's UDP counters (`/proc/thread-self/net/snmp`).
fn udp_counters() -> Result<HashMap<String, u64>> {
    let text = std::fs::read_to_string("/proc/thread-self/net/snmp")
        .context("reading /proc/thread-self/net/snmp")?;
    let mut udp = text.lines().filter(|l| l.starts_with("Udp: "));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else {
        bail!("no Udp lines in /proc/thread-self/net/snmp");
    };
    Ok(names
        .split_whitespace()
        .zip(values.split_whitespace())
        .skip(1)
        .filter_map(|(n, v)| Some((n.to_owned(), v.parse().ok()?)))
        .collect())
}

/// The listener on 198.18.9.1:5351, non-blocking, with a receive buffer
/// large enough for a whole round. Call it inside the namespace.
fn listener() -> Result<UdpSocket> {
    let sock = UdpSocket::bind((Ipv4Addr::from(ROUTER), NATPMP_PORT))
        .context("binding 198.18.9.1:5351")?;
    sock.set_nonblocking(true)?;
    let size = RCVBUF;
    // SAFETY: SO_RCVBUFFORCE reads a c_int from the pointer, which points
    // at `size` for the call's duration; root may exceed rmem_max.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&raw const size).cast(),
            libc::socklen_t::try_from(size_of::<libc::c_int>()).unwrap_or(4),
        )
    };
    if rc != 0 {
        bail!("SO_RCVBUFFORCE: {}", std::io::Error::last_os_error());
    }
    Ok(sock)
}

/// The sequence numbers the listener holds, in arrival order.
fn sequences(sock: &UdpSocket) -> Result<Vec<u32>> {
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    loop {
        match sock.recv(&mut buf) {
            Ok(12) if buf[0] == 0 && buf[1] == 1 => {
                got.push(u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]));
            }
            Ok(n) => bail!("the listener got a datagram that is not ours ({n} bytes)"),
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(got),
            Err(e) => return Err(e).context("reading the listener"),
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Creates the `wan` device and brings it up (untimed: the agent's first
/// attach). Closing the file deletes it.
fn create(wan: Wan) -> Result<File> {
    let ctl = UdpSocket::bind(("127.0.0.1", 0)).context("a control socket")?;
    let dev = open_tun_file(true)?;
    tunsetiff(&dev, wan.iface(), wan == Wan::Tap)?;
    set_up(&ctl, wan.iface())?;
    Ok(dev)
}

/// One round, on a thread inside the namespace (on `cpu` if given):
/// creates the device, brings it up, writes, reads the listener. Returns
/// the round (without the agent's numbers) and the device, still open.
fn round(wan: Wan, sock: &UdpSocket, cpu: Option<usize>) -> Result<(Round, File)> {
    if let Some(c) = cpu {
        crate::env::pin_to_cpu(c)?;
    }
    let before = udp_counters()?;
    let ctl = UdpSocket::bind(("127.0.0.1", 0)).context("a control socket")?;
    let dev = open_tun_file(true)?;
    let seq_at = wan.l2_len() + SEQ_AT;
    let mut done: Vec<Instant> = Vec::with_capacity(MAX_SENDS);

    let t0 = Instant::now();
    tunsetiff(&dev, wan.iface(), wan == Wan::Tap)?;
    let created = Instant::now();
    set_up(&ctl, wan.iface())?;
    let up = Instant::now();
    let mut buf = frame(
        wan,
        if wan == Wan::Tap {
            mac_of(&ctl, wan.iface())?
        } else {
            [0; 6]
        },
    );
    for seq in 0..MAX_SENDS {
        let s = u32::try_from(seq).unwrap_or(u32::MAX);
        buf[seq_at..seq_at + 4].copy_from_slice(&s.to_be_bytes());
        let n = (&dev).write(&buf);
        let t = Instant::now();
        let n = n.with_context(|| {
            format!(
                "writing datagram {seq} into {} {:.3} ms after t0",
                wan.iface(),
                ms(t - t0)
            )
        })?;
        ensure!(n == buf.len(), "a short write ({n} bytes)");
        done.push(t);
        if t - t0 >= WINDOW {
            break;
        }
    }
    // Writes are processed (XDP, IP, UDP) before they return; a moment
    // more for anything still queued.
    std::thread::sleep(Duration::from_millis(20));
    let mut got = sequences(sock)?;
    let after = udp_counters()?;

    let delta = |k: &str| after.get(k).copied().unwrap_or(0) - before.get(k).copied().unwrap_or(0);
    ensure!(
        delta("RcvbufErrors") == 0 && delta("InErrors") == 0,
        "the listener lost datagrams (UdpRcvbufErrors +{}, UdpInErrors +{}): the round says nothing",
        delta("RcvbufErrors"),
        delta("InErrors")
    );
    ensure!(
        delta("InDatagrams") == u64::try_from(got.len())?,
        "the kernel delivered {} UDP datagrams, the listener read {}",
        delta("InDatagrams"),
        got.len()
    );
    got.sort_unstable();
    for (i, &s) in got.iter().enumerate() {
        if usize::try_from(s)? != i {
            bail!(
                "{}: datagram {s} got through but datagram {i} did not ({} of {} got through, \
                 the first: {:?}): the filter is not in force from one datagram on",
                wan.iface(),
                got.len(),
                done.len(),
                &got[..got.len().min(20)]
            );
        }
    }
    let passed = got.len();
    let sent = done.len();
    let (in_force, bound, resolution) = if passed == sent {
        (done[sent - 1] - t0, Bound::AtLeast, Duration::ZERO)
    } else if passed == 0 {
        (done[0] - t0, Bound::AtMost, done[0] - up)
    } else {
        (
            done[passed] - t0,
            Bound::Exact,
            done[passed] - done[passed - 1],
        )
    };
    Ok((
        Round {
            in_force_ms: ms(in_force),
            bound,
            resolution_ms: ms(resolution),
            passed,
            sent,
            created_ms: ms(created - t0),
            up_ms: ms(up - t0),
            agent_total_ms: f64::NAN,
            agent_attach_ms: f64::NAN,
        },
        dev,
    ))
}

/// The router's namespace: 198.18.9.1 on `lo` (a device that is merely up
/// delivers to it without addresses of its own), no reverse-path filter.
fn router(wan: Wan) -> Result<NetNs> {
    let ns = netns(match wan {
        Wan::Tun => "rlt",
        Wan::Tap => "rlp",
    })?;
    ns.ip(&["addr", "add", "198.18.9.1/32", "dev", "lo"])?;
    for conf in ["all", "default"] {
        let key = format!("net.ipv4.conf.{conf}.rp_filter");
        ns.exec(&["sysctl", "-q", "-w", &format!("{key}=0")])?;
        let v = ns.exec(&["sysctl", "-n", &key])?;
        ensure!(v.trim() == "0", "{key} is {} in {}", v.trim(), ns.name);
    }
    Ok(ns)
}

/// Creates the `wan` device `rounds` times under an agent in drop mode,
/// writer and agent placed as `sched` says (with one CPU, never pinned).
pub fn measure(
    agent: &Path,
    wan: Wan,
    xdp_mode: &'static str,
    rounds: usize,
    sched: Sched,
) -> Result<Effective> {
    let iface = wan.iface();
    let sched = if sched == Sched::Pinned && crate::env::cpus() < 2 {
        Sched::Free
    } else {
        sched
    };
    let (writer_cpu, agent_cpu) = if sched == Sched::Pinned {
        (Some(0), Some(crate::env::cpus() - 1))
    } else {
        (None, None)
    };
    let ns = router(wan)?;
    let sock = ns.enter(listener)??;
    let a = start_agent(
        &ns,
        agent,
        iface,
        xdp_mode,
        agent_cpu,
        sched == Sched::FreeFifo,
    )?;
    a.wait_line(
        &format!("that it waits for {iface}"),
        Duration::from_secs(10),
        |l| l.contains("waiting for the interface").then_some(()),
    )?;
    // The first attach (under --wait) is not a re-attach: untimed.
    let mut dev = Some(ns.enter(|| create(wan))??);
    let attached = format!("{iface}: attached (ifindex");
    a.wait_line(&format!("{iface} attached"), Duration::from_secs(5), |l| {
        l.contains(&attached).then_some(())
    })?;
    let (_, prog) = ns.xdp_prog(iface)?;
    let mut done = Vec::new();
    for _ in 0..rounds {
        drop(dev.take());
        a.wait_line(&format!("{iface} gone"), Duration::from_secs(5), |l| {
            l.contains("the interface is gone").then_some(())
        })?;
        std::thread::sleep(Duration::from_millis(200));
        a.discard_said();
        let (mut r, d) = ns.enter(|| round(wan, &sock, writer_cpu))??;
        dev = Some(d);
        let said = a.wait_line(
            &format!("that it attached to {iface} again"),
            Duration::from_secs(5),
            crate::agent::reattached,
        )?;
        // Without a gap: its periodic check re-attached before it read the
        // event; the traffic still says when the filter was in force.
        let (total, attach) = match said {
            Reattached::Gap(total, attach) => (total, attach),
            Reattached::ByCheck => (f64::NAN, f64::NAN),
        };
        r.agent_total_ms = total;
        r.agent_attach_ms = attach;
        eprintln!(
            "bench: {} {xdp_mode}{}: in force {}{:.3} ms after t0 ({} of {} datagrams through, \
             resolution {:.4} ms); created {:.3} ms, up {:.3} ms; agent: {total:.2} ms after \
             the event, {attach:.2} ms attaching",
            wan.name(),
            match sched {
                Sched::Pinned => " pinned",
                Sched::Free => "",
                Sched::FreeFifo => " agent SCHED_FIFO",
            },
            match r.bound {
                Bound::Exact => "",
                Bound::AtMost => "<= ",
                Bound::AtLeast => "> ",
            },
            r.in_force_ms,
            r.passed,
            r.sent,
            r.resolution_ms,
            r.created_ms,
            r.up_ms,
        );
        done.push(r);
    }
    drop(dev);
    // Every datagram that did not get through, the program counted and
    // dropped (and it saw no other).
    let want: u64 = done
        .iter()
        .map(|r| u64::try_from(r.sent - r.passed).unwrap_or(u64::MAX))
        .sum();
    let (packets, dropped) = totals(&a, want)?;
    ensure!(
        packets == want && dropped == want,
        "{iface} ({prog}): the agent counted {packets} packets, {dropped} dropped; {want} were \
         written and did not get through"
    );
    Ok(Effective {
        wan,
        xdp_mode,
        sched,
        rounds: done,
    })
}

/// Whether the kernel refuses native XDP on a tun (as on `ppp0`): the
/// agent, asked for native mode, must say the driver has no native XDP.
pub fn tun_native_refused(agent: &Path) -> Result<bool> {
    let ns = netns("rln")?;
    let a = start_agent(&ns, agent, "tun0", "native", None, false)?;
    a.wait_line("that it waits for tun0", Duration::from_secs(10), |l| {
        l.contains("waiting for the interface").then_some(())
    })?;
    let dev = ns.enter(|| create(Wan::Tun))??;
    let refused = a.wait_line(
        "whether it attached to tun0 in native mode",
        Duration::from_secs(5),
        |l| {
            if l.contains("tun0: attached (ifindex") {
                Some(false)
            } else if l.contains("has no native XDP support") {
                Some(true)
            } else {
                None
            }
        },
    )?;
    drop(dev);
    Ok(refused)
}
