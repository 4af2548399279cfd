//! XDP actions as `BPF_PROG_TEST_RUN` returns them: the one definition in
//! `nat-pmp-ebpf-common` (`action`), and their names for reports.

pub use nat_pmp_ebpf_common::action::{XDP_DROP, XDP_PASS};

/// The action's name without its `XDP_` prefix, `?` for an unknown one
/// (the interpreter returns the program's 64-bit `r0`).
pub fn action_name(action: u64) -> &'static str {
    u32::try_from(action)
        .ok()
        .and_then(nat_pmp_ebpf_common::action::name)
        .unwrap_or("?")
}
