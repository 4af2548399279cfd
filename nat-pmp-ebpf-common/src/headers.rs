//! Wire headers as byte arrays with big-endian getters.
//!
//! Every field is a `[u8; N]`, so the structs have alignment 1 and can be
//! read at any offset of packet memory; `LEN` is the header's size on the
//! wire, checked at compile time against the struct's size.

/// `EtherType` of IPv4.
pub const ETH_P_IP: u16 = 0x0800;
/// `EtherType` of IPv6.
pub const ETH_P_IPV6: u16 = 0x86DD;
/// IP protocol number of UDP.
pub const IPPROTO_UDP: u8 = 17;

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
const _: () = assert!(core::mem::size_of::<Ipv4Hdr>() == Ipv4Hdr::LEN);
const _: () = assert!(core::mem::size_of::<Ipv6Hdr>() == Ipv6Hdr::LEN);
const _: () = assert!(core::mem::size_of::<UdpHdr>() == UdpHdr::LEN);
