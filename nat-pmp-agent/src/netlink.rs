//! What XDP program an interface runs, and in which mode, asked of the
//! kernel over rtnetlink (`RTM_GETLINK`, the `IFLA_XDP` attributes), as
//! `ip link` does. This is namespace-correct, unlike walking the global list
//! of BPF links, whose XDP entries carry only an ifindex.
//!
//! bpffs cannot store the XDP mode of a pinned instance (it holds only pins),
//! so `status` and a restarted agent read it back from here.

use anyhow::{bail, Context as _, Result};
use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_REQUEST};
use netlink_packet_route::{
    link::{LinkAttribute, LinkMessage, LinkXdp, XdpAttached},
    RouteNetlinkMessage,
};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use crate::ebpf::{check_iface, AttachedMode};

/// The XDP program on an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XdpAttachment {
    /// The kernel's id of the program (as `bpftool prog show id N` takes).
    pub prog_id: u32,
    /// Native or skb; `None` for hardware offload or several programs.
    pub mode: Option<AttachedMode>,
}

/// The XDP program attached to `iface` in this network namespace, if any.
pub fn xdp_attachment(iface: &str) -> Result<Option<XdpAttachment>> {
    let index = check_iface(iface)?;
    let what = || format!("asking the kernel (rtnetlink) which XDP program {iface} runs");
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
    let link = match parsed.payload {
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) => link,
        NetlinkPayload::Error(e) => bail!("{}: {e}", what()),
        other => bail!("{}: unexpected answer {other:?}", what()),
    };
    let mut attached = XdpAttached::None;
    let mut prog_id = 0;
    for attr in link.attributes {
        if let LinkAttribute::Xdp(xdp) = attr {
            for x in xdp {
                match x {
                    LinkXdp::Attached(a) => attached = a,
                    LinkXdp::ProgId(id) => prog_id = id,
                    _ => {}
                }
            }
        }
    }
    let mode = match attached {
        XdpAttached::None => return Ok(None),
        XdpAttached::Driver => Some(AttachedMode::Native),
        XdpAttached::SocketBuffer => Some(AttachedMode::Skb),
        _ => None,
    };
    Ok(Some(XdpAttachment { prog_id, mode }))
}
