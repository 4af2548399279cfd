//! The UDP sockets of this network namespace bound to given ports
//! ([`udp_bound`], through the kernel's `sock_diag` netlink interface, as `ss
//! -u` asks), and the processes that hold them ([`owners`], from
//! `/proc/<pid>/fd` through the `procfs` crate).
//!
//! `sock_diag` answers for the caller's network namespace only, and lists
//! every socket of it whoever owns it, also to an unprivileged caller. The
//! owners are another matter: `/proc/<pid>/fd` of another user's process is
//! readable by root (`CAP_SYS_PTRACE`) only, and a process of another PID
//! namespace is not in our `/proc` at all. What could not be read is
//! returned, never left out silently.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use anyhow::Result;
use netlink_packet_sock_diag::{
    constants::{AF_INET, AF_INET6, IPPROTO_UDP},
    inet::{ExtensionFlags, InetRequest, SocketId, StateFlags},
    SockDiagMessage,
};
use netlink_sys::protocols::NETLINK_SOCK_DIAG;

use super::netlink::dump;

/// A UDP socket as `sock_diag` describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UdpSocket {
    /// The bound (local) address: `0.0.0.0` or `::` for a wildcard; an
    /// IPv4-mapped IPv6 address is given as its IPv4 address.
    pub addr: IpAddr,
    pub port: u16,
    /// Whether it is an `AF_INET6` socket (which may be bound to an IPv4
    /// address, mapped).
    pub ipv6: bool,
    /// The device it is bound to (`SO_BINDTODEVICE`), 0 for none.
    pub bound_ifindex: u32,
    /// Its inode (as `/proc/<pid>/fd/N -> socket:[inode]` shows it).
    pub inode: u64,
    /// The user id that created it.
    pub uid: u32,
}

/// Every UDP socket (IPv4 and IPv6) of this network namespace bound to one
/// of `ports`, sorted by port, address and inode.
pub fn udp_bound(ports: &[u16]) -> Result<Vec<UdpSocket>> {
    let mut out = Vec::new();
    for (family, id, name) in [
        (AF_INET, SocketId::new_v4(), "IPv4"),
        (AF_INET6, SocketId::new_v6(), "IPv6"),
    ] {
        let request = SockDiagMessage::InetRequest(InetRequest {
            family,
            protocol: IPPROTO_UDP,
            extensions: ExtensionFlags::empty(),
            // UDP sockets report TCP states: unconnected ones are CLOSE,
            // connected ones ESTABLISHED; both receive.
            states: StateFlags::all(),
            socket_id: id,
        });
        let what = format!("listing the {name} UDP sockets (netlink sock_diag)");
        for m in dump(NETLINK_SOCK_DIAG, request, &what)? {
            let SockDiagMessage::InetResponse(r) = m else {
                continue;
            };
            let h = &r.header;
            if !ports.contains(&h.socket_id.source_port) {
                continue;
            }
            out.push(UdpSocket {
                addr: unmapped(h.socket_id.source_address),
                port: h.socket_id.source_port,
                ipv6: h.family == AF_INET6,
                bound_ifindex: h.socket_id.interface_id,
                inode: u64::from(h.inode),
                uid: h.uid,
            });
        }
    }
    out.sort_by_key(|a| (a.port, a.addr, a.inode));
    Ok(out)
}

/// `::ffff:a.b.c.d` as `a.b.c.d`; every other address as it is.
fn unmapped(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 @ IpAddr::V4(_) => v4,
    }
}

/// Whether `addr` is a wildcard (`0.0.0.0`, `::`).
pub fn is_wildcard(addr: IpAddr) -> bool {
    addr == IpAddr::V4(Ipv4Addr::UNSPECIFIED) || addr == IpAddr::V6(Ipv6Addr::UNSPECIFIED)
}

/// A process holding a socket.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Owner {
    pub pid: i32,
    /// Its command name (`/proc/<pid>/stat`'s `comm`, as `ps` shows it).
    pub name: String,
}

/// Which processes hold which socket inodes, and what could not be read.
#[derive(Clone, Debug, Default)]
pub struct Owners {
    pub by_inode: BTreeMap<u64, Vec<Owner>>,
    /// Processes whose descriptors could not be read (another user's,
    /// without root): one of them may hold a socket that has no owner here.
    pub unreadable: Vec<Owner>,
    /// Why `/proc` could not be listed at all, if it could not.
    pub no_proc: Option<String>,
}

/// The processes (of this PID namespace) that hold the sockets `inodes`.
pub fn owners(inodes: &BTreeSet<u64>) -> Owners {
    let mut found = Owners::default();
    let all = match procfs::process::all_processes() {
        Ok(all) => all,
        Err(e) => {
            found.no_proc = Some(format!("listing the processes in /proc: {e}"));
            return found;
        }
    };
    for process in all {
        // A process that ended while we looked held nothing any more.
        let Ok(process) = process else { continue };
        let pid = process.pid();
        let name = process.stat().map_or_else(|_| "?".to_owned(), |s| s.comm);
        let fds = match process.fd() {
            Ok(fds) => fds,
            Err(procfs::ProcError::NotFound(_)) => continue,
            Err(_) => {
                found.unreadable.push(Owner { pid, name });
                continue;
            }
        };
        for fd in fds.flatten() {
            if let procfs::process::FDTarget::Socket(inode) = fd.target {
                if inodes.contains(&inode) {
                    let list = found.by_inode.entry(inode).or_default();
                    let owner = Owner {
                        pid,
                        name: name.clone(),
                    };
                    if !list.contains(&owner) {
                        list.push(owner);
                    }
                }
            }
        }
    }
    found
}
