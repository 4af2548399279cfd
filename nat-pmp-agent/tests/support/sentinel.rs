//! Sentinel datagrams: synchronisation instead of sleeps and quiet windows.
//!
//! A sentinel goes from the internet host to the router's discard port
//! (RFC 863, [`SENTINEL_PORT`]: neither NAT-PMP nor PCP, so no class counts
//! it and no filter drops it). Frames cross a veth in order (one queue), and
//! the router's stack delivers them in that order: once a sentinel has
//! reached its socket in the router, XDP on the WAN has seen every frame sent
//! before it, and every datagram it passed is already queued on its socket
//! ([`Sentinel::sync`], then [`queued`]). With a capture running, a sentinel
//! it has printed says it has printed everything before it, and that it was
//! really capturing, which a capture tool's start-up message does not
//! ([`Sentinel::sync_seen`]).

use std::{
    net::{Ipv4Addr, UdpSocket},
    time::{Duration, Instant},
};

use super::netns::NetNs;

/// The discard port (RFC 863), where sentinels go.
pub const SENTINEL_PORT: u16 = 9;

/// How long a sync may take before the test fails.
const SYNC_LIMIT: Duration = Duration::from_secs(20);

/// Sentinels from the internet namespace to `router_addr`:[`SENTINEL_PORT`].
pub struct Sentinel {
    tx: UdpSocket,
    rx: UdpSocket,
    /// Syncs so far: sync `n` sends payloads of `n` bytes, so its datagrams
    /// (`udp.length` = 8 + n) cannot be confused with the backlog of an
    /// earlier sync that a capture may still be printing.
    syncs: std::cell::Cell<usize>,
}

impl Sentinel {
    /// Binds the receiver in `router` (on `router_addr`) and the sender in
    /// `internet`.
    pub fn new(router: &NetNs, router_addr: &str, internet: &NetNs) -> Sentinel {
        let router_ip: Ipv4Addr = router_addr.parse().expect("an IPv4 address");
        let rx = router
            .enter(|| UdpSocket::bind((router_ip, SENTINEL_PORT)))
            .expect("entering the router's namespace")
            .expect("binding the sentinel receiver");
        rx.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("setting a read timeout");
        let tx = internet
            .enter(|| UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)))
            .expect("entering the internet's namespace")
            .expect("binding the sentinel sender");
        tx.connect((router_ip, SENTINEL_PORT))
            .expect("connecting the sentinel sender");
        Sentinel {
            tx,
            rx,
            syncs: std::cell::Cell::new(0),
        }
    }

    /// Sends sentinels until one has reached the router: every frame the
    /// internet host sent before has then been through the WAN's XDP
    /// program, and what it passed is queued on its socket.
    pub fn sync(&self) {
        self.sync_seen(|_| true, String::new);
    }

    /// Sends sentinels until one has reached the router and `seen` (given
    /// this sync's UDP length, as a capture prints `udp.length`) holds;
    /// panics after 20 s with `context()`.
    pub fn sync_seen(&self, seen: impl Fn(&str) -> bool, context: impl Fn() -> String) {
        let n = self.syncs.get() + 1;
        self.syncs.set(n);
        let payload = vec![b's'; n];
        let udp_length = (8 + n).to_string();
        let mut arrived = false;
        let end = Instant::now() + SYNC_LIMIT;
        let mut buf = [0u8; 64];
        // Paced: a flood of sentinels would bury what it is meant to mark.
        while Instant::now() < end {
            self.tx.send(&payload).expect("sending a sentinel");
            if self.rx.recv(&mut buf).is_ok() {
                arrived = true;
            }
            if arrived && seen(&udp_length) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "sentinel not seen within {SYNC_LIMIT:?} (reached the router: {arrived}); {}",
            context()
        );
    }
}

/// The datagrams queued on `sock` now, read without waiting (after a
/// [`Sentinel::sync`]: everything that was let through).
pub fn queued(sock: &UdpSocket) -> u64 {
    sock.set_nonblocking(true).expect("non-blocking");
    let mut buf = [0u8; 2048];
    let mut n = 0;
    loop {
        match sock.recv_from(&mut buf) {
            Ok(_) => n += 1,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("reading the queued datagrams: {e}"),
        }
    }
    sock.set_nonblocking(false).expect("blocking again");
    n
}
