//! Wire headers as byte arrays with big-endian getters.
//!
//! Every field is a `[u8; N]`, so the structs have alignment 1 and can be
//! read at any offset of packet memory; `LEN` is the header's size on the
//! wire, checked at compile time against the struct's size.

/// `EtherType` of IPv4.
pub const ETH_P_IP: u16 = 0x0800;
/// `EtherType` of IPv6.
pub const ETH_P_IPV6: u16 = 0x86DD;
/// EtherType of an 802.1Q VLAN tag (customer tag).
pub const ETH_P_8021Q: u16 = 0x8100;
/// EtherType of an 802.1ad VLAN tag (service tag, the outer tag of QinQ).
pub const ETH_P_8021AD: u16 = 0x88A8;
/// EtherType of a PPPoE session frame (RFC 2516 §4).
pub const ETH_P_PPP_SES: u16 = 0x8864;
/// PPP protocol number of IPv4 (RFC 1332).
pub const PPP_IP: u16 = 0x0021;
/// PPP protocol number of IPv6 (RFC 5072).
pub const PPP_IPV6: u16 = 0x0057;
/// IP protocol number of UDP.
pub const IPPROTO_UDP: u8 = 17;
/// IP protocol number of IPv4 encapsulated in IP (RFC 2003; DS-Lite RFC 6333
/// and MAP-E RFC 7597 carry IPv4 in IPv6 with it).
pub const IPPROTO_IPIP: u8 = 4;
/// IPv6 Hop-by-Hop Options header (RFC 8200 §4.3).
pub const IPPROTO_HOPOPTS: u8 = 0;
/// IPv6 Routing header (RFC 8200 §4.4).
pub const IPPROTO_ROUTING: u8 = 43;
/// IPv6 Fragment header (RFC 8200 §4.5).
pub const IPPROTO_FRAGMENT: u8 = 44;
/// IPv6 Destination Options header (RFC 8200 §4.6).
pub const IPPROTO_DSTOPTS: u8 = 60;

/// Ethernet II header.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct EthHdr {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    pub ether_type: [u8; 2],
}

impl EthHdr {
    pub const LEN: usize = 14;

    /// The `EtherType`, host order.
    #[inline(always)]
    pub const fn ether_type(&self) -> u16 {
        u16::from_be_bytes(self.ether_type)
    }
}

/// An 802.1Q/802.1ad VLAN tag after the MAC addresses: the tag control
/// information and the EtherType it encloses.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct VlanHdr {
    pub tci: [u8; 2],
    pub ether_type: [u8; 2],
}

impl VlanHdr {
    pub const LEN: usize = 4;

    /// The enclosed EtherType, host order.
    #[inline(always)]
    pub const fn ether_type(&self) -> u16 {
        u16::from_be_bytes(self.ether_type)
    }
}

/// PPPoE session header (RFC 2516 §4) followed by the PPP protocol field
/// (RFC 1661 §2, uncompressed as RFC 2516 §7 requires).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct PppoeHdr {
    /// Version and type, both 1: `0x11`.
    pub ver_type: u8,
    /// Code: 0 for session data.
    pub code: u8,
    pub session_id: [u8; 2],
    pub length: [u8; 2],
    pub protocol: [u8; 2],
}

impl PppoeHdr {
    pub const LEN: usize = 8;
    /// The only version/type RFC 2516 defines.
    pub const VER_TYPE: u8 = 0x11;

    /// The PPP protocol, host order.
    #[inline(always)]
    pub const fn protocol(&self) -> u16 {
        u16::from_be_bytes(self.protocol)
    }
}

/// IPv4 header without options (RFC 791).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Ipv4Hdr {
    pub version_ihl: u8,
    pub tos: u8,
    pub total_len: [u8; 2],
    pub id: [u8; 2],
    pub frag_off: [u8; 2],
    pub ttl: u8,
    pub proto: u8,
    pub check: [u8; 2],
    pub src: [u8; 4],
    pub dst: [u8; 4],
}

impl Ipv4Hdr {
    /// Size of the header without options.
    pub const LEN: usize = 20;

    /// IP version (4 for a well-formed header).
    #[inline(always)]
    pub const fn version(&self) -> u8 {
        self.version_ihl >> 4
    }

    /// Header length in bytes, options included (IHL × 4, 0..=60).
    #[inline(always)]
    pub const fn header_len(&self) -> usize {
        ((self.version_ihl & 0x0f) as usize) * 4
    }

    /// Fragment offset in 8-byte units; non-zero for every fragment but the
    /// first, which carry no transport header.
    #[inline(always)]
    pub const fn fragment_offset(&self) -> u16 {
        u16::from_be_bytes(self.frag_off) & 0x1fff
    }

    /// The More Fragments flag.
    #[inline(always)]
    pub const fn more_fragments(&self) -> bool {
        u16::from_be_bytes(self.frag_off) & 0x2000 != 0
    }
}

/// IPv6 fixed header (RFC 8200 §3).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Ipv6Hdr {
    pub version_tc_flow: [u8; 4],
    pub payload_len: [u8; 2],
    pub next_header: u8,
    pub hop_limit: u8,
    pub src: [u8; 16],
    pub dst: [u8; 16],
}

impl Ipv6Hdr {
    pub const LEN: usize = 40;

    /// IP version (6 for a well-formed header).
    #[inline(always)]
    pub const fn version(&self) -> u8 {
        self.version_tc_flow[0] >> 4
    }
}

/// IPv6 Fragment extension header (RFC 8200 §4.5).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Ipv6FragHdr {
    pub next_header: u8,
    pub reserved: u8,
    /// Fragment offset (13 bits, 8-byte units), 2 reserved bits, M flag.
    pub offset_flags: [u8; 2],
    pub id: [u8; 4],
}

impl Ipv6FragHdr {
    pub const LEN: usize = 8;

    /// Fragment offset in 8-byte units.
    #[inline(always)]
    pub const fn fragment_offset(&self) -> u16 {
        u16::from_be_bytes(self.offset_flags) >> 3
    }

    /// The M (more fragments) flag.
    #[inline(always)]
    pub const fn more_fragments(&self) -> bool {
        self.offset_flags[1] & 1 != 0
    }
}

/// UDP header (RFC 768).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct UdpHdr {
    pub src_port: [u8; 2],
    pub dst_port: [u8; 2],
    pub len: [u8; 2],
    pub check: [u8; 2],
}

impl UdpHdr {
    pub const LEN: usize = 8;

    /// Source port, host order.
    #[inline(always)]
    pub const fn src_port(&self) -> u16 {
        u16::from_be_bytes(self.src_port)
    }

    /// Destination port, host order.
    #[inline(always)]
    pub const fn dst_port(&self) -> u16 {
        u16::from_be_bytes(self.dst_port)
    }

    /// The length field: header plus payload, in bytes.
    #[inline(always)]
    pub const fn length(&self) -> u16 {
        u16::from_be_bytes(self.len)
    }
}

const _: () = assert!(core::mem::size_of::<EthHdr>() == EthHdr::LEN);
const _: () = assert!(core::mem::size_of::<VlanHdr>() == VlanHdr::LEN);
const _: () = assert!(core::mem::size_of::<PppoeHdr>() == PppoeHdr::LEN);
const _: () = assert!(core::mem::size_of::<Ipv6FragHdr>() == Ipv6FragHdr::LEN);
const _: () = assert!(core::mem::size_of::<Ipv4Hdr>() == Ipv4Hdr::LEN);
const _: () = assert!(core::mem::size_of::<Ipv6Hdr>() == Ipv6Hdr::LEN);
const _: () = assert!(core::mem::size_of::<UdpHdr>() == UdpHdr::LEN);
