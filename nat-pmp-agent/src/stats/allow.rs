//! The allowlist's prefixes as people write them: `198.51.100.0/24`,
//! `2001:db8::/32`, or a bare address (a /32 or /128).
//!
//! Contract: [`parse`] accepts exactly one IPv4 or IPv6 CIDR prefix; host
//! bits are cleared (`198.51.100.7/24` is `198.51.100.0/24`), as the LPM
//! trie matches on the prefix bits only. IPv4 prefixes are stored
//! IPv4-mapped with 96 added to their length ([`nat_pmp_ebpf_common::Prefix`]);
//! [`show`] turns them back into the form they were written in.

use std::net::{IpAddr, Ipv6Addr};

use anyhow::{bail, Context as _, Result};
use nat_pmp_ebpf_common::{v4_mapped, Prefix};

use super::sources::addr_of;

/// Parses `ADDR/LEN` or `ADDR`.
pub fn parse(s: &str) -> Result<Prefix> {
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let addr: IpAddr = addr.trim().parse().with_context(|| {
        format!("{s:?} is not a prefix: expected e.g. 198.51.100.0/24 or 2001:db8::/32")
    })?;
    let (bytes, max, offset) = match addr {
        IpAddr::V4(a) => (v4_mapped(a.octets()), 32, 96),
        IpAddr::V6(a) => (a.octets(), 128, 0),
    };
    let len: u32 = match len {
        Some(l) => l
            .trim()
            .parse()
            .with_context(|| format!("{s:?}: the prefix length must be a number"))?,
        None => max,
    };
    if len > max {
        bail!(
            "{s:?}: an IPv{} prefix is at most /{max}",
            if max == 32 { 4 } else { 6 }
        );
    }
    Ok(Prefix::new(bytes, len + offset))
}

/// `p` as CIDR text (IPv4 for IPv4-mapped prefixes of /96 or longer).
pub fn show(p: &Prefix) -> String {
    match addr_of(p.addr) {
        IpAddr::V4(a) if p.len >= 96 => format!("{a}/{}", p.len - 96),
        _ => format!("{}/{}", Ipv6Addr::from(p.addr), p.len),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_round_trip_and_lose_their_host_bits() {
        for (text, shown) in [
            ("198.51.100.0/24", "198.51.100.0/24"),
            ("198.51.100.7/24", "198.51.100.0/24"),
            ("203.0.113.9", "203.0.113.9/32"),
            ("0.0.0.0/0", "0.0.0.0/0"),
            ("2001:db8::/32", "2001:db8::/32"),
            ("2001:db8:1:2::5/64", "2001:db8:1:2::/64"),
            ("::/0", "::/0"),
        ] {
            assert_eq!(show(&parse(text).expect(text)), shown, "{text}");
        }
        assert!(parse("198.51.100.0/33").is_err());
        assert!(parse("2001:db8::/129").is_err());
        assert!(parse("example.org/8").is_err());
        assert!(parse("10.0.0.0/x").is_err());
    }
}
