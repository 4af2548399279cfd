//! Exposure: whether this router answered NAT-PMP/PCP on an interface, in
//! the one line every view shows (the live table's header, the JSON
//! `exposure` field, the TUI), and the `answered` JSON object.
//!
//! RFC 6886 §3 (and RFC 6887 for PCP) forbid a gateway to answer on its
//! external interface: an answer leaks the external address and may accept
//! a mapping from the Internet. Any answer counted by the egress program is
//! therefore reported, in monitor mode as exposure, in drop mode as a sign
//! that requests reach the server another way (docs/exposure.md).

use std::time::SystemTime;

use serde_json::{json, Map, Value};

use crate::stats::answered::Answered;

/// The exposure line of `iface`, or `None` when it answered no one.
///
/// `EXPOSED: this router answered 42 NAT-PMP/PCP requests on wan0 (last to
/// 198.18.1.2, 12 s ago)`; in drop mode (`drop_mode`) the line says that
/// the requests came another way, since drop mode stops them at the WAN.
pub fn exposure_line(
    iface: &str,
    answered: &Answered,
    drop_mode: bool,
    now: SystemTime,
) -> Option<String> {
    if !answered.exposed() {
        return None;
    }
    let n = answered.packets();
    let plural = if n == 1 { "request" } else { "requests" };
    let last = answered.last.as_ref().map_or(String::new(), |l| {
        let ago = now.duration_since(l.at).unwrap_or_default().as_secs();
        format!(" (last to {}, {ago} s ago)", l.addr)
    });
    let mut line =
        format!("EXPOSED: this router answered {n} NAT-PMP/PCP {plural} on {iface}{last}");
    if drop_mode {
        line.push_str(
            "; drop mode is on, so these requests did not come through this filter (another \
             path, or before drop mode was set)",
        );
    }
    Some(line)
}

/// The `answered` object of the JSON report: totals, every answered class
/// (packets, bytes), the top destinations and the last answer.
pub fn answered_json(answered: &Answered, now: SystemTime) -> Value {
    let total = answered.total();
    let mut classes = Map::new();
    for (class, c) in answered.answered_classes() {
        classes.insert(
            class.name().to_owned(),
            json!({"packets": c.packets(), "bytes": c.bytes()}),
        );
    }
    let top: Vec<Value> = answered
        .top
        .iter()
        .map(|d| {
            json!({
                "address": d.addr.to_string(),
                "packets": d.packets,
                "bytes": d.bytes,
                "last_seen": humantime::format_rfc3339_millis(d.last_seen).to_string(),
            })
        })
        .collect();
    let last = answered.last.as_ref().map_or(Value::Null, |l| {
        json!({
            "address": l.addr.to_string(),
            "class": l.class.name(),
            "time": humantime::format_rfc3339_millis(l.at).to_string(),
            "ago_secs": now.duration_since(l.at).unwrap_or_default().as_secs(),
        })
    });
    json!({
        "packets": total.packets(),
        "bytes": total.bytes(),
        "classes": Value::Object(classes),
        "destinations": answered.destinations,
        "top_destinations": top,
        "last": last,
    })
}

#[cfg(test)]
mod tests {
    use std::{net::IpAddr, time::Duration};

    use nat_pmp_ebpf_common::Class;

    use super::*;
    use crate::stats::{
        answered::{Destination, LastAnswer},
        counters::Snapshot,
    };

    fn answered(n: u64) -> Answered {
        let mut snap = Snapshot::default();
        let c = &mut snap.classes[Class::NatpmpExternalAddressResponse.index() as usize];
        c.passed_packets = n;
        c.passed_bytes = n * 54;
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
        let addr = IpAddr::from([198, 18, 1, 2]);
        Answered::new(
            snap,
            vec![Destination {
                addr,
                packets: n,
                bytes: n * 54,
                last_seen: at,
            }],
            (n > 0).then_some(LastAnswer {
                addr,
                class: Class::NatpmpExternalAddressResponse,
                at,
            }),
        )
    }

    #[test]
    fn the_line() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(112);
        assert_eq!(exposure_line("wan0", &answered(0), false, now), None);
        assert_eq!(
            exposure_line("wan0", &answered(42), false, now).as_deref(),
            Some(
                "EXPOSED: this router answered 42 NAT-PMP/PCP requests on wan0 (last to \
                 198.18.1.2, 12 s ago)"
            )
        );
        let drop = exposure_line("wan0", &answered(1), true, now).unwrap_or_default();
        assert!(drop.starts_with("EXPOSED: this router answered 1 NAT-PMP/PCP request on wan0"));
        assert!(drop.contains("drop mode is on"), "{drop}");
        let v = answered_json(&answered(3), now);
        assert_eq!(v["packets"], 3);
        assert_eq!(
            v["classes"]["natpmp_external_address_response"]["bytes"],
            162
        );
        assert_eq!(v["last"]["ago_secs"], 12);
    }
}
