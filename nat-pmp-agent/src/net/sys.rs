//! The few bpf(2) commands aya 0.14 does not wrap, and what the kernel says
//! about an XDP link.
//!
//! aya's `LinkInfo` carries a link's id and program id but not the device an
//! XDP link holds; whether the filter still protects an interface is exactly
//! that device, so it is read here with `BPF_OBJ_GET_INFO_BY_FD`. The kernel
//! reports ifindex 0 for an XDP link whose device went away (deleted, e.g. a
//! PPPoE reconnect) or that someone detached (`BPF_LINK_DETACH`: `nat-pmp-agent
//! detach`, `bpftool link detach`): the link exists, protects nothing.
//!
//! Hand-rolled because these are a handful of fixed-layout commands
//! (`include/uapi/linux/bpf.h`); each `unsafe` block is one syscall.

use std::{
    ffi::CString,
    io,
    os::{
        fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
        unix::ffi::OsStrExt as _,
    },
    path::Path,
    time::{Duration, SystemTime},
};

use anyhow::{Context as _, Result};

// bpf(2) commands.
const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_LINK_UPDATE: libc::c_long = 29;
const BPF_LINK_GET_FD_BY_ID: libc::c_long = 30;
const BPF_LINK_DETACH: libc::c_long = 34;
/// `BPF_LINK_TYPE_XDP`.
pub const LINK_TYPE_XDP: u32 = 6;
/// `BPF_LINK_TYPE_TCX` (Linux 6.6).
pub const LINK_TYPE_TCX: u32 = 11;

/// What the kernel says about one BPF link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkState {
    /// The link's id (`bpftool link show id N`).
    pub id: u32,
    /// `BPF_LINK_TYPE_*`.
    pub link_type: u32,
    /// The program it runs.
    pub prog_id: u32,
    /// For an XDP or tcx link, the device it is attached to in the
    /// namespace it lives in; 0 when it is attached to nothing (device
    /// gone, or detached).
    pub ifindex: u32,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a `#[repr(C)]` prefix of `union bpf_attr` for `cmd`
    // (each caller's struct mirrors the uapi layout), valid for reads and
    // writes of its size for the duration of the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_mut(attr),
            std::mem::size_of::<T>(),
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn fd_from(rc: libc::c_long) -> Result<OwnedFd> {
    let fd = i32::try_from(rc).context("bpf(2) returned an invalid fd")?;
    // SAFETY: the kernel just returned this fd to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn fd_u32(fd: BorrowedFd<'_>) -> u32 {
    // A valid fd is never negative.
    u32::try_from(fd.as_raw_fd()).unwrap_or(u32::MAX)
}

fn cstring(path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .with_context(|| format!("path {} contains a NUL byte", path.display()))
}

#[repr(C)]
struct ObjAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
    path_fd: i32,
}

/// Opens the object pinned at `path` (`BPF_OBJ_GET`).
pub fn obj_get(path: &Path) -> Result<OwnedFd> {
    let c = cstring(path)?;
    let mut attr = ObjAttr {
        pathname: c.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
        path_fd: 0,
    };
    let rc = bpf(BPF_OBJ_GET, &mut attr)
        .with_context(|| format!("opening the pin {}", path.display()))?;
    fd_from(rc)
}

/// Pins the object behind `fd` at `path` (`BPF_OBJ_PIN`).
pub fn obj_pin(fd: BorrowedFd<'_>, path: &Path) -> Result<()> {
    let c = cstring(path)?;
    let mut attr = ObjAttr {
        pathname: c.as_ptr() as u64,
        bpf_fd: fd_u32(fd),
        file_flags: 0,
        path_fd: 0,
    };
    bpf(BPF_OBJ_PIN, &mut attr)
        .map(drop)
        .with_context(|| format!("pinning at {} (is it on bpffs?)", path.display()))
}

/// `BPF_XDP`, the attach type of an XDP link.
const BPF_XDP: u32 = 37;
/// `XDP_FLAGS_SKB_MODE` / `XDP_FLAGS_DRV_MODE` (`linux/if_link.h`).
pub const XDP_FLAGS_SKB_MODE: u32 = 2;
pub const XDP_FLAGS_DRV_MODE: u32 = 4;

/// Attaches the XDP program `prog` to device `ifindex` through a new BPF
/// link (`BPF_LINK_CREATE`, Linux 5.9) and returns the link's fd: this
/// agent's own reference, which aya's attach does not hand out (reopening a
/// link by id needs `CAP_SYS_ADMIN`, which the agent does not have).
pub fn xdp_link_create(prog: BorrowedFd<'_>, ifindex: u32, flags: u32) -> io::Result<OwnedFd> {
    #[repr(C)]
    struct LinkCreate {
        prog_fd: u32,
        target_ifindex: u32,
        attach_type: u32,
        flags: u32,
    }
    link_create(&mut LinkCreate {
        prog_fd: fd_u32(prog),
        target_ifindex: ifindex,
        attach_type: BPF_XDP,
        flags,
    })
}

/// `BPF_LINK_CREATE` with `attr` (a prefix of its `link_create` member):
/// the new link's fd.
fn link_create<T>(attr: &mut T) -> io::Result<OwnedFd> {
    let rc = bpf(BPF_LINK_CREATE, attr)?;
    let fd = i32::try_from(rc).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
    // SAFETY: the kernel just returned this fd to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `BPF_TCX_EGRESS`, the attach type of a tcx egress link (Linux 6.6).
const BPF_TCX_EGRESS: u32 = 47;

/// Attaches the tc program `prog` to the egress of device `ifindex`
/// through a new tcx link (`BPF_LINK_CREATE` with `BPF_TCX_EGRESS`, Linux
/// 6.6), appended after the programs already there, and returns the
/// link's fd. Hand-rolled like [`xdp_link_create`]: aya 0.14 attaches tcx
/// links and pins them, but its `FdLink` hands out no fd, and the agent
/// needs one for `BPF_LINK_DETACH` and `BPF_OBJ_GET_INFO_BY_FD` (is the
/// link still on its device?). EINVAL or EOPNOTSUPP: no tcx (before 6.6).
pub fn tcx_egress_link_create(prog: BorrowedFd<'_>, ifindex: u32) -> io::Result<OwnedFd> {
    /// `link_create` up to its `tcx` member (relative fd or id, expected
    /// revision: 0, "after everything, any revision").
    #[repr(C)]
    struct LinkCreate {
        prog_fd: u32,
        target_ifindex: u32,
        attach_type: u32,
        flags: u32,
        relative_fd: u32,
        pad: u32,
        expected_revision: u64,
    }
    link_create(&mut LinkCreate {
        prog_fd: fd_u32(prog),
        target_ifindex: ifindex,
        attach_type: BPF_TCX_EGRESS,
        flags: 0,
        relative_fd: 0,
        pad: 0,
        expected_revision: 0,
    })
}

/// Opens the link with kernel id `id` (`BPF_LINK_GET_FD_BY_ID`; needs
/// `CAP_SYS_ADMIN`).
pub fn link_fd_by_id(id: u32) -> Result<OwnedFd> {
    #[repr(C)]
    struct ById {
        id: u32,
        next_id: u32,
        open_flags: u32,
    }
    let mut attr = ById {
        id,
        next_id: 0,
        open_flags: 0,
    };
    let rc = bpf(BPF_LINK_GET_FD_BY_ID, &mut attr)
        .with_context(|| format!("opening BPF link id {id}"))?;
    fd_from(rc)
}

/// Reads a link's state (`BPF_OBJ_GET_INFO_BY_FD`).
pub fn link_state(fd: BorrowedFd<'_>) -> Result<LinkState> {
    /// `struct bpf_link_info` up to the XDP member of its union (which
    /// starts 8-byte aligned at offset 16), with room for the rest.
    #[repr(C)]
    struct Info {
        link_type: u32,
        id: u32,
        prog_id: u32,
        pad: u32,
        ifindex: u32,
        rest: [u32; 11],
    }
    #[repr(C)]
    struct InfoAttr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    let mut info = Info {
        link_type: 0,
        id: 0,
        prog_id: 0,
        pad: 0,
        ifindex: 0,
        rest: [0; 11],
    };
    let mut attr = InfoAttr {
        bpf_fd: fd_u32(fd),
        info_len: u32::try_from(std::mem::size_of::<Info>()).unwrap_or(0),
        info: std::ptr::from_mut(&mut info) as u64,
    };
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr).context("reading a BPF link's info")?;
    Ok(LinkState {
        id: info.id,
        link_type: info.link_type,
        prog_id: info.prog_id,
        // `union { xdp { ifindex }, tcx { ifindex, attach_type } }`: the
        // ifindex is the first member of both.
        ifindex: if info.link_type == LINK_TYPE_XDP || info.link_type == LINK_TYPE_TCX {
            info.ifindex
        } else {
            0
        },
    })
}

/// Detaches a link at once, even while other processes hold it open or it
/// is pinned (`BPF_LINK_DETACH`, Linux 5.9). Closing or unpinning alone
/// would leave it attached until the last holder lets go.
pub fn link_detach(fd: BorrowedFd<'_>) -> Result<()> {
    #[repr(C)]
    struct DetachAttr {
        link_fd: u32,
    }
    let mut attr = DetachAttr {
        link_fd: fd_u32(fd),
    };
    bpf(BPF_LINK_DETACH, &mut attr)
        .map(drop)
        .context("detaching a BPF link (BPF_LINK_DETACH)")
}

/// `BPF_F_REPLACE`: update a link only if it still runs `old_prog_fd`'s
/// program.
const BPF_F_REPLACE: u32 = 4;

/// Makes the link behind `link` run `new_prog` instead of `old_prog`, in
/// one step (`BPF_LINK_UPDATE` with `BPF_F_REPLACE`; XDP links since Linux
/// 5.9, tcx links since 6.6): the device never runs without a program, and
/// the link (its id, its pins, the XDP mode) stays. Fails with EPERM when
/// the link no longer runs `old_prog` (someone else replaced it), EINVAL
/// when the new program's type or attach type differs.
pub fn link_update(
    link: BorrowedFd<'_>,
    new_prog: BorrowedFd<'_>,
    old_prog: BorrowedFd<'_>,
) -> io::Result<()> {
    #[repr(C)]
    struct UpdateAttr {
        link_fd: u32,
        new_prog_fd: u32,
        flags: u32,
        old_prog_fd: u32,
    }
    let mut attr = UpdateAttr {
        link_fd: fd_u32(link),
        new_prog_fd: fd_u32(new_prog),
        flags: BPF_F_REPLACE,
        old_prog_fd: fd_u32(old_prog),
    };
    bpf(BPF_LINK_UPDATE, &mut attr).map(drop)
}

/// `RENAME_EXCHANGE` (linux/fs.h).
const RENAME_EXCHANGE: libc::c_uint = 2;

/// Swaps the paths `a` and `b` (both must exist) in one step
/// (`renameat2(RENAME_EXCHANGE)`, which bpffs supports): no moment without
/// either. Through the raw system call: the libc crate has no wrapper for
/// musl.
pub fn rename_exchange(a: &Path, b: &Path) -> Result<()> {
    let (ca, cb) = (cstring(a)?, cstring(b)?);
    // SAFETY: two NUL-terminated paths that outlive the call; AT_FDCWD
    // directory fds.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            RENAME_EXCHANGE,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error())
            .with_context(|| format!("exchanging {} and {}", a.display(), b.display()));
    }
    Ok(())
}

/// Every XDP link whose program has the kernel name `prog_name` (the
/// kernel keeps the first 15 bytes), found through the kernel's list of
/// links: what runs, whatever the pins say.
pub fn xdp_links_running(prog_name: &str) -> Result<Vec<LinkState>> {
    let short = &prog_name.as_bytes()[..prog_name.len().min(15)];
    let names: std::collections::HashMap<u32, bool> = aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .map(|p| (p.id(), p.name() == short))
        .collect();
    let mut out = Vec::new();
    for info in aya::programs::loaded_links() {
        // A link that went away while the list was walked is skipped.
        let Ok(info) = info else { continue };
        let Ok(fd) = link_fd_by_id(info.id()) else {
            continue;
        };
        let Ok(state) = link_state(std::os::fd::AsFd::as_fd(&fd)) else {
            continue;
        };
        if state.link_type == LINK_TYPE_XDP && names.get(&state.prog_id) == Some(&true) {
            out.push(state);
        }
    }
    Ok(out)
}

/// The inode of this process's network namespace: what tells namespaces
/// apart (`ip netns identify`, `lsns` show the same number).
pub fn netns_inode() -> Result<u64> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata("/proc/self/ns/net")
        .map(|m| m.ino())
        .context("reading /proc/self/ns/net (which network namespace is this?)")
}

/// Fills `buf` from the kernel's random pool (`getrandom(2)`).
pub fn random(buf: &mut [u8]) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: `rest` is valid for writes of `rest.len()` bytes.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if let Ok(n) = usize::try_from(n) {
            done += n;
        } else {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
    Ok(())
}

/// `MEMBARRIER_CMD_GLOBAL` (linux/membarrier.h).
const MEMBARRIER_CMD_GLOBAL: libc::c_long = 1;

/// Waits until every XDP program run that began before this call has
/// finished: `membarrier(MEMBARRIER_CMD_GLOBAL)` waits for an RCU grace
/// period (`synchronize_rcu()`), and XDP programs run inside RCU read-side
/// sections. The kernel refuses it on `nohz_full` systems (EINVAL); the
/// caller then falls back to waiting.
pub fn synchronize_rcu() -> io::Result<()> {
    // SAFETY: membarrier takes two integer arguments (and a CPU id unused by
    // this command); no memory is passed.
    let r = unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_GLOBAL, 0, 0) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Waits until every BPF program run that began before this call has
/// finished: [`synchronize_rcu`], or, where the kernel refuses it
/// (`nohz_full`: no grace period to wait for from user space), a pause far
/// longer than any program run (well under a microsecond).
pub fn wait_for_program_runs() {
    if synchronize_rcu().is_err() {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Does any cause in `err`'s chain carry this errno?
pub fn has_errno(err: &(dyn std::error::Error + 'static), errno: i32) -> bool {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            if io.raw_os_error() == Some(errno) {
                return true;
            }
        }
        cur = e.source();
    }
    false
}

/// `CLOCK_MONOTONIC` now.
pub fn monotonic_now() -> Duration {
    // SAFETY: `timespec` is plain old data; all-zero is a valid value.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: a valid out-pointer; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) };
    Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}

pub fn monotonic_ns() -> u64 {
    u64::try_from(monotonic_now().as_nanos()).unwrap_or(u64::MAX)
}

/// Wall-clock time of a `CLOCK_MONOTONIC` reading in nanoseconds.
pub fn wall_time(ktime_ns: u64) -> SystemTime {
    let ago = monotonic_now().saturating_sub(Duration::from_nanos(ktime_ns));
    SystemTime::now()
        .checked_sub(ago)
        .unwrap_or(SystemTime::UNIX_EPOCH)
}
