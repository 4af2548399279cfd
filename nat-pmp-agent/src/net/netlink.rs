//! The kernel's view of interfaces over rtnetlink: which XDP program an
//! interface runs, and in which mode (`RTM_GETLINK`, the `IFLA_XDP`
//! attributes, as `ip link` does), and the link events (`RTMGRP_LINK`) that
//! tell when an interface goes away and comes back (a PPPoE reconnect).
//!
//! rtnetlink answers for the caller's network namespace only, which is what
//! makes it the right referee: an XDP link's ifindex (see [`crate::net::sys`]) is
//! meaningful only together with the namespace that holds the device.
//!
//! Also the interfaces' addresses (`RTM_GETADDR`, [`addresses`]) and the
//! multi-part dump every such listing is ([`dump`], which the `sock_diag`
//! listing in [`crate::net::sockets`] shares).

use anyhow::{bail, Context as _, Result};
use std::net::IpAddr;

use netlink_packet_core::{
    NetlinkBuffer, NetlinkDeserializable, NetlinkHeader, NetlinkMessage, NetlinkPayload,
    NetlinkSerializable, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_route::{
    address::{AddressAttribute, AddressMessage},
    link::{LinkAttribute, LinkMessage, LinkXdp, XdpAttached},
    RouteNetlinkMessage,
};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use super::iface::{check_iface, AttachedMode};

/// The XDP program on an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XdpAttachment {
    /// The kernel's id of the program (as `bpftool prog show id N` takes).
    pub prog_id: u32,
    /// Native or skb; `None` for hardware offload or several programs.
    pub mode: Option<AttachedMode>,
}

/// One interface of this network namespace, as rtnetlink describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Iface {
    pub index: u32,
    pub name: String,
    pub xdp: Option<XdpAttachment>,
}

/// The XDP program attached to `iface` in this network namespace, if any.
pub fn xdp_attachment(iface: &str) -> Result<Option<XdpAttachment>> {
    let index = check_iface(iface)?;
    Ok(by_index(index)?.and_then(|i| i.xdp))
}

/// The interface with ifindex `index` in this network namespace, if any.
pub fn by_index(index: u32) -> Result<Option<Iface>> {
    let what = || format!("asking the kernel (rtnetlink) about interface index {index}");
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    let mut req = NetlinkMessage::new(
        NetlinkHeader::default(),
        NetlinkPayload::from(RouteNetlinkMessage::GetLink(msg)),
    );
    req.header.flags = NLM_F_REQUEST;
    req.header.sequence_number = 1;
    req.finalize();
    let mut buf = vec![0u8; req.buffer_len()];
    req.serialize(&mut buf);

    let mut socket = Socket::new(NETLINK_ROUTE).with_context(what)?;
    socket.bind_auto().with_context(what)?;
    socket.connect(&SocketAddr::new(0, 0)).with_context(what)?;
    socket.send(&buf, 0).with_context(what)?;
    let (reply, _) = socket.recv_from_full().with_context(what)?;
    let parsed = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&reply)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(what)?;
    match parsed.payload {
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) => Ok(Some(iface(link))),
        // ENODEV: no device with this index here (gone, or in another namespace).
        NetlinkPayload::Error(e) if e.raw_code() == -libc::ENODEV => Ok(None),
        NetlinkPayload::Error(e) => bail!("{}: {e}", what()),
        other => bail!("{}: unexpected answer {other:?}", what()),
    }
}

fn iface(link: LinkMessage) -> Iface {
    let mut attached = XdpAttached::None;
    let mut prog_id = 0;
    let mut name = String::new();
    for attr in link.attributes {
        match attr {
            LinkAttribute::IfName(n) => name = n,
            LinkAttribute::Xdp(xdp) => {
                for x in xdp {
                    match x {
                        LinkXdp::Attached(a) => attached = a,
                        LinkXdp::ProgId(id) => prog_id = id,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    let mode = match attached {
        XdpAttached::None => None,
        XdpAttached::Driver => Some(Some(AttachedMode::Native)),
        XdpAttached::SocketBuffer => Some(Some(AttachedMode::Skb)),
        _ => Some(None),
    };
    Iface {
        index: link.header.index,
        name,
        xdp: mode.map(|mode| XdpAttachment { prog_id, mode }),
    }
}

/// A change of an interface, from the kernel's link events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkEvent {
    /// A device was created, or changed (up/down, renamed, XDP changed).
    New(Iface),
    /// A device was deleted (or moved to another namespace).
    Del(Iface),
}

/// Where [`watch`] sends each event, with when it was read.
pub type EventSender =
    tokio::sync::mpsc::UnboundedSender<(std::time::Instant, Result<LinkEvent, String>)>;

/// `RTMGRP_LINK` (`linux/rtnetlink.h`).
const RTMGRP_LINK: u32 = 1;

/// Subscribes to this namespace's link events. The socket is opened here,
/// before the caller looks at the interfaces, so that no event between that
/// look and the first read is lost; a thread then passes each event to
/// `tx` as it arrives (it ends when `tx`'s receiver is gone or the socket
/// fails, and says so on the channel as `Err`).
pub fn watch(tx: EventSender) -> Result<()> {
    let what = "subscribing to the kernel's link events (rtnetlink RTMGRP_LINK)";
    let mut socket = Socket::new(NETLINK_ROUTE).context(what)?;
    socket
        .bind(&SocketAddr::new(0, RTMGRP_LINK))
        .context(what)?;
    std::thread::Builder::new()
        .name("link-events".into())
        .spawn(move || loop {
            let data = match socket.recv_from_full() {
                Ok((data, _)) => data,
                // ENOBUFS: the kernel dropped events; the receiver re-checks
                // every interface on the next report anyway.
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => continue,
                Err(e) => {
                    let _ = tx.send((
                        std::time::Instant::now(),
                        Err(format!("reading link events: {e}")),
                    ));
                    return;
                }
            };
            let at = std::time::Instant::now();
            for event in parse_events(&data) {
                if tx.send((at, Ok(event))).is_err() {
                    return;
                }
            }
        })
        .context("starting the link-event thread")?;
    Ok(())
}

/// The link events in one datagram (several messages may share it).
fn parse_events(mut data: &[u8]) -> Vec<LinkEvent> {
    let mut out = Vec::new();
    while let Ok(buf) = NetlinkBuffer::new_checked(data) {
        let len = usize::try_from(buf.length()).unwrap_or(usize::MAX);
        if len == 0 || len > data.len() {
            break;
        }
        if let Ok(msg) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&data[..len]) {
            match msg.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(l)) => {
                    out.push(LinkEvent::New(iface(l)));
                }
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(l)) => {
                    out.push(LinkEvent::Del(iface(l)));
                }
                _ => {}
            }
        }
        // Messages are 4-byte aligned (NLMSG_ALIGN).
        let next = (len + 3) & !3;
        if next >= data.len() {
            break;
        }
        data = &data[next..];
    }
    out
}

/// Sends `request` with `NLM_F_DUMP` on a new netlink socket of `protocol`
/// and collects every message of the answer up to `NLMSG_DONE` (a dump
/// spans several datagrams, each holding several messages). `what` names
/// the request in errors.
pub fn dump<I>(protocol: isize, request: I, what: &str) -> Result<Vec<I>>
where
    I: NetlinkSerializable + NetlinkDeserializable + std::fmt::Debug,
{
    let mut req = NetlinkMessage::new(
        NetlinkHeader::default(),
        NetlinkPayload::InnerMessage(request),
    );
    req.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    req.header.sequence_number = 1;
    req.finalize();
    let mut buf = vec![0u8; req.buffer_len()];
    req.serialize(&mut buf);

    let mut socket = Socket::new(protocol).with_context(|| what.to_owned())?;
    socket.bind_auto().with_context(|| what.to_owned())?;
    socket
        .connect(&SocketAddr::new(0, 0))
        .with_context(|| what.to_owned())?;
    socket.send(&buf, 0).with_context(|| what.to_owned())?;
    let mut out = Vec::new();
    loop {
        let (reply, _) = socket.recv_from_full().with_context(|| what.to_owned())?;
        if reply.is_empty() {
            bail!("{what}: the kernel closed the dump before its end");
        }
        let mut data = reply.as_slice();
        while !data.is_empty() {
            let len = NetlinkBuffer::new_checked(data)
                .map(|b| usize::try_from(b.length()).unwrap_or(usize::MAX))
                .map_err(|e| anyhow::anyhow!("{e}"))
                .with_context(|| format!("{what}: a damaged answer"))?;
            if len == 0 || len > data.len() {
                bail!("{what}: a message of length {len} in {} bytes", data.len());
            }
            let msg = NetlinkMessage::<I>::deserialize(&data[..len])
                .map_err(|e| anyhow::anyhow!("{e}"))
                .with_context(|| format!("{what}: an answer that does not parse"))?;
            match msg.payload {
                NetlinkPayload::InnerMessage(m) => out.push(m),
                NetlinkPayload::Done(_) => return Ok(out),
                NetlinkPayload::Error(e) if e.code.is_none() => {}
                NetlinkPayload::Error(e) => bail!("{what}: {e}"),
                _ => {}
            }
            // Messages are 4-byte aligned (NLMSG_ALIGN).
            let next = (len + 3) & !3;
            data = data.get(next..).unwrap_or_default();
        }
    }
}

/// An address of an interface of this network namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IfaceAddr {
    /// The interface's index.
    pub index: u32,
    pub addr: IpAddr,
}

/// Every address of every interface of this network namespace (IPv4 and
/// IPv6, link-local ones included), as `ip addr` lists them.
pub fn addresses() -> Result<Vec<IfaceAddr>> {
    let answer = dump(
        NETLINK_ROUTE,
        RouteNetlinkMessage::GetAddress(AddressMessage::default()),
        "listing the interfaces' addresses (rtnetlink RTM_GETADDR)",
    )?;
    let mut out = Vec::new();
    for m in answer {
        let RouteNetlinkMessage::NewAddress(a) = m else {
            continue;
        };
        // IFA_LOCAL is the interface's own address; IFA_ADDRESS is the
        // peer's on a point-to-point link (and the same as IFA_LOCAL, or
        // the only one given, elsewhere).
        let local = a.attributes.iter().find_map(|at| match at {
            AddressAttribute::Local(ip) => Some(*ip),
            _ => None,
        });
        let address = a.attributes.iter().find_map(|at| match at {
            AddressAttribute::Address(ip) => Some(*ip),
            _ => None,
        });
        if let Some(addr) = local.or(address) {
            out.push(IfaceAddr {
                index: a.header.index,
                addr,
            });
        }
    }
    Ok(out)
}
