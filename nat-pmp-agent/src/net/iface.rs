//! Interfaces as the agent sees them: their names and indexes, their link
//! type (where the network header starts), and the XDP attach modes. Low in
//! the layers: the loader, rtnetlink and the views all use it.

use std::{ffi::CString, io};

use anyhow::{anyhow, bail, Context as _, Result};
use nat_pmp_ebpf_common::Link;

/// How to attach: what the user asked for on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    /// Native (driver) mode, falling back to skb mode where the driver has none.
    Auto,
    /// Native (driver) mode only.
    Native,
    /// Generic (skb) mode: works on every interface, slower.
    Skb,
}

/// The XDP mode a program actually got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachedMode {
    Native,
    Skb,
}

impl AttachedMode {
    /// Stable name used in JSON and reports.
    pub const fn name(self) -> &'static str {
        match self {
            AttachedMode::Native => "native",
            AttachedMode::Skb => "skb",
        }
    }
}

/// Where the network header starts, as the user asked for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkType {
    /// From the interface's hardware type (ARPHRD_*).
    Auto,
    /// An Ethernet header (VLAN tags and PPPoE are recognised behind it).
    Ethernet,
    /// No link-layer header: PPP, tun, WireGuard, IP tunnels.
    RawIp,
}

/// `ARPHRD_RAWIP` (`linux/if_arp.h`; not in every libc release).
const ARPHRD_RAWIP: u16 = 519;

impl LinkType {
    /// The link the program must parse on `iface`.
    pub fn resolve(self, iface: &str) -> Result<Link> {
        match self {
            LinkType::Ethernet => Ok(Link::Ethernet),
            LinkType::RawIp => Ok(Link::RawIp),
            LinkType::Auto => {
                let hw = hardware_type(iface)?;
                match hw {
                    // Loopback carries a zeroed Ethernet header in XDP.
                    libc::ARPHRD_ETHER | libc::ARPHRD_LOOPBACK => Ok(Link::Ethernet),
                    libc::ARPHRD_PPP
                    | libc::ARPHRD_NONE
                    | ARPHRD_RAWIP
                    | libc::ARPHRD_TUNNEL
                    | libc::ARPHRD_TUNNEL6 => Ok(Link::RawIp),
                    other => bail!(
                        "interface {iface} has hardware type {other} (ARPHRD_*, see \
                         /sys/class/net/{iface}/type), which is neither Ethernet nor raw IP; \
                         pass --link-type ethernet or --link-type raw-ip if you know which \
                         header its frames start with"
                    ),
                }
            }
        }
    }
}

/// The interface's ARPHRD_* type, asked of the kernel with SIOCGIFHWADDR
/// (in this process's network namespace, unlike a /sys that `ip netns
/// exec` may not have remounted).
pub fn hardware_type(iface: &str) -> Result<u16> {
    check_iface(iface)?;
    // SAFETY: `ifreq` is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    if iface.len() >= req.ifr_name.len() {
        bail!("interface name {iface:?} is too long");
    }
    for (dst, src) in req.ifr_name.iter_mut().zip(iface.bytes()) {
        // `c_char` is `i8` on x86_64 and `u8` on aarch64: the byte as is.
        *dst = libc::c_char::from_ne_bytes([src]);
    }
    // SAFETY: socket() has no memory preconditions.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error())
            .context("opening a socket to ask for an interface's hardware type");
    }
    // The request's type is the C library's: `c_ulong` in glibc, `c_int` in
    // musl (the static release builds); 0x8927 fits either.
    let request = libc::SIOCGIFHWADDR as libc::Ioctl;
    // SAFETY: `req` is a valid `ifreq` the call fills in; `fd` is ours.
    let rc = unsafe { libc::ioctl(fd, request, &raw mut req) };
    let err = io::Error::last_os_error();
    // SAFETY: closing the socket opened above.
    unsafe { libc::close(fd) };
    if rc < 0 {
        return Err(err).with_context(|| {
            format!("reading the hardware type of {iface} (SIOCGIFHWADDR); pass --link-type")
        });
    }
    // SAFETY: SIOCGIFHWADDR fills the `ifru_hwaddr` member of the union.
    Ok(unsafe { req.ifr_ifru.ifru_hwaddr.sa_family })
}

/// Fails with a helpful message unless `iface` exists in this namespace.
pub fn check_iface(iface: &str) -> Result<u32> {
    let c =
        CString::new(iface).map_err(|_| anyhow!("interface name {iface:?} contains a NUL byte"))?;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if index == 0 {
        bail!(
            "interface {iface:?} does not exist in this network namespace; list interfaces \
             with `ip link show`"
        );
    }
    Ok(index)
}
