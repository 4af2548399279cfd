//! The embedded XDP object: loading it into the kernel (where it is
//! verified) and finding its program, with errors that say what to do.

use anyhow::{anyhow, Context as _, Result};
use aya::{
    programs::{SchedClassifier, Xdp},
    Ebpf, EbpfLoader,
};
use nat_pmp_ebpf_common::{
    Layout, EGRESS_PROGRAM_NAME, LAYOUT_VERSION, PROGRAM_NAME, TRACE_GLOBAL,
};

use crate::net::sys::has_errno;

/// The compiled XDP object, built by `build.rs` from the `nat-pmp-ebpf` crate.
pub static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/nat-pmp-ebpf"));

/// Test-only (`--features test-layouts`): the object of the previous
/// pinned layout (`nat-pmp-ebpf --features previous-layout`), loaded
/// instead of [`EBPF_OBJECT`] when [`PREVIOUS_LAYOUT_ENV`] is set: the
/// upgrade tests pin an instance as an older agent would have.
#[cfg(feature = "test-layouts")]
static EBPF_OBJECT_PREVIOUS: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/previous/nat-pmp-ebpf"));

/// Test-only: set, the agent (built with `test-layouts`) loads the object
/// of the previous layout and stamps its pins with that layout.
#[cfg(feature = "test-layouts")]
pub const PREVIOUS_LAYOUT_ENV: &str = "NAT_PMP_TEST_PREVIOUS_LAYOUT";

/// The object this agent loads, and the layout it pins it with.
fn chosen() -> (&'static [u8], Layout) {
    #[cfg(feature = "test-layouts")]
    if std::env::var_os(PREVIOUS_LAYOUT_ENV).is_some() {
        return (
            EBPF_OBJECT_PREVIOUS,
            Layout::new(
                LAYOUT_VERSION - 1,
                concat!(env!("CARGO_PKG_VERSION"), "+previous-layout"),
            ),
        );
    }
    (
        EBPF_OBJECT,
        Layout::new(LAYOUT_VERSION, env!("CARGO_PKG_VERSION")),
    )
}

/// The layout (and agent version) the instances this agent loads carry.
pub(crate) fn layout() -> Layout {
    chosen().1
}

/// What to do when the kernel says EPERM.
pub(crate) const PRIVILEGE_HINT: &str = "loading XDP programs needs root, or CAP_BPF + \
     CAP_NET_ADMIN (+ CAP_PERFMON); run it with sudo";

/// The XDP program of an object: `program` is `ebpf.program(PROGRAM_NAME)`
/// or `ebpf.program_mut(PROGRAM_NAME)` (the one lookup for both).
pub(crate) fn xdp<P, X>(program: Option<P>) -> Result<X>
where
    P: TryInto<X>,
    P::Error: std::error::Error + Send + Sync + 'static,
{
    typed(program, PROGRAM_NAME, "an XDP")
}

/// The tc egress program of an object (`ebpf.program(EGRESS_PROGRAM_NAME)`
/// or its `_mut`).
pub(crate) fn egress<P, X>(program: Option<P>) -> Result<X>
where
    P: TryInto<X>,
    P::Error: std::error::Error + Send + Sync + 'static,
{
    typed(program, EGRESS_PROGRAM_NAME, "a tc (sched_cls)")
}

/// `program` (the object's program `name`) as the aya type `X`.
fn typed<P, X>(program: Option<P>, name: &str, kind: &str) -> Result<X>
where
    P: TryInto<X>,
    P::Error: std::error::Error + Send + Sync + 'static,
{
    program
        .with_context(|| format!("the eBPF object has no program named {name}"))?
        .try_into()
        .with_context(|| format!("the program {name} in the eBPF object is not {kind} program"))
}

/// Wraps a load error with what was done and a hint: the privilege hint when
/// the kernel said EPERM, `otherwise` else.
fn privilege_or<E>(e: E, what: &str, otherwise: &str) -> anyhow::Error
where
    E: std::error::Error + Send + Sync + 'static,
{
    let hint = if has_errno(&e, libc::EPERM) {
        PRIVILEGE_HINT
    } else {
        otherwise
    };
    anyhow!(e).context(format!("{what}: {hint}"))
}

/// Loads the embedded object, its XDP program and its tc egress program
/// into the kernel (the
/// verifier runs here), with tracing compiled in or out (`traced`: a
/// read-only global the verifier treats as a constant).
pub(crate) fn load(traced: bool) -> Result<Ebpf> {
    let trace_on = u32::from(traced);
    let mut ebpf = EbpfLoader::new()
        .override_global(TRACE_GLOBAL, &trace_on, true)
        .load(chosen().0)
        .map_err(|e| {
            privilege_or(
                e,
                "loading the embedded XDP object",
                "the kernel refused the maps; it needs BPF support (CONFIG_BPF_SYSCALL)",
            )
        })?;
    // The verifier's refusal, of either program.
    let rejected = |e, what: &str| {
        privilege_or(
            e,
            what,
            "the kernel rejected it (the verifier's log follows); this kernel may lack BPF \
             features the program needs",
        )
    };
    xdp::<_, &mut Xdp>(ebpf.program_mut(PROGRAM_NAME))?
        .load()
        .map_err(|e| rejected(e, &format!("loading the XDP program {PROGRAM_NAME}")))?;
    egress::<_, &mut SchedClassifier>(ebpf.program_mut(EGRESS_PROGRAM_NAME))?
        .load()
        .map_err(|e| {
            rejected(
                e,
                &format!("loading the tc egress program {EGRESS_PROGRAM_NAME}"),
            )
        })?;
    Ok(ebpf)
}
