//! XDP actions (`enum xdp_action` of `linux/bpf.h`), as
//! `BPF_PROG_TEST_RUN` returns them.

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;

/// The action's name without its `XDP_` prefix, `?` for an unknown one.
pub fn action_name(action: u64) -> &'static str {
    match action {
        0 => "ABORTED",
        1 => "DROP",
        2 => "PASS",
        3 => "TX",
        4 => "REDIRECT",
        _ => "?",
    }
}
