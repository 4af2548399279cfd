//! The sample of dropped datagrams the XDP program logs through aya-log
//! (`dropped class N from ADDR`, at most `DROP_LOG_PER_SEC` per instance
//! per second), turned into readable lines for the `log` crate.
//!
//! Contract: [`DropLogger`] wraps any `log::Log`; a record from the program
//! is passed on with the class index replaced by its name
//! ([`nat_pmp_ebpf_common::Class::name`]) and an IPv4-mapped source written
//! as IPv4 (the kernel logs fixed-size values only: a string argument costs
//! the verifier far more). Records are read from the program's ring buffer
//! when [`aya_log::EbpfLogger::flush`] is called (each report interval).

use std::net::Ipv6Addr;

use log::{Log, Metadata, Record};
use nat_pmp_ebpf_common::Class;

use crate::stats::sources::addr_of;

/// Target of the program's records (the eBPF crate's module path).
pub const TARGET: &str = "nat_pmp_ebpf";

/// A `log::Log` that rewrites the program's drop records for `inner`.
pub struct DropLogger<T: Log> {
    pub inner: T,
}

/// `dropped class N from ADDR` as `dropped CLASS from ADDR`; anything else
/// unchanged.
pub fn rewrite(msg: &str) -> String {
    let parsed = msg
        .strip_prefix("dropped class ")
        .and_then(|rest| rest.split_once(" from "))
        .and_then(|(n, addr)| {
            let class = Class::from_index(n.parse().ok()?)?;
            let addr: Ipv6Addr = addr.parse().ok()?;
            Some(format!(
                "dropped {} from {}",
                class.name(),
                addr_of(addr.octets())
            ))
        });
    parsed.unwrap_or_else(|| msg.to_owned())
}

impl<T: Log> Log for DropLogger<T> {
    fn enabled(&self, metadata: &Metadata) -> bool {
        self.inner.enabled(metadata)
    }

    fn log(&self, record: &Record) {
        let msg = rewrite(&record.args().to_string());
        self.inner.log(
            &Record::builder()
                .args(format_args!("{msg}"))
                .level(record.level())
                .target(record.target())
                .module_path(record.module_path())
                .file(record.file())
                .line(record.line())
                .build(),
        );
    }

    fn flush(&self) {
        self.inner.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_index_and_mapped_source_become_readable() {
        assert_eq!(
            rewrite("dropped class 0 from ::ffff:198.18.0.2"),
            "dropped natpmp_external_address_request from 198.18.0.2"
        );
        assert_eq!(
            rewrite("dropped class 10 from 2001:db8::2"),
            format!(
                "dropped {} from 2001:db8::2",
                Class::from_index(10).expect("a class").name()
            )
        );
        assert_eq!(rewrite("something else"), "something else");
    }
}
