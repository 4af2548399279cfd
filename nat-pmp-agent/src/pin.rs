//! Where a pinned instance lives on bpffs, and the few bpf(2) commands aya
//! 0.14 does not wrap.
//!
//! Layout (one directory per interface under the pin root, default
//! [`DEFAULT_PIN_ROOT`]):
//!
//! ```text
//! <root>/<iface>/prog           the XDP program
//! <root>/<iface>/link           its XDP link (BPF_LINK_TYPE_XDP) on <iface>
//! <root>/<iface>/NATPMP_STATS   the per-CPU counters
//! <root>/<iface>/NATPMP_CONFIG  the policy (monitor/drop)
//! <root>/<iface>/NATPMP_SOURCES the per-source LRU map
//! <root>/<iface>/NATPMP_ALLOW   the allowlist (LPM trie)
//! ```
//!
//! Contract: the link pin is what keeps the program attached after the agent
//! exits; a directory without it is a leftover and is cleaned up by
//! `detach`. bpffs holds only pins and directories (no regular files), so
//! anything else about an instance (its XDP mode) is read back from the
//! kernel, never stored here.

use std::{
    ffi::CString,
    io,
    os::{fd::FromRawFd as _, fd::OwnedFd, unix::ffi::OsStrExt as _},
    path::{Path, PathBuf},
};

use anyhow::{bail, Context as _, Result};
use nat_pmp_ebpf_common::{MAP_ALLOW, MAP_CONFIG, MAP_SOURCES, MAP_STATS};

/// The pin root used unless `--pin-dir` says otherwise.
pub const DEFAULT_PIN_ROOT: &str = "/sys/fs/bpf/nat-pmp";
/// Where systemd (and everyone else) mounts bpffs.
pub const BPFFS_DEFAULT_MOUNT: &str = "/sys/fs/bpf";
/// `statfs(2)` `f_type` of bpffs (`BPF_FS_MAGIC` in linux/magic.h).
const BPF_FS_MAGIC: u64 = 0xcafe_4a11;

/// File names inside an instance directory.
pub const PROG: &str = "prog";
pub const LINK: &str = "link";
/// Every pin an instance has, in the order `detach` removes them (the link
/// first, so the filter stops before its maps go).
pub const ALL_PINS: [&str; 6] = [LINK, PROG, MAP_STATS, MAP_CONFIG, MAP_SOURCES, MAP_ALLOW];

/// The paths of one interface's pinned instance.
#[derive(Clone, Debug)]
pub struct PinDir {
    pub iface: String,
    pub dir: PathBuf,
}

impl PinDir {
    pub fn new(root: &Path, iface: &str) -> Self {
        PinDir {
            iface: iface.to_owned(),
            dir: root.join(iface),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Whether the instance still has its link pin (it is, or was, attached).
    pub fn has_link(&self) -> bool {
        self.path(LINK).exists()
    }

    /// Removes every pin and the directory itself; missing pins are fine.
    pub fn remove(&self) -> Result<()> {
        for name in ALL_PINS {
            let p = self.path(name);
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("removing the pin {}", p.display()))
                }
            }
        }
        match std::fs::remove_dir(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| {
                format!(
                    "removing the pin directory {} (does it hold pins that are not ours?)",
                    self.dir.display()
                )
            }),
        }
    }
}

/// The interfaces with an instance directory under `root` (sorted).
pub fn instances(root: &Path) -> Result<Vec<PinDir>> {
    let entries = match std::fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(e).with_context(|| format!("listing the pin root {}", root.display()))
        }
    };
    let mut out: Vec<PinDir> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().to_str().map(|n| PinDir::new(root, n)))
        .collect();
    out.sort_by(|a, b| a.iface.cmp(&b.iface));
    Ok(out)
}

/// Whether `path` is on a bpffs.
pub fn is_bpffs(path: &Path) -> Result<bool> {
    let c = cstring(path)?;
    // SAFETY: `statfs` is plain old data; all-zero is a valid value.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is NUL-terminated and `st` is a valid out-pointer.
    if unsafe { libc::statfs(c.as_ptr(), &raw mut st) } != 0 {
        return Err(io::Error::last_os_error())
            .with_context(|| format!("statfs {}", path.display()));
    }
    // `f_type` is signed in glibc and unsigned in musl; the magic is positive.
    Ok(u64::try_from(st.f_type).ok() == Some(BPF_FS_MAGIC))
}

/// Makes sure `root` exists on a bpffs, mounting one if needed: on
/// [`BPFFS_DEFAULT_MOUNT`] when `root` is below it, else on `root` itself.
/// Returns the mount point when it mounted one.
pub fn ensure_bpffs(root: &Path) -> Result<Option<PathBuf>> {
    // The nearest existing ancestor tells which filesystem `root` will be on.
    let mut probe = root.to_path_buf();
    while !probe.exists() {
        if !probe.pop() {
            break;
        }
    }
    let mut mounted = None;
    if !is_bpffs(&probe)? {
        let target = if root.starts_with(BPFFS_DEFAULT_MOUNT) {
            PathBuf::from(BPFFS_DEFAULT_MOUNT)
        } else {
            root.to_path_buf()
        };
        if private_mount_namespace() {
            bail!(
                "{} is not on a BPF filesystem, and a bpffs mounted from here would vanish \
                 with this process, taking the pins with it: it runs in a mount namespace of \
                 its own (`ip netns exec`, systemd sandboxing). Mount it in the host's mount \
                 namespace first (`mount -t bpf bpf {}`; systemd mounts /sys/fs/bpf at boot), \
                 or choose a --pin-dir on a mounted bpffs",
                root.display(),
                target.display()
            );
        }
        std::fs::create_dir_all(&target)
            .with_context(|| format!("creating {} to mount bpffs on", target.display()))?;
        mount_bpffs(&target)?;
        mounted = Some(target);
    }
    std::fs::create_dir_all(root)
        .with_context(|| format!("creating the pin directory {} on bpffs", root.display()))?;
    Ok(mounted)
}

/// Whether this process runs in a mount namespace of its own: its mount
/// namespace differs from init's or, where /proc/1 is out of reach (some
/// sandboxes refuse it), from its parent's (`ip netns exec` execs the
/// program in a fresh one). When neither can be read it says no and the
/// mount is tried.
fn private_mount_namespace() -> bool {
    let Ok(me) = std::fs::read_link("/proc/self/ns/mnt") else {
        return false;
    };
    let parent = format!("/proc/{}/ns/mnt", std::os::unix::process::parent_id());
    ["/proc/1/ns/mnt", parent.as_str()]
        .iter()
        .find_map(|p| std::fs::read_link(p).ok())
        .is_some_and(|other| other != me)
}

fn mount_bpffs(target: &Path) -> Result<()> {
    let t = cstring(target)?;
    let fstype = c"bpf";
    let mode = c"mode=0700";
    // SAFETY: every pointer is a valid NUL-terminated string that outlives
    // the call.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            t.as_ptr(),
            fstype.as_ptr(),
            0,
            mode.as_ptr().cast(),
        )
    };
    if rc != 0 {
        let e = io::Error::last_os_error();
        bail!(
            "{} is not on a BPF filesystem and mounting one there failed ({e}); mount it \
             yourself (`mount -t bpf bpf {}`; it needs CAP_SYS_ADMIN, which systemd has at \
             boot: it mounts /sys/fs/bpf itself) or choose another --pin-dir",
            target.display(),
            target.display()
        );
    }
    Ok(())
}

fn cstring(path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .with_context(|| format!("path {} contains a NUL byte", path.display()))
}

// bpf(2) commands (include/uapi/linux/bpf.h).
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_LINK_DETACH: libc::c_long = 34;

/// Detaches the link pinned at `path` at once, even while another process
/// (a running agent) holds it open: `BPF_LINK_DETACH` (Linux 5.9). Unpinning
/// alone would leave the filter attached until the last holder closes it.
///
/// Hand-rolled because aya 0.14 wraps neither `BPF_LINK_DETACH` nor gives
/// access to a pinned link's fd; these are two fixed-layout commands.
pub fn force_detach_link(path: &Path) -> Result<()> {
    #[repr(C)]
    struct LinkDetachAttr {
        link_fd: u32,
    }
    let fd = obj_get(path)?;
    let attr = LinkDetachAttr {
        link_fd: u32::try_from(std::os::fd::AsRawFd::as_raw_fd(&fd))
            .context("negative file descriptor")?,
    };
    // SAFETY: `attr` is a valid `bpf_attr` prefix for BPF_LINK_DETACH of the
    // size passed; the kernel only reads it.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_LINK_DETACH,
            &raw const attr,
            std::mem::size_of::<LinkDetachAttr>(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error())
            .with_context(|| format!("detaching the link pinned at {}", path.display()));
    }
    Ok(())
}

fn obj_get(path: &Path) -> Result<OwnedFd> {
    #[repr(C)]
    struct ObjGetAttr {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
        path_fd: i32,
    }
    let c = cstring(path)?;
    let attr = ObjGetAttr {
        pathname: c.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
        path_fd: 0,
    };
    // SAFETY: `attr` is a valid `bpf_attr` prefix for BPF_OBJ_GET; the path
    // it points to outlives the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET,
            &raw const attr,
            std::mem::size_of::<ObjGetAttr>(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error())
            .with_context(|| format!("opening the pin {}", path.display()));
    }
    let fd = i32::try_from(rc).context("bpf(BPF_OBJ_GET) returned an invalid fd")?;
    // SAFETY: the kernel just returned this fd to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
