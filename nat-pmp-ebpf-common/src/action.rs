//! The XDP program's return values (`enum xdp_action` in
//! `include/uapi/linux/bpf.h`), for user space: what `BPF_PROG_TEST_RUN`
//! returns and the trace records. The XDP program asserts at compile time
//! that they equal aya-ebpf's `xdp_action` constants.

/// The program failed; the frame is dropped (with a trace point).
pub const XDP_ABORTED: u32 = 0;
/// The frame is dropped.
pub const XDP_DROP: u32 = 1;
/// The frame goes on to the network stack.
pub const XDP_PASS: u32 = 2;
/// The frame is sent back out of the interface it came in on.
pub const XDP_TX: u32 = 3;
/// The frame is redirected (another interface, CPU or socket).
pub const XDP_REDIRECT: u32 = 4;

/// The action's name without the `XDP_` prefix (`"PASS"`), or `None` for
/// a value the kernel does not define.
pub const fn name(action: u32) -> Option<&'static str> {
    match action {
        XDP_ABORTED => Some("ABORTED"),
        XDP_DROP => Some("DROP"),
        XDP_PASS => Some("PASS"),
        XDP_TX => Some("TX"),
        XDP_REDIRECT => Some("REDIRECT"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_action_has_a_name() {
        let all = [XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX, XDP_REDIRECT];
        assert_eq!(all, [0, 1, 2, 3, 4]);
        assert_eq!(
            all.map(name).map(Option::unwrap_or_default),
            ["ABORTED", "DROP", "PASS", "TX", "REDIRECT"]
        );
        assert_eq!(name(5), None);
    }
}
