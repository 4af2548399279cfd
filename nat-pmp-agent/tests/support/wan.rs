//! The tests' network: a router and an internet host in namespaces of their
//! own, joined by a veth "WAN" ([`WanLink`]); UDP sockets on either side
//! ([`bind`], [`send`], [`drain`]) and a tun WAN ([`open_tun`]). Every call
//! panics with what went wrong: these are test steps.

use std::{fs::File, net::UdpSocket, time::Duration};

use super::{
    netns::{veth, NetNs, VethEnd},
    sentinel::{queued, Sentinel},
    tun::{open_tun_file, tunsetiff},
};

/// The router's WAN address (on `wan0`) and the internet host's (`inet0`).
pub const ROUTER_ADDR: &str = "198.18.0.1";
pub const INTERNET_ADDR: &str = "198.18.0.2";
/// The second WAN of [`WanLink::add_second_wan`]: `wan1` and `inet1`.
pub const ROUTER_ADDR_1: &str = "198.19.0.1";
pub const INTERNET_ADDR_1: &str = "198.19.0.2";

/// Two namespaces joined by a veth pair: a router with its WAN interface
/// `wan0` ([`ROUTER_ADDR`]/24) and an internet host on `inet0`
/// ([`INTERNET_ADDR`]/24).
pub struct WanLink {
    pub router: NetNs,
    pub internet: NetNs,
}

impl WanLink {
    pub fn new(tag: &str) -> Self {
        let link = WanLink {
            router: NetNs::new(&format!("{tag}-r")).expect("creating the router's namespace"),
            internet: NetNs::new(&format!("{tag}-i")).expect("creating the internet's namespace"),
        };
        link.add_wan0();
        link
    }

    /// Creates the veth pair `wan0`/`inet0` (again, after a test deleted
    /// it: a reconnect), addressed and up.
    pub fn add_wan0(&self) {
        self.add_pair(("wan0", ROUTER_ADDR), ("inet0", INTERNET_ADDR));
    }

    /// A second veth pair: `wan1` ([`ROUTER_ADDR_1`]) in the router,
    /// `inet1` ([`INTERNET_ADDR_1`]) outside.
    pub fn add_second_wan(&self) {
        self.add_pair(("wan1", ROUTER_ADDR_1), ("inet1", INTERNET_ADDR_1));
    }

    /// A veth pair between the two namespaces: `(device, address)` on the
    /// router side and on the internet side, /24, both up.
    pub fn add_pair(&self, (r_dev, r_addr): (&str, &str), (i_dev, i_addr): (&str, &str)) {
        veth_pair(
            (&self.router, r_dev, r_addr),
            (&self.internet, i_dev, i_addr),
        );
    }
}

/// A veth pair: `(namespace, device, address)` of each end (both may be in
/// one namespace), /24, both up.
pub fn veth_pair(
    (a_ns, a_dev, a_addr): (&NetNs, &str, &str),
    (b_ns, b_dev, b_addr): (&NetNs, &str, &str),
) {
    let a = VethEnd {
        ns: a_ns,
        dev: a_dev,
        addr: a_addr,
        mac: None,
    };
    let b = VethEnd {
        ns: b_ns,
        dev: b_dev,
        addr: b_addr,
        mac: None,
    };
    veth(&a, &b).unwrap_or_else(|e| panic!("creating {a_dev}/{b_dev}: {e:#}"));
}

impl WanLink {
    /// The datagrams `sock` (in the router) has received of everything the
    /// internet host sent so far: a sentinel sync, then what is queued. No
    /// quiet window to guess: a datagram still on its way cannot be missed.
    pub fn received(&self, sock: &UdpSocket) -> u64 {
        Sentinel::new(&self.router, ROUTER_ADDR, &self.internet).sync();
        queued(sock)
    }
}

impl NetNs {
    /// The names of the programs on `dev`'s tcx egress, in order (the
    /// kernel's `BPF_PROG_QUERY`; Debian's bpftool 7.1 predates tcx).
    pub fn tcx_egress(&self, dev: &str) -> Vec<String> {
        use aya::programs::{tc::TcAttachType, SchedClassifier};
        let (_, progs) = self
            .enter(|| SchedClassifier::query_tcx(dev, TcAttachType::Egress))
            .expect("entering the namespace")
            .unwrap_or_else(|e| panic!("querying {dev}'s tcx egress: {e}"));
        progs
            .iter()
            .map(|p| p.name_as_str().unwrap_or("?").to_owned())
            .collect()
    }

    /// Whether an XDP program is attached to `dev` (`ip link show`).
    pub fn xdp_attached(&self, dev: &str) -> bool {
        self.ip(&["link", "show", "dev", dev])
            .unwrap_or_else(|e| panic!("{e:#}"))
            .contains("prog/xdp")
    }

    /// The id of the XDP program attached to `dev`, if any (`ip -j link`).
    pub fn xdp_prog_id(&self, dev: &str) -> Option<u32> {
        let out = self
            .ip(&["-j", "link", "show", "dev", dev])
            .unwrap_or_else(|e| panic!("{e:#}"));
        let v: serde_json::Value = serde_json::from_str(&out).expect("ip -j link: JSON");
        let id = v[0]["xdp"]["prog"]["id"].as_u64()?;
        Some(u32::try_from(id).expect("a program id fits u32"))
    }
}

/// A UDP socket bound in `ns`.
pub fn bind(ns: &NetNs, addr: &str, port: u16) -> UdpSocket {
    ns.enter(|| {
        UdpSocket::bind((addr, port)).unwrap_or_else(|e| panic!("binding {addr}:{port}: {e}"))
    })
    .expect("entering the namespace")
}

/// Datagrams waiting on `sock`, read until it stays quiet for `quiet`.
pub fn drain_quiet(sock: &UdpSocket, quiet: Duration) -> u64 {
    sock.set_read_timeout(Some(quiet)).expect("timeout");
    let mut buf = [0u8; 2048];
    let mut n = 0;
    while sock.recv_from(&mut buf).is_ok() {
        n += 1;
    }
    n
}

/// [`drain_quiet`] for 300 ms.
pub fn drain(sock: &UdpSocket) -> u64 {
    drain_quiet(sock, Duration::from_millis(300))
}

/// Sends `n` datagrams of `class` to `to`:5351.
pub fn send(from: &UdpSocket, to: &str, class: nat_pmp_ebpf_common::Class, n: u64) {
    let payload = nat_pmp_agent::probe::sample_payload(class);
    for _ in 0..n {
        from.send_to(&payload, (to, nat_pmp_ebpf_common::NATPMP_PORT))
            .expect("sending");
    }
}

/// Opens (creates, not persistent: closing it deletes the device) the tun
/// device `tun0` of the current namespace (`IFF_TUN`, no packet
/// information header).
pub fn open_tun() -> File {
    let file = open_tun_file(false).expect("opening /dev/net/tun");
    tunsetiff(&file, "tun0", false).expect("creating tun0");
    file
}
