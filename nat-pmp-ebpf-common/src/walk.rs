//! The frame walk and the per-frame decision, shared by the XDP program and
//! the host.
//!
//! Contract: [`walk`] and [`decide`] are generic over [`Bytes`] (where the
//! frame's bytes come from) and [`FragTable`] (where first fragments are
//! remembered). The XDP program implements them over `XdpContext` and an LRU
//! hash map; the host implements them over `&[u8]` and a `HashMap`
//! ([`crate::reference`]). Nothing else differs, so the host's answer for a
//! frame *is* the kernel's answer (the differential test checks it on a
//! million frames).
//!
//! The walk accepts: Ethernet, then up to [`MAX_VLAN_TAGS`] 802.1Q/802.1ad
//! tags in any order, then optionally PPPoE session + PPP (IPv4 0x0021,
//! or 0x21 with protocol-field compression, RFC 1661 §6.5;
//! IPv6 0x0057); or a raw IP link (no link-layer header). Then IPv4 with any
//! IHL, or IPv6 with up to [`MAX_IPV6_EXT_HEADERS`] extension headers
//! (hop-by-hop, routing, destination options, fragment); IPv4 in IPv6 (next
//! header 4, DS-Lite / MAP-E) one level deep; then UDP.
//!
//! Every loop has a constant bound and every offset is checked against
//! [`MAX_OFFSET`] before it reaches [`Bytes::read`], so the verifier sees
//! bounded packet offsets; non-IP and non-UDP frames leave at the first
//! header that tells.
//!
//! Depends on [`crate::class`], [`crate::classify`](mod@crate::classify),
//! [`crate::headers`] and [`crate::maps`]; nothing in the crate depends on
//! it but the host-only modules (`reference`, the tests).

use crate::{
    class::Class,
    classify::{
        classify_first_fragment, classify_udp, classify_udp_inline, direction, drops,
        Classification, Direction, NATPMP_PORT,
    },
    headers::{
        EthHdr, Ipv4Hdr, Ipv6FragHdr, Ipv6Hdr, PppoeHdr, UdpHdr, VlanHdr, ETH_P_8021AD,
        ETH_P_8021Q, ETH_P_IP, ETH_P_IPV6, ETH_P_PPP_SES, IPPROTO_DSTOPTS, IPPROTO_FRAGMENT,
        IPPROTO_HOPOPTS, IPPROTO_IPIP, IPPROTO_ROUTING, IPPROTO_UDP, PPP_IP, PPP_IPV6,
    },
    maps::{
        addr_words, v4_mapped_words, words_addr, ClassCounters, Config, FragEntry, FragKey, Link,
    },
};

/// VLAN tags walked (802.1Q and 802.1ad, in any order: QinQ). A frame with
/// more tags passes uncounted (no WAN stacks three).
pub const MAX_VLAN_TAGS: usize = 2;

/// IPv6 extension headers walked before giving up. Real chains are short
/// (hop-by-hop, destination options, routing, fragment, destination options
/// is already five, RFC 8200 §4.1); a longer chain is counted as
/// [`Class::Ipv6ExtChainTooLong`] rather than silently passed.
pub const MAX_IPV6_EXT_HEADERS: usize = 6;

/// Largest offset the walk reads at. Far beyond any header chain the walk
/// accepts within a real frame (6 × 2048-byte extension headers is the
/// worst), and low enough that the verifier can prove `data + offset` stays
/// a valid packet pointer (it must stay below 64 KiB).
pub const MAX_OFFSET: usize = 0x3fff;

/// Where a frame's bytes come from.
///
/// # Contract
/// `read` returns the `size_of::<T>()` bytes at `off` as a `T`, or `None`
/// when they are not all inside the frame. It must never read outside it.
pub trait Bytes {
    /// A checked run of the frame's bytes ([`Bytes::window`]).
    type Win<'a>: Window
    where
        Self: 'a;

    /// The frame's length in bytes (what the counters count).
    fn frame_len(&self) -> usize;
    /// The `T` at `off`, if the frame holds all of it.
    fn read<T: Plain>(&self, off: usize) -> Option<T>;

    /// `len` bytes at `off` the frame was checked to hold, read without
    /// further checks ([`Window`]): the fast path checks each header once.
    fn window(&self, off: usize, len: usize) -> Option<Self::Win<'_>>;

    /// Runs `f` on the same frame through a fresh reader. The XDP program
    /// re-reads the frame's bounds from its context here, so that the
    /// verifier checks the staged walk once, not once for every set of
    /// bounds checks the fast path made before giving up on a frame.
    #[inline(always)]
    fn afresh<R>(&self, f: impl FnOnce(&Self) -> R) -> R {
        f(self)
    }
}

/// Bytes of the frame that [`Bytes::window`] checked: loads at constant
/// offsets `I` inside it. An offset beyond the window is a bug: the host
/// panics, the verifier rejects the program.
pub trait Window: Copy {
    /// The big-endian `u16` at `I`.
    fn be16<const I: usize>(&self) -> u16;
    /// The four bytes at `I` (an IPv4 address), in wire order.
    fn addr4<const I: usize>(&self) -> [u8; 4];
    /// The sixteen bytes at `I` (an IPv6 address) as the two words of
    /// [`crate::addr_words`].
    fn addr16<const I: usize>(&self) -> [u64; 2];
    /// The rest of the window from `N` on (a header inside a window that
    /// was checked for it and what comes before it).
    #[must_use]
    fn skip<const N: usize>(&self) -> Self;
    /// The big-endian `u16` at `L + I`: field `I` of a header at the
    /// constant offset `L` in the window. The XDP program loads it with one
    /// instruction at offset `L + I` (through `skip`, the compiler first
    /// computes the header's address in a register of its own).
    #[inline(always)]
    fn be16_at<const L: usize, const I: usize>(&self) -> u16 {
        self.skip::<L>().be16::<I>()
    }
    /// The byte at `L + I`, as [`Window::be16_at`].
    fn byte_at<const L: usize, const I: usize>(&self) -> u8;
}

/// The host's window: a checked slice.
#[derive(Clone, Copy)]
pub struct SliceWindow<'a>(&'a [u8]);

impl SliceWindow<'_> {
    fn take<const N: usize>(&self, i: usize) -> [u8; N] {
        let mut a = [0u8; N];
        a.copy_from_slice(&self.0[i..i + N]);
        a
    }
}

impl Window for SliceWindow<'_> {
    #[inline]
    fn be16<const I: usize>(&self) -> u16 {
        u16::from_be_bytes(self.take(I))
    }

    #[inline]
    fn addr4<const I: usize>(&self) -> [u8; 4] {
        self.take(I)
    }

    #[inline]
    fn addr16<const I: usize>(&self) -> [u64; 2] {
        addr_words(&self.take(I))
    }

    #[inline]
    fn skip<const N: usize>(&self) -> Self {
        SliceWindow(&self.0[N..])
    }

    #[inline]
    fn byte_at<const L: usize, const I: usize>(&self) -> u8 {
        self.0[L + I]
    }
}

/// Types that may be read from any bytes: every bit pattern is a valid
/// value and they have no padding.
///
/// # Safety
/// Implement only for types of which every bit pattern is valid.
pub unsafe trait Plain: Copy {}

// SAFETY: every bit pattern is a valid `u8` / byte array.
unsafe impl Plain for u8 {}
// SAFETY: as above.
unsafe impl<const N: usize> Plain for [u8; N] {}
// SAFETY: the header structs hold only byte arrays and bytes.
unsafe impl Plain for EthHdr {}
// SAFETY: as above.
unsafe impl Plain for VlanHdr {}
// SAFETY: as above.
unsafe impl Plain for PppoeHdr {}
// SAFETY: as above.
unsafe impl Plain for Ipv4Hdr {}
// SAFETY: as above.
unsafe impl Plain for Ipv6Hdr {}
// SAFETY: as above.
unsafe impl Plain for Ipv6FragHdr {}
// SAFETY: as above.
unsafe impl Plain for UdpHdr {}

/// The host's frame: a byte slice. This is the host reference parser's
/// input; the XDP program has its own `Bytes` over `XdpContext`.
impl Bytes for [u8] {
    type Win<'a> = SliceWindow<'a>;

    #[inline]
    fn frame_len(&self) -> usize {
        self.len()
    }

    #[inline]
    fn window(&self, off: usize, len: usize) -> Option<SliceWindow<'_>> {
        if off > MAX_OFFSET {
            return None;
        }
        self.get(off..off.checked_add(len)?).map(SliceWindow)
    }

    #[inline]
    fn read<T: Plain>(&self, off: usize) -> Option<T> {
        let bytes = self.get(off..off.checked_add(core::mem::size_of::<T>())?)?;
        // SAFETY: `bytes` holds exactly `size_of::<T>()` bytes, the read is
        // unaligned, and `T: Plain` makes any bit pattern a valid `T`.
        Some(unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
    }
}

/// Reads at `off` after checking it against [`MAX_OFFSET`]: the one place
/// the walk touches the frame.
#[inline(always)]
pub(crate) fn at<B: Bytes + ?Sized, T: Plain>(b: &B, off: usize) -> Option<T> {
    if off > MAX_OFFSET {
        return None;
    }
    b.read(off)
}

impl FragKey {
    /// The key of an IPv4 fragment.
    #[inline(always)]
    fn v4(ip: &Ipv4Hdr) -> Self {
        let mut k = FragKey {
            ip_version: 4,
            proto: ip.proto,
            ..FragKey::default()
        };
        k.src[..4].copy_from_slice(&ip.src);
        k.dst[..4].copy_from_slice(&ip.dst);
        k.id[2..].copy_from_slice(&ip.id);
        k
    }
}

/// First fragments of datagrams on port 5351, remembered so that their
/// later fragments (which carry no UDP header) can be told apart.
///
/// Why a table at all: a later fragment has no ports, so without state it
/// is indistinguishable from any other fragment; remembering the reassembly
/// key of first fragments seen on 5351 recognises the rest of the datagram
/// exactly, at the cost of one lookup per later UDP fragment (rare traffic)
/// and one insert per first fragment on 5351. The kernel uses an LRU hash
/// bounded at [`crate::FRAGS_MAX_ENTRIES`]: a flood of first fragments only
/// evicts old keys; it cannot grow memory, and a datagram whose entry was
/// evicted (or whose first fragment arrives last) is passed uncounted like
/// any fragment.
pub trait FragTable {
    /// The entry for `key`, if its first fragment was seen.
    fn lookup(&mut self, key: &FragKey) -> Option<FragEntry>;
    /// Remembers (or refreshes) `key`.
    fn remember(&mut self, key: &FragKey, entry: FragEntry);
}

/// Which fragment the walk is in: `first` with the reassembly key, or a
/// whole datagram (also an atomic fragment, RFC 6946).
///
/// A struct with every field always set rather than an enum with a payload:
/// an enum's unused payload bytes are undefined, and copying them makes LLVM
/// emit reads of registers the verifier knows were never written ("`R3
/// !read_ok`").
#[derive(Clone, Copy)]
struct Frag {
    /// Offset 0, more fragments: holds the UDP header.
    first: bool,
    /// Offset above 0: holds no UDP header.
    later: bool,
    key: FragKey,
}

impl Frag {
    const WHOLE: Frag = Frag {
        first: false,
        later: false,
        key: FragKey {
            src: [0; 16],
            dst: [0; 16],
            id: [0; 4],
            ip_version: 0,
            proto: 0,
            pad: [0; 2],
        },
    };
}

/// What kind of frame the walk found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Found {
    /// Not UDP on port 5351, or not parseable: passed, uncounted.
    Pass,
    /// An IPv6 header chain longer than [`MAX_IPV6_EXT_HEADERS`].
    ChainTooLong,
    /// A UDP datagram to or from port 5351.
    Datagram,
    /// The first fragment of a UDP datagram to or from port 5351: `key` is
    /// what its later fragments carry.
    FirstFragment,
    /// A fragment after the first, of UDP (or of IPv4 in IPv6): its ports
    /// are unknown; the [`FragTable`] may know `key`.
    LaterFragment,
}

/// What the walk found in a frame. Every field is always initialised (see
/// [`Frag`] for why this is not an enum with payloads).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Walk {
    pub found: Found,
    /// For `Datagram` and `FirstFragment`.
    pub dir: Direction,
    /// For `Datagram` and `FirstFragment`.
    pub verdict: Classification,
    /// For `FirstFragment` and `LaterFragment`; zero otherwise.
    pub key: FragKey,
    /// The sender: the innermost IP header's source (for IPv4 in IPv6, the
    /// IPv4 one), IPv4-mapped for IPv4. Read only once the ports say 5351
    /// (or for a later fragment, from its key), so other traffic reads no
    /// address; zero for [`Found::Pass`].
    pub src: [u8; 16],
}

impl Walk {
    const PASS: Walk = Walk {
        found: Found::Pass,
        dir: Direction::FromServer,
        verdict: Classification {
            class: Class::MalformedTruncated,
            oversized: false,
        },
        key: Frag::WHOLE.key,
        src: [0; 16],
    };

    const fn only(found: Found, key: FragKey, src: [u8; 16]) -> Walk {
        Walk {
            found,
            key,
            src,
            ..Walk::PASS
        }
    }
}

/// Walks the frame's headers down to UDP. See the module docs for what is
/// accepted; everything else is [`Found::Pass`].
#[inline(always)]
pub fn walk<B: Bytes + ?Sized>(b: &B, link: Link) -> Walk {
    walk_inner(b, link).unwrap_or(Walk::PASS)
}

/// The walk as one pipeline (link layer, IPv6, IPv4, UDP), each stage
/// with a single call site: inlining a stage twice (IPv4 directly and in
/// IPv6, say) doubles the code and the stack slots, and the BPF stack is
/// 512 bytes.
#[inline(always)]
fn walk_inner<B: Bytes + ?Sized>(b: &B, link: Link) -> Option<Walk> {
    let (ether_type, mut off) = match link {
        Link::RawIp => {
            // No link layer: the version nibble picks the protocol. Two
            // bytes, not one: a 1-byte bounds check at offset 0 compiles to
            // `data < data_end`, which the verifier cannot use (no IP
            // header is shorter anyway).
            let [version, _]: [u8; 2] = at(b, 0)?;
            match version >> 4 {
                4 => (ETH_P_IP, 0),
                6 => (ETH_P_IPV6, 0),
                _ => return None,
            }
        }
        Link::Ethernet => ethernet(b)?,
    };
    let mut frag = Frag::WHOLE;
    let mut ip_off = off;
    let mut ipv6_hdr = ether_type == ETH_P_IPV6;
    let ipv4_next = match ether_type {
        ETH_P_IP => true,
        ETH_P_IPV6 => {
            let (next, after) = ipv6(b, off, &mut frag)?;
            off = after;
            match next {
                IPPROTO_UDP => false,
                // IPv4 in IPv6, one level deep (RFC 2473 / RFC 6333).
                IPPROTO_IPIP => true,
                IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS | IPPROTO_FRAGMENT => {
                    let src = source(b, ip_off, true);
                    return Some(Walk::only(Found::ChainTooLong, Frag::WHOLE.key, src));
                }
                _ => return None,
            }
        }
        _ => return None,
    };
    if frag.later {
        return Some(Walk::only(Found::LaterFragment, frag.key, frag.key.src));
    }
    if ipv4_next {
        ip_off = off;
        ipv6_hdr = false;
        off = ipv4(b, off, &mut frag)?;
        if frag.later {
            let mut a = [0u8; 4];
            a.copy_from_slice(&frag.key.src[..4]);
            return Some(Walk::only(Found::LaterFragment, frag.key, v4_mapped(a)));
        }
    }
    udp(b, off, &frag, IpAt::new(ip_off, ipv6_hdr))
}

/// What the inlined fast path makes of a frame.
#[derive(Clone, Copy)]
enum Fast {
    /// Nothing after the fast path could count it: pass, uncounted.
    NotNatpmp,
    /// An unfragmented UDP datagram on port 5351 right after the IPv4 or
    /// IPv6 fixed header, as counted: its direction and class; `src` is the
    /// sender (IPv4-mapped for IPv4), as [`crate::addr_words`] (in the
    /// answers-only mode, the destination: who got the answer).
    Udp {
        dir: Direction,
        verdict: Classification,
        src: [u64; 2],
    },
    /// Anything else (IPv4 fragments, IPv6 extension headers, IPv4 in
    /// IPv6): the staged walk decides.
    Walk,
}

/// The link layer of the fast path: Ethernet with up to
/// [`MAX_VLAN_TAGS`] tags and PPPoE (both PPP protocol field forms), or
/// none. Returns the network protocol as an `EtherType` and where its
/// header starts; `Err(())` when nothing after it could count the frame.
///
/// The same rules as [`ethernet`], inlined: read two bytes at a time
/// (`Bytes::be16`) and never copy a header to the stack.
#[inline(always)]
fn fast_link<B: Bytes + ?Sized>(b: &B, link: Link) -> Option<Result<(u16, usize), ()>> {
    if let Link::RawIp = link {
        // See `walk_inner` for why two bytes.
        let first = b.window(0, 2)?.be16::<0>();
        return Some(match first >> 12 {
            4 => Ok((ETH_P_IP, 0)),
            6 => Ok((ETH_P_IPV6, 0)),
            _ => Err(()),
        });
    }
    let mut ether_type = b.window(0, EthHdr::LEN)?.be16::<12>();
    let mut off = EthHdr::LEN;
    for _ in 0..MAX_VLAN_TAGS {
        if ether_type != ETH_P_8021Q && ether_type != ETH_P_8021AD {
            break;
        }
        ether_type = b.window(off, VlanHdr::LEN)?.be16::<2>();
        off += VlanHdr::LEN;
    }
    if ether_type == ETH_P_PPP_SES {
        let (next, at) = pppoe(b, off)?;
        return Some(match next {
            PPP_IP => Ok((ETH_P_IP, at)),
            PPP_IPV6 => Ok((ETH_P_IPV6, at)),
            _ => Err(()),
        });
    }
    Some(match ether_type {
        ETH_P_IP | ETH_P_IPV6 => Ok((ether_type, off)),
        _ => Err(()),
    })
}

/// The PPPoE session header at `off` (RFC 2516 §4: version 1, type 1,
/// code 0) and the PPP protocol field after it: returns the protocol and
/// where the PPP payload starts, or protocol 0 for a frame that is not
/// session data. The protocol field is two bytes, or one when PPP
/// protocol-field compression is on (RFC 1661 §6.5: a compressed field is
/// the low byte, which is always odd; an uncompressed one starts with an
/// even byte).
#[inline(always)]
fn pppoe<B: Bytes + ?Sized>(b: &B, off: usize) -> Option<(u16, usize)> {
    let w = b.window(off, PppoeHdr::LEN)?;
    if w.be16::<0>() != u16::from_be_bytes([PppoeHdr::VER_TYPE, 0]) {
        return Some((0, off));
    }
    let at = off + PppoeHdr::LEN - 2;
    let proto = w.be16::<6>();
    Some(if proto & 0x0100 != 0 {
        (proto >> 8, at + 1)
    } else {
        (proto, at + 2)
    })
}

/// The fast path, inlined, for every frame a WAN link mostly carries:
/// untagged, VLAN-tagged (802.1Q, QinQ) and PPPoE Ethernet, or a raw IP
/// link; then IPv4 (any IHL) or IPv6 whose first next header is UDP.
///
/// - A frame that is plainly not NAT-PMP (not IP, not UDP, UDP on neither
///   port 5351) leaves here: nothing after it could count it (the stages
///   would return `None` for each).
/// - An unfragmented UDP datagram on port 5351 goes straight to the
///   classification, inlined.
/// - The rest (fragments, IPv6 extension headers, IPv4 in IPv6) takes the
///   staged walk.
///
/// Why: a BPF-to-BPF call is a `call` and a `ret`, and with the return
/// thunks of Spectre-class mitigations (SRSO "Safe RET" on AMD) each costs
/// tens of nanoseconds; frames on the fast path make none. Each header is
/// checked against the frame's end once ([`Bytes::window`]) and each field
/// read with one load. The staged walk alone gives the same answer for
/// every frame ([`decide_slow`], checked by
/// `walk_tests::fast_path_agrees_with_the_staged_walk` and the fuzz
/// target).
///
/// `None`: too short for the walk as well.
///
/// `ANSWERS`: the egress program's answers-only mode ([`decide_answer`]):
/// only datagrams *from* port 5351 count, and `src` is their destination
/// (who got the answer). `false` compiles to exactly the XDP path.
#[inline(always)]
fn fast_path<B: Bytes + ?Sized, const ANSWERS: bool>(b: &B, link: Link) -> Option<Fast> {
    let Ok((ether_type, off)) = fast_link(b, link)? else {
        return Some(Fast::NotNatpmp);
    };
    if ether_type == ETH_P_IP {
        // The usual header (no options) and the UDP header after it,
        // checked at once.
        if let Some(w) = b.window(off, Ipv4Hdr::LEN + UdpHdr::LEN) {
            if w.be16::<0>() >> 8 == 0x45 {
                return Some(match ipv4_udp(&w) {
                    Err(fast) => fast,
                    Ok(_) => {
                        match udp_verdict_in::<B, true, ANSWERS>(b, w.skip::<20>(), off + 20, false)
                        {
                            None => Fast::NotNatpmp,
                            Some((dir, verdict)) => Fast::Udp {
                                dir,
                                verdict,
                                // RFC 791 §3.1: source at 12, destination at 16.
                                src: v4_mapped_words(if ANSWERS {
                                    w.addr4::<16>()
                                } else {
                                    w.addr4::<12>()
                                }),
                            },
                        }
                    }
                });
            }
        }
        // Any IHL: the fixed header, checked once, then the UDP header.
        let ip = b.window(off, Ipv4Hdr::LEN)?;
        let ihl = match ipv4_udp(&ip) {
            Err(fast) => return Some(fast),
            Ok(ihl) => ihl,
        };
        let Some((dir, verdict)) = udp_verdict::<B, true, ANSWERS>(b, off + ihl, false) else {
            return Some(Fast::NotNatpmp);
        };
        return Some(Fast::Udp {
            dir,
            verdict,
            src: v4_mapped_words(if ANSWERS {
                ip.addr4::<16>()
            } else {
                ip.addr4::<12>()
            }),
        });
    }
    // IPv6: version nibble first, next header at byte 6 (RFC 8200 §3).
    let ip = b.window(off, Ipv6Hdr::LEN);
    let Some(ip) = ip else {
        // Shorter than the fixed header: the staged walk reads only its
        // first 8 bytes before it needs more, and passes it as well.
        return None;
    };
    let version = ip.be16::<0>() >> 12;
    let next = (ip.be16::<6>() >> 8) as u8;
    if version != 6 {
        return Some(Fast::NotNatpmp);
    }
    match next {
        IPPROTO_UDP => {
            let Some((dir, verdict)) =
                udp_verdict::<B, true, ANSWERS>(b, off + Ipv6Hdr::LEN, false)
            else {
                return Some(Fast::NotNatpmp);
            };
            Some(Fast::Udp {
                dir,
                verdict,
                // RFC 8200 §3: source at 8, destination at 24.
                src: if ANSWERS {
                    ip.addr16::<24>()
                } else {
                    ip.addr16::<8>()
                },
            })
        }
        IPPROTO_IPIP | IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS | IPPROTO_FRAGMENT => {
            Some(Fast::Walk)
        }
        _ => Some(Fast::NotNatpmp),
    }
}

/// The answers-only mode's first look (egress: almost nothing leaving an
/// interface is an answer): untagged or single-tagged (802.1Q) Ethernet
/// carrying IPv4 without options or IPv6, at constant offsets, with the
/// UDP source port compared before anything else is read after the version.
/// `Some` when that decides the frame, as [`fast_path`] would for
/// [`decide_answer`] (which counts only [`Fast::Udp`]: a frame this gives
/// up on as [`Fast::NotNatpmp`] may be one the fast path hands to the
/// staged walk, which answers mode does not take either); `None`: the fast
/// path decides (raw IP links, QinQ, PPPoE, IPv4 with options, anything
/// else). `walk_tests::answers_quick_agrees_with_the_fast_path` checks
/// that it changes no answer.
///
/// Why: what decides most egress frames is four bytes, the EtherType and
/// the source port; the fast path checks each header against the frame's
/// end and dispatches on every link-layer protocol first (the egress
/// program is within 5 ns of a bare tc program only without that).
#[inline(always)]
fn answers_quick<B: Bytes + ?Sized>(b: &B, link: Link) -> Option<Fast> {
    // EtherTypes compared as loaded (byte-swapped constants: the same
    // test, `swap_bytes` being its own inverse), so that the BPF code swaps
    // no field: for a `match` on several values LLVM swaps the field.
    const IP: u16 = ETH_P_IP.swap_bytes();
    const IPV6: u16 = ETH_P_IPV6.swap_bytes();
    const VLAN: u16 = ETH_P_8021Q.swap_bytes();
    if let Link::RawIp = link {
        return None;
    }
    // The shortest answer: Ethernet, IPv4 without options, UDP.
    let Some(eth) = b.window(0, EthHdr::LEN + Ipv4Hdr::LEN + UdpHdr::LEN) else {
        // Too short for any answer (tags and IPv6 only make it longer).
        return Some(Fast::NotNatpmp);
    };
    match eth.be16::<12>().swap_bytes() {
        IP => answer_ip::<B, { EthHdr::LEN }, false>(b),
        IPV6 => answer_ip::<B, { EthHdr::LEN }, true>(b),
        VLAN => {
            // Weights for the dispatch: untagged IP first.
            core::hint::cold_path();
            match eth.be16::<16>().swap_bytes() {
                IP => answer_ip::<B, { EthHdr::LEN + VlanHdr::LEN }, false>(b),
                IPV6 => answer_ip::<B, { EthHdr::LEN + VlanHdr::LEN }, true>(b),
                _ => None,
            }
        }
        _ => {
            core::hint::cold_path();
            None
        }
    }
}

/// [`answers_quick`] on the IP header at the constant offset `L`: IPv6 if
/// `V6`, else IPv4 (decided only without options).
#[inline(always)]
fn answer_ip<B: Bytes + ?Sized, const L: usize, const V6: bool>(b: &B) -> Option<Fast> {
    let ip_len = if V6 { Ipv6Hdr::LEN } else { Ipv4Hdr::LEN };
    // From the frame's start: the fields below are then loads at constant
    // offsets from one register.
    let Some(frame) = b.window(0, L + ip_len + UdpHdr::LEN) else {
        // No room for the UDP header after the fixed one: no answer.
        return Some(Fast::NotNatpmp);
    };
    let w = frame.skip::<L>();
    if V6 {
        // RFC 8200 §3: the UDP source port right after the fixed header,
        // then the version nibble and the next header (byte 6).
        if frame.be16_at::<L, 40>() != NATPMP_PORT
            || frame.be16_at::<L, 0>() >> 12 != 6
            || frame.be16_at::<L, 6>() >> 8 != u16::from(IPPROTO_UDP)
        {
            return Some(Fast::NotNatpmp);
        }
        return Some(
            match udp_verdict_in::<B, true, true>(b, w.skip::<40>(), L + 40, false) {
                None => Fast::NotNatpmp,
                Some((dir, verdict)) => Fast::Udp {
                    dir,
                    verdict,
                    // RFC 8200 §3: the destination at 24.
                    src: w.addr16::<24>(),
                },
            },
        );
    }
    if frame.byte_at::<L, 0>() != 0x45 {
        // Options (or not IPv4 at all): the rest of the fast path.
        return None;
    }
    if frame.be16_at::<L, 20>() != NATPMP_PORT {
        return Some(Fast::NotNatpmp);
    }
    Some(match ipv4_udp(&w) {
        Err(_) => Fast::NotNatpmp,
        Ok(_) => match udp_verdict_in::<B, true, true>(b, w.skip::<20>(), L + 20, false) {
            None => Fast::NotNatpmp,
            Some((dir, verdict)) => Fast::Udp {
                dir,
                verdict,
                src: v4_mapped_words(w.addr4::<16>()),
            },
        },
    })
}

/// The checks of the fast path on an IPv4 header (`ip`: a window on at
/// least its 20 fixed bytes): `Ok(ihl)` for an unfragmented UDP datagram,
/// else what the fast path does with the frame.
#[inline(always)]
fn ipv4_udp<W: Window>(ip: &W) -> Result<usize, Fast> {
    let ver_ihl = ip.be16::<0>() >> 8;
    let proto = ip.be16::<8>() & 0xff;
    if ver_ihl >> 4 != 4 || proto != u16::from(IPPROTO_UDP) {
        return Err(Fast::NotNatpmp);
    }
    let ihl = (ver_ihl as usize & 0x0f) * 4;
    if ihl < Ipv4Hdr::LEN {
        return Err(Fast::NotNatpmp);
    }
    // More fragments or an offset: the fragment logic decides.
    if ip.be16::<6>() & 0x3fff != 0 {
        return Err(Fast::Walk);
    }
    Ok(ihl)
}

/// Where the innermost IP header starts and whether it is IPv6, in one
/// word: a BPF function takes at most five arguments (no stack arguments),
/// and `udp` already needs four.
#[derive(Clone, Copy)]
struct IpAt(usize);

impl IpAt {
    #[inline(always)]
    const fn new(off: usize, ipv6: bool) -> IpAt {
        IpAt(off << 1 | ipv6 as usize)
    }
}

/// The source address of the IP header at `ip_off`, IPv4-mapped for IPv4.
#[inline(always)]
fn source<B: Bytes + ?Sized>(b: &B, ip_off: usize, ipv6: bool) -> [u8; 16] {
    if ipv6 {
        // RFC 8200 §3: the source follows 8 bytes of fixed header.
        at::<B, [u8; 16]>(b, ip_off + 8).unwrap_or([0; 16])
    } else {
        // RFC 791 §3.1: the source is at byte 12.
        at::<B, [u8; 4]>(b, ip_off + 12).map_or([0; 16], v4_mapped)
    }
}

/// Ethernet, VLAN tags and PPPoE: returns the network protocol (as an
/// EtherType) and where its header starts.
#[cfg_attr(target_arch = "bpf", inline(never))]
#[cfg_attr(not(target_arch = "bpf"), inline)]
fn ethernet<B: Bytes + ?Sized>(b: &B) -> Option<(u16, usize)> {
    let eth: EthHdr = at(b, 0)?;
    let mut ether_type = eth.ether_type();
    let mut off = EthHdr::LEN;
    // 802.1ad (S-tag) and 802.1Q (C-tag) in any order: some providers tag
    // with 0x8100 twice, others put 0x88A8 inside.
    for _ in 0..MAX_VLAN_TAGS {
        if ether_type != ETH_P_8021Q && ether_type != ETH_P_8021AD {
            break;
        }
        let tag: VlanHdr = at(b, off)?;
        ether_type = tag.ether_type();
        off += VlanHdr::LEN;
    }
    if ether_type == ETH_P_PPP_SES {
        // RFC 2516 §4: version 1, type 1, code 0 (session data); the PPP
        // protocol field follows (RFC 1661 §2).
        let ppp: PppoeHdr = at(b, off)?;
        if ppp.ver_type != PppoeHdr::VER_TYPE || ppp.code != 0 {
            return None;
        }
        // RFC 1661 §6.5: with protocol-field compression the field is one
        // byte, the protocol's low byte, which is odd; uncompressed, its
        // first byte is even.
        let (protocol, len) = if ppp.protocol[0] & 1 != 0 {
            (u16::from(ppp.protocol[0]), PppoeHdr::LEN - 1)
        } else {
            (ppp.protocol(), PppoeHdr::LEN)
        };
        off += len;
        return match protocol {
            PPP_IP => Some((ETH_P_IP, off)),
            PPP_IPV6 => Some((ETH_P_IPV6, off)),
            _ => None,
        };
    }
    Some((ether_type, off))
}

/// IPv4 with any IHL carrying UDP: returns where the UDP header starts, and
/// updates `frag` (a first or later fragment here overrides an enclosing
/// IPv6 fragment's state).
#[cfg_attr(target_arch = "bpf", inline(never))]
#[cfg_attr(not(target_arch = "bpf"), inline)]
fn ipv4<B: Bytes + ?Sized>(b: &B, off: usize, frag: &mut Frag) -> Option<usize> {
    let ip: Ipv4Hdr = at(b, off)?;
    if ip.version() != 4 || ip.proto != IPPROTO_UDP {
        return None;
    }
    let ihl = ip.header_len();
    if ihl < Ipv4Hdr::LEN {
        return None;
    }
    // RFC 791 §3.2: only the fragment at offset 0 holds the UDP header; a
    // later fragment's first bytes are payload and must never be read as
    // ports (xdp-filter does).
    let later = ip.fragment_offset() != 0;
    if later || ip.more_fragments() {
        *frag = Frag {
            first: !later,
            later,
            key: FragKey::v4(&ip),
        };
    }
    Some(off + ihl)
}

/// IPv6 and its extension headers: returns the protocol after the chain
/// (an extension header if the chain is longer than the bound) and where it
/// starts, and sets `frag` from a fragment header.
#[cfg_attr(target_arch = "bpf", inline(never))]
#[cfg_attr(not(target_arch = "bpf"), inline)]
fn ipv6<B: Bytes + ?Sized>(b: &B, off: usize, frag: &mut Frag) -> Option<(u8, usize)> {
    // Version, traffic class, flow label, payload length, next header, hop
    // limit; the addresses are read only for a fragment's key.
    let fixed: [u8; 8] = at(b, off)?;
    if fixed[0] >> 4 != 6 {
        return None;
    }
    let addrs = off + 8;
    let mut next = fixed[6];
    let mut off = off + Ipv6Hdr::LEN;
    let mut fragment: Option<Ipv6FragHdr> = None;
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        match next {
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS => {
                // RFC 8200 §4.3-4.6: next header, length in 8-octet units
                // not counting the first 8.
                let h: [u8; 2] = at(b, off)?;
                next = h[0];
                off += (h[1] as usize + 1) * 8;
            }
            IPPROTO_FRAGMENT => {
                let h: Ipv6FragHdr = at(b, off)?;
                next = h.next_header;
                off += Ipv6FragHdr::LEN;
                fragment = Some(h);
                if h.fragment_offset() != 0 {
                    // The rest is payload of a later fragment.
                    break;
                }
            }
            _ => break,
        }
    }
    if let Some(h) = fragment {
        let later = h.fragment_offset() != 0;
        // M clear at offset 0 is an atomic fragment (RFC 6946): a whole
        // datagram.
        if later || h.more_fragments() {
            if later && next != IPPROTO_UDP && next != IPPROTO_IPIP {
                return None;
            }
            // Straight into the key: copies of 16-byte arrays cost stack.
            frag.first = !later;
            frag.later = later;
            frag.key.src = at(b, addrs)?;
            frag.key.dst = at(b, addrs + 16)?;
            frag.key.id = h.id;
            frag.key.ip_version = 6;
            frag.key.proto = next;
        }
    }
    Some((next, off))
}

/// The UDP header at `off`: ports, then the shared classifier. The staged
/// walk's last stage (its own BPF function); the fast path inlines the same
/// [`udp_verdict`].
#[inline(always)]
fn udp<B: Bytes + ?Sized>(b: &B, off: usize, frag: &Frag, ip: IpAt) -> Option<Walk> {
    let (dir, verdict) = udp_verdict::<B, false, false>(b, off, frag.first)?;
    Some(Walk {
        found: if frag.first {
            Found::FirstFragment
        } else {
            Found::Datagram
        },
        dir,
        verdict,
        key: frag.key,
        src: source(b, ip.0 >> 1, ip.0 & 1 != 0),
    })
}

/// The UDP header at `off` (of a whole datagram, or of a first fragment if
/// `first`): which way it goes, and its class. `None` when neither port is
/// 5351 or the header is not in the frame. `FAST`: for the fast path (a
/// whole datagram), with the classification inlined too; the staged walk
/// calls one shared copy of it (inlined there, the verifier would walk the
/// classification's branches once more for every path into the stage).
#[inline(always)]
fn udp_verdict<B: Bytes + ?Sized, const FAST: bool, const ANSWERS: bool>(
    b: &B,
    off: usize,
    first: bool,
) -> Option<(Direction, Classification)> {
    // The whole 8-byte header must be in the frame.
    udp_verdict_in::<B, FAST, ANSWERS>(b, b.window(off, UdpHdr::LEN)?, off, first)
}

/// [`udp_verdict`] on a UDP header at `off` that `h` holds (checked).
/// `ANSWERS`: only a datagram from port 5351 is NAT-PMP/PCP (an answer).
#[inline(always)]
fn udp_verdict_in<B: Bytes + ?Sized, const FAST: bool, const ANSWERS: bool>(
    b: &B,
    h: B::Win<'_>,
    off: usize,
    first: bool,
) -> Option<(Direction, Classification)> {
    // Each port is compared as loaded (the compiler swaps the constant,
    // not the field), before anything else is read: most UDP is not
    // NAT-PMP.
    let dir = if ANSWERS {
        if h.be16::<0>() != NATPMP_PORT {
            return None;
        }
        Direction::FromServer
    } else {
        direction(h.be16::<0>(), h.be16::<2>())?
    };
    let length = h.be16::<4>();
    // The version and opcode bytes, where the frame has them; the
    // classifiers ignore them when the lengths say they are absent.
    let first_two = b.window(off, UdpHdr::LEN + 2).map_or(0, |w| w.be16::<8>());
    // The header is in the frame, so `off + 8 <= frame_len`; a frame is
    // far shorter than 4 GiB (XDP: at most a page or a few).
    #[expect(clippy::cast_possible_truncation, reason = "frames are short")]
    let available = (b.frame_len() - off) as u32;
    let [version, opcode] = first_two.to_be_bytes();
    let verdict = if FAST {
        classify_udp_inline(length, available, version, opcode)
    } else if first {
        classify_first_fragment(length, available, version, opcode)
    } else {
        classify_udp(length, available, version, opcode)
    };
    Some((dir, verdict))
}

/// Source addresses that drop mode lets through: the operator's allowlist
/// of CIDR prefixes.
///
/// The kernel implements it with an LPM trie keyed by 16-byte addresses
/// (IPv4 as IPv4-mapped IPv6, `::ffff:a.b.c.d`, so one trie holds both
/// families); the host with a list of [`Prefix`]es
/// ([`crate::reference::HostAllow`]). [`decide`] asks it only for a datagram
/// that drop mode would drop, so monitor mode and answers from 5351 never
/// look it up.
pub trait Allowlist {
    /// Whether `src` (16 bytes, IPv4-mapped for IPv4, as the two words of
    /// [`crate::addr_words`]) is inside a listed prefix.
    fn allows(&mut self, src: [u64; 2]) -> bool;
}

/// `a.b.c.d` as the IPv4-mapped IPv6 address `::ffff:a.b.c.d` (RFC 4291
/// §2.5.5.2): how IPv4 sources are keyed in the source and allowlist maps.
#[inline(always)]
pub const fn v4_mapped(a: [u8; 4]) -> [u8; 16] {
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a[0], a[1], a[2], a[3],
    ]
}

/// A CIDR prefix over 16-byte addresses (IPv4 prefixes as IPv4-mapped, with
/// 96 added to their length): an allowlist entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Prefix {
    /// Length in bits, 0..=128.
    pub len: u32,
    /// The address; bits beyond `len` are zero.
    pub addr: [u8; 16],
}

impl Prefix {
    /// `addr/len` with the host bits cleared (`len` clamped to 128).
    pub const fn new(addr: [u8; 16], len: u32) -> Prefix {
        let len = if len > 128 { 128 } else { len };
        let mut out = [0u8; 16];
        let mut i = 0u32;
        while i < 16 {
            let bits = len.saturating_sub(i * 8);
            let mask: u8 = if bits >= 8 { 0xff } else { !(0xffu8 >> bits) };
            out[i as usize] = addr[i as usize] & mask;
            i += 1;
        }
        Prefix { len, addr: out }
    }

    /// Whether `a` lies inside this prefix.
    pub const fn contains(&self, a: &[u8; 16]) -> bool {
        let p = Prefix::new(*a, self.len);
        let mut i = 0;
        while i < 16 {
            if p.addr[i] != self.addr[i] {
                return false;
            }
            i += 1;
        }
        true
    }
}

/// What to do with a frame: which counter moves, and whether it is dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The class counted, or `None` when no counter moves.
    pub class: Option<Class>,
    /// The oversized counter moves too.
    pub oversized: bool,
    /// `XDP_DROP` rather than `XDP_PASS`.
    pub drop: bool,
    /// Bytes counted: the whole frame as XDP sees it (0 when uncounted).
    pub bytes: u64,
    /// The sender (innermost IP source; IPv4-mapped for IPv4) as the two
    /// words of [`crate::addr_words`] ([`Outcome::source`] gives its bytes);
    /// zero when uncounted.
    pub src: [u64; 2],
    /// Drop mode would have dropped it, but the allowlist let it through.
    pub allowed: bool,
}

impl Outcome {
    /// Not NAT-PMP/PCP: passed, nothing counted.
    pub const PASS: Outcome = Outcome {
        class: None,
        oversized: false,
        drop: false,
        bytes: 0,
        src: [0; 2],
        allowed: false,
    };

    /// The sender's 16 bytes.
    pub const fn source(&self) -> [u8; 16] {
        words_addr(self.src)
    }
}

/// Defined here rather than in [`crate::maps`], next to [`Outcome`], so
/// that the map types do not depend on the walk.
impl ClassCounters {
    /// Counts a frame's [`Outcome`] in these counters (the entry of
    /// `outcome.class`, which the caller picks): the one place verdicts are
    /// counted, in the XDP program and on the host alike. Passed or dropped
    /// packets and bytes, and the oversized packets.
    #[inline(always)]
    pub fn count(&mut self, outcome: &Outcome) {
        if outcome.drop {
            self.dropped_packets += 1;
            self.dropped_bytes += outcome.bytes;
        } else {
            self.passed_packets += 1;
            self.passed_bytes += outcome.bytes;
        }
        if outcome.oversized {
            self.oversized_packets += 1;
        }
    }
}

/// A datagram (or fragment) the decision counts: what the counters and the
/// policy need of it (see [`staged_counted`] and [`apply`]).
#[derive(Clone, Copy)]
pub struct Counted {
    class: Class,
    oversized: bool,
    dir: Direction,
    /// As [`crate::addr_words`]: two registers, not sixteen bytes.
    src: [u64; 2],
}

/// Walks the frame and applies `config`: the whole per-frame decision, the
/// same in the kernel and on the host.
///
/// Drop mode drops datagrams to port 5351 and the later fragments of such
/// datagrams, unless their source is in the [`Allowlist`]; answers from
/// 5351, frames it cannot see into (over-long IPv6 chains) and everything
/// else pass.
///
/// The inlined fast path (see `fast_path`) answers for the frames a WAN
/// mostly carries; the rest take the staged walk ([`decide_slow`]). The XDP
/// program calls the two halves itself, [`decide_fast`] inline and
/// [`decide_slow`] in a function of its own, so that the fast path's
/// outcome stays in registers.
#[inline(always)]
pub fn decide<B: Bytes + ?Sized, F: FragTable, A: Allowlist>(
    b: &B,
    config: &Config,
    frags: &mut F,
    allow: &mut A,
) -> Outcome {
    match decide_fast(b, config, allow) {
        FastDecision::Pass => Outcome::PASS,
        FastDecision::Counted(o) => o,
        FastDecision::Slow => b.afresh(|b| decide_slow(b, config, frags, allow)),
    }
}

/// What the fast path decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FastDecision {
    /// Not NAT-PMP/PCP: passed, uncounted ([`Outcome`]'s `PASS`).
    Pass,
    /// A datagram the fast path counted.
    Counted(Outcome),
    /// The staged walk decides ([`decide_slow`]).
    Slow,
}

/// The fast path's decision. The XDP program returns `XDP_PASS` for
/// [`FastDecision::Pass`] at once: no outcome is built for the traffic a
/// WAN mostly carries.
#[inline(always)]
pub fn decide_fast<B: Bytes + ?Sized, A: Allowlist>(
    b: &B,
    config: &Config,
    allow: &mut A,
) -> FastDecision {
    let (dir, verdict, src) = match fast_path::<B, false>(b, config.link()) {
        None | Some(Fast::NotNatpmp) => return FastDecision::Pass,
        Some(Fast::Walk) => return FastDecision::Slow,
        Some(Fast::Udp { dir, verdict, src }) => (dir, verdict, src),
    };
    let counted = Counted {
        class: verdict.class,
        oversized: verdict.oversized,
        dir,
        src,
    };
    FastDecision::Counted(outcome(b.frame_len() as u64, config, Some(counted), allow))
}

/// The decision by the staged walk alone, for frames the fast path hands
/// on (and, on the host, for any frame: the tests and the fuzz target check
/// that both paths give the same answer).
#[inline]
pub fn decide_slow<B: Bytes + ?Sized, F: FragTable, A: Allowlist>(
    b: &B,
    config: &Config,
    frags: &mut F,
    allow: &mut A,
) -> Outcome {
    let counted = staged_counted(b, config.link(), frags);
    apply(b.frame_len() as u64, config, counted.as_ref(), allow)
}

/// The policy applied to what the staged walk counted (`len`: the frame's
/// length), for the XDP program, which calls it in a function of its own,
/// apart from [`staged_counted`], so that the two need not share one stack
/// frame.
#[inline(always)]
pub fn apply<A: Allowlist>(
    len: u64,
    config: &Config,
    counted: Option<&Counted>,
    allow: &mut A,
) -> Outcome {
    outcome(len, config, counted.copied(), allow)
}

/// The policy applied to what was counted: one exit for every counted
/// frame, so the allowlist lookup is inlined once. By value: the fast path
/// keeps what it counted in registers (a reference makes LLVM spill it).
#[inline(always)]
fn outcome<A: Allowlist>(
    len: u64,
    config: &Config,
    counted: Option<Counted>,
    allow: &mut A,
) -> Outcome {
    let Some(c) = counted else {
        return Outcome::PASS;
    };
    let policy = drops(config, c.dir);
    let allowed = policy && allow.allows(c.src);
    Outcome {
        class: Some(c.class),
        oversized: c.oversized,
        drop: policy && !allowed,
        bytes: len,
        src: c.src,
        allowed,
    }
}

/// The staged walk and the fragment table: what is counted of a frame the
/// fast path did not take ([`decide_slow`] without the policy, which
/// [`apply`] adds). Its own BPF function: its `Walk` and fragment key live
/// in its own stack frame, not in the entry function's.
#[cfg_attr(target_arch = "bpf", inline(never))]
#[cfg_attr(not(target_arch = "bpf"), inline)]
pub fn staged_counted<B: Bytes + ?Sized, F: FragTable>(
    b: &B,
    link: Link,
    frags: &mut F,
) -> Option<Counted> {
    let w = walk_inner(b, link)?;
    let (class, oversized, dir) = match w.found {
        Found::Pass => return None,
        Found::ChainTooLong => (Class::Ipv6ExtChainTooLong, false, Direction::FromServer),
        Found::Datagram => (w.verdict.class, w.verdict.oversized, w.dir),
        Found::FirstFragment => {
            frags.remember(
                &w.key,
                FragEntry {
                    to_server: u32::from(w.dir == Direction::ToServer),
                    pad: 0,
                    src: addr_words(&w.src),
                },
            );
            (w.verdict.class, w.verdict.oversized, w.dir)
        }
        // A later fragment is its datagram's: counted for the first
        // fragment's sender, which the allowlist judges (for IPv4 in IPv6
        // the inner IPv4 sender, which this fragment does not carry).
        Found::LaterFragment => {
            let e = frags.lookup(&w.key)?;
            let dir = if e.to_server != 0 {
                Direction::ToServer
            } else {
                Direction::FromServer
            };
            return Some(Counted {
                class: Class::FragmentNonfirst,
                oversized: false,
                dir,
                src: e.src,
            });
        }
    };
    Some(Counted {
        class,
        oversized,
        dir,
        src: addr_words(&w.src),
    })
}

/// An answer leaving the router: a UDP datagram *from* port 5351, as the
/// egress program counts it ([`decide_answer`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Answer {
    /// Its class, by the shared classifier (responses have classes of
    /// their own; anything else sent from 5351 keeps its class too).
    pub class: Class,
    /// Longer than its opcode needs.
    pub oversized: bool,
    /// Frame bytes, as the program sees the frame.
    pub bytes: u64,
    /// Its destination (who got the answer), IPv4-mapped for IPv4, as the
    /// two words of [`crate::addr_words`].
    pub dst: [u64; 2],
}

impl Answer {
    /// The answer as an [`Outcome`] (passed, never dropped): what
    /// [`ClassCounters::count`] takes, so answers are counted by the very
    /// function that counts the XDP path's verdicts. `src` is left zero:
    /// the destination is in [`Answer::dst`].
    #[inline(always)]
    pub const fn outcome(&self) -> Outcome {
        Outcome {
            class: Some(self.class),
            oversized: self.oversized,
            drop: false,
            bytes: self.bytes,
            src: [0; 2],
            allowed: false,
        }
    }

    /// The destination's 16 bytes.
    pub const fn destination(&self) -> [u8; 16] {
        words_addr(self.dst)
    }
}

/// The egress program's decision: the answers-only mode of the fast path
/// (`fast_path::<_, true>`, the same walk and classifier as the XDP path),
/// after a quick look that decides most frames from four bytes
/// (`answers_quick`, which gives the same answers).
/// `Some` for an unfragmented UDP datagram from port 5351 right after the
/// IPv4 or IPv6 fixed header; `None` (pass, uncounted) for everything else.
///
/// Frames the fast path hands to the staged walk (fragments, IPv6
/// extension headers, IPv4 in IPv6) are not counted here: a NAT-PMP/PCP
/// server's answers are at most 1,100 bytes (RFC 6887 §7), sent by the
/// router's own stack unfragmented and without extension headers, so the
/// staged walk (a BPF-to-BPF call, a fragment table) would cost every
/// egress frame for nothing a real server sends.
#[inline(always)]
pub fn decide_answer<B: Bytes + ?Sized>(b: &B, link: Link) -> Option<Answer> {
    let fast = match answers_quick(b, link) {
        Some(decided) => Some(decided),
        None => fast_path::<B, true>(b, link),
    };
    answer_of(b, fast)
}

/// [`decide_answer`] without [`answers_quick`]: the fast path alone, what
/// the quick look must agree with (`walk_tests`).
#[cfg(test)]
pub(crate) fn decide_answer_by_the_fast_path<B: Bytes + ?Sized>(
    b: &B,
    link: Link,
) -> Option<Answer> {
    answer_of(b, fast_path::<B, true>(b, link))
}

/// The answer the fast path's answers-only mode found, if any.
#[inline(always)]
fn answer_of<B: Bytes + ?Sized>(b: &B, fast: Option<Fast>) -> Option<Answer> {
    match fast {
        Some(Fast::Udp { verdict, src, .. }) => Some(Answer {
            class: verdict.class,
            oversized: verdict.oversized,
            bytes: b.frame_len() as u64,
            dst: src,
        }),
        _ => None,
    }
}
