//! Where a pinned instance lives on bpffs, and whether that bpffs outlives
//! the agent.
//!
//! Layout (one directory per network namespace and interface under the pin
//! root, default [`DEFAULT_PIN_ROOT`]):
//!
//! ```text
//! <root>/netns:<inode>/<iface>/prog           the XDP program
//! <root>/netns:<inode>/<iface>/link           its XDP link (BPF_LINK_TYPE_XDP)
//! <root>/netns:<inode>/<iface>/NATPMP_STATS   the per-CPU counters
//! <root>/netns:<inode>/<iface>/NATPMP_CONFIG  the policy (monitor/drop)
//! <root>/netns:<inode>/<iface>/NATPMP_SOURCES the per-CPU source table
//! <root>/netns:<inode>/<iface>/NATPMP_UNATTRIBUTED  datagrams no slot took
//! <root>/netns:<inode>/<iface>/NATPMP_CLOCK   the agent's epoch, log budget
//! <root>/netns:<inode>/<iface>/NATPMP_ALLOW   the allowlist (LPM trie)
//! <root>/netns:<inode>/<iface>/egress_prog    the tc egress program (answers)
//! <root>/netns:<inode>/<iface>/egress_link    its tcx link (BPF_LINK_TYPE_TCX)
//! <root>/netns:<inode>/<iface>/NATPMP_ANSWERED     answers per class (per CPU)
//! <root>/netns:<inode>/<iface>/NATPMP_ANSWERED_TO  who got them (LRU hash)
//! <root>/netns:<inode>/<iface>/NATPMP_ANSWER_LAST  the last one
//! <root>/netns:<inode>/<iface>/NATPMP_LAYOUT  the layout and agent version
//!                                             (none: pinned before layouts
//!                                             were versioned)
//! <root>/netns:<inode>/<iface>/NATPMP_CARRIED counters carried over by an
//!                                             in-place upgrade (layout 2 on)
//! ```
//!
//! The egress pins are there when the egress program was attached (a kernel
//! with tcx, Linux 6.6; an instance pinned by an agent before egress
//! counting has none): [`PinDir::has_egress`].
//!
//! A bpffs is shared by every network namespace of the host, so the pins of
//! `wan0` in two router namespaces must not collide: `<inode>` is the network
//! namespace's inode (`/proc/self/ns/net`; `lsns -t net` shows it), and `:`
//! cannot occur in an interface name. Which *device* an instance holds is not
//! in the path: it is read from the kernel (the link's ifindex), so a pin
//! whose link is live on another device (a renamed interface) is recognised
//! and left alone. Agents before this layout pinned under `<root>/<iface>/`;
//! such an instance is shown by `status`, removed by `detach`, and a new
//! agent upgrades it in place into this layout ([`super::upgrade`]).
//!
//! Contract: the link pin is what keeps the program attached after the agent
//! exits; a directory without it is a leftover and is cleaned up by
//! `detach`. bpffs holds only pins and directories (no regular files), so
//! anything else about an instance (its XDP mode, its device) is read back
//! from the kernel, never stored here.

use std::{
    ffi::CString,
    io,
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context as _, Result};
use nat_pmp_ebpf_common::{
    MAP_ALLOW, MAP_ANSWERED, MAP_ANSWERED_TO, MAP_ANSWER_LAST, MAP_CARRIED, MAP_CLOCK, MAP_CONFIG,
    MAP_LAYOUT, MAP_SOURCES, MAP_STATS, MAP_UNATTRIBUTED,
};

use crate::net::sys;

/// The pin root used unless `--pin-dir` says otherwise.
pub const DEFAULT_PIN_ROOT: &str = "/sys/fs/bpf/nat-pmp";
/// Where systemd (and everyone else) mounts bpffs.
pub const BPFFS_DEFAULT_MOUNT: &str = "/sys/fs/bpf";
/// `statfs(2)` `f_type` of bpffs (`BPF_FS_MAGIC` in linux/magic.h).
const BPF_FS_MAGIC: u64 = 0xcafe_4a11;
/// The prefix of a network namespace's directory under the pin root.
const NETNS_PREFIX: &str = "netns:";

/// File names inside an instance directory.
pub const PROG: &str = "prog";
pub const LINK: &str = "link";
/// The tc egress program that counts answers, and its tcx link.
pub const EGRESS_PROG: &str = "egress_prog";
pub const EGRESS_LINK: &str = "egress_link";
/// The egress program's maps, in the order they are pinned.
pub const EGRESS_MAPS: [&str; 3] = [MAP_ANSWERED, MAP_ANSWERED_TO, MAP_ANSWER_LAST];
/// Every pin an instance has, in the order `detach` removes them (the links
/// first, so the programs stop before their maps go).
pub const ALL_PINS: [&str; 15] = [
    LINK,
    EGRESS_LINK,
    PROG,
    EGRESS_PROG,
    MAP_ANSWERED,
    MAP_ANSWERED_TO,
    MAP_ANSWER_LAST,
    MAP_STATS,
    MAP_CONFIG,
    MAP_SOURCES,
    MAP_UNATTRIBUTED,
    MAP_CLOCK,
    MAP_ALLOW,
    MAP_LAYOUT,
    MAP_CARRIED,
];

/// The paths of one interface's pinned instance.
#[derive(Clone, Debug)]
pub struct PinDir {
    pub iface: String,
    /// The pin root (`--pin-dir`) it lives under.
    pub root: PathBuf,
    pub dir: PathBuf,
    /// Pinned by an agent before the per-namespace layout (`<root>/<iface>`).
    pub legacy: bool,
}

/// `<root>/netns:<inode>`: this network namespace's instances.
pub fn netns_root(root: &Path) -> Result<PathBuf> {
    Ok(root.join(format!("{NETNS_PREFIX}{}", sys::netns_inode()?)))
}

impl PinDir {
    /// The instance directory of `iface` in this network namespace.
    pub fn new(root: &Path, iface: &str) -> Result<Self> {
        Ok(PinDir {
            iface: iface.to_owned(),
            root: root.to_owned(),
            dir: netns_root(root)?.join(iface),
            legacy: false,
        })
    }

    /// Where an in-place upgrade of `iface`'s instance (this namespace's)
    /// pins the new program before it swaps the folders
    /// (`<root>/netns:<inode>/upgrade:<iface>`; `:` keeps it from ever
    /// being taken for an interface's).
    pub fn staging(root: &Path, iface: &str) -> Result<Self> {
        Ok(PinDir {
            iface: iface.to_owned(),
            root: root.to_owned(),
            dir: netns_root(root)?.join(format!("upgrade:{iface}")),
            legacy: false,
        })
    }

    /// Where an agent before the per-namespace layout pinned `iface`.
    pub fn legacy(root: &Path, iface: &str) -> Self {
        PinDir {
            iface: iface.to_owned(),
            root: root.to_owned(),
            dir: root.join(iface),
            legacy: true,
        }
    }

    /// The instance of `iface` the commands act on: this namespace's, or
    /// else one pinned in the old layout, or else (nothing pinned) where
    /// this namespace's would go.
    pub fn find(root: &Path, iface: &str) -> Result<Self> {
        let dir = Self::new(root, iface)?;
        let old = Self::legacy(root, iface);
        if !dir.dir.exists() && old.looks_pinned() {
            return Ok(old);
        }
        Ok(dir)
    }

    /// Whether any pin of an instance is in the directory.
    pub fn looks_pinned(&self) -> bool {
        ALL_PINS.iter().any(|p| self.path(p).exists())
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Whether the instance still has its link pin (it is, or was, attached).
    pub fn has_link(&self) -> bool {
        self.path(LINK).exists()
    }

    /// Whether the instance has the egress program's pins: its answers can
    /// be read ([`crate::bpf::answered::read_pinned`]).
    pub fn has_egress(&self) -> bool {
        self.path(MAP_ANSWERED).exists()
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

/// The instances pinned under `root` for this network namespace, and the
/// ones an older agent pinned in the old layout (sorted by interface).
pub fn instances(root: &Path) -> Result<Vec<PinDir>> {
    let list = |dir: &Path| -> Result<Vec<String>> {
        match std::fs::read_dir(dir) {
            Ok(e) => Ok(e
                .filter_map(Result::ok)
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                .collect()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e).with_context(|| format!("listing {}", dir.display())),
        }
    };
    let mut out = Vec::new();
    // A name with `:` is not an interface's (an upgrade's staging folder).
    for iface in list(&netns_root(root)?)? {
        if !iface.contains(':') {
            out.push(PinDir::new(root, &iface)?);
        }
    }
    for name in list(root)? {
        if !name.starts_with(NETNS_PREFIX) {
            let old = PinDir::legacy(root, &name);
            if old.looks_pinned() {
                out.push(old);
            }
        }
    }
    out.sort_by(|a, b| a.iface.cmp(&b.iface).then(a.legacy.cmp(&b.legacy)));
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

/// Makes sure `root` exists on a bpffs that outlives this process, mounting
/// one if needed: on [`BPFFS_DEFAULT_MOUNT`] when `root` is below it, else
/// on `root` itself. Returns the mount point when it mounted one.
///
/// "Outlives" is decided from the mount itself: the bpffs must be one that
/// the initial mount namespace (pid 1's) also has, the same superblock. A
/// bpffs mounted inside a private mount namespace (`ip netns exec`, a
/// systemd sandbox, `unshare -m`, whatever wrapper started us) is not, and
/// it dies, with every pin on it, when that namespace does.
pub fn ensure_bpffs(root: &Path) -> Result<Option<PathBuf>> {
    // The nearest existing ancestor tells which filesystem `root` will be on.
    let mut probe = root.to_path_buf();
    while !probe.exists() {
        if !probe.pop() {
            break;
        }
    }
    let mut mounted = None;
    if is_bpffs(&probe)? {
        if let Err(e) = outlives_us(&probe) {
            bail!(
                "{e:#}; choose a --pin-dir on the host's bpffs (systemd mounts /sys/fs/bpf at \
                 boot; `mount -t bpf bpf DIR` in the host's mount namespace for another one)"
            );
        }
    } else {
        let target = if root.starts_with(BPFFS_DEFAULT_MOUNT) {
            PathBuf::from(BPFFS_DEFAULT_MOUNT)
        } else {
            root.to_path_buf()
        };
        std::fs::create_dir_all(&target)
            .with_context(|| format!("creating {} to mount bpffs on", target.display()))?;
        mount_bpffs(&target)?;
        if let Err(e) = outlives_us(&target) {
            unmount(&target);
            bail!(
                "{} is not on a BPF filesystem, and one mounted from here would not outlive \
                 this process: {e:#}. Mount it in the host's mount namespace first (`mount -t \
                 bpf bpf {}`; systemd mounts /sys/fs/bpf at boot), or choose a --pin-dir on a \
                 mounted bpffs",
                root.display(),
                target.display()
            );
        }
        mounted = Some(target);
    }
    std::fs::create_dir_all(root)
        .with_context(|| format!("creating the pin directory {} on bpffs", root.display()))?;
    Ok(mounted)
}

/// Fails unless the bpffs holding `path` is also mounted in the initial
/// mount namespace (same device number in `/proc/1/mountinfo`): pins on it
/// outlive this process. A running agent checks it every interval, since
/// the host's mount can be unmounted under a copy this process still sees.
pub fn outlives_us(path: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt as _;
    let dev = std::fs::metadata(path)
        .with_context(|| format!("stat {}", path.display()))?
        .dev();
    let want = format!("{}:{}", libc::major(dev), libc::minor(dev));
    let init = std::fs::read_to_string("/proc/1/mountinfo").context(
        "cannot tell whether the bpffs would outlive this process: reading /proc/1/mountinfo \
         (the initial mount namespace's mounts) failed",
    )?;
    // mountinfo: ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [TAGS] - FSTYPE ...
    let visible = init.lines().any(|l| {
        let mut f = l.split(' ');
        let dev_field = f.nth(2);
        let fstype = l.split(" - ").nth(1).and_then(|r| r.split(' ').next());
        dev_field == Some(want.as_str()) && fstype == Some("bpf")
    });
    if !visible {
        bail!(
            "the bpffs at {} exists only in this process's mount namespace (`ip netns exec`, \
             `unshare -m` or a sandbox made one), not in the host's: its pins would vanish \
             with this namespace",
            path.display()
        );
    }
    Ok(())
}

fn unmount(target: &Path) {
    if let Ok(t) = cstring(target) {
        // SAFETY: `t` is a valid NUL-terminated path that outlives the call.
        unsafe { libc::umount2(t.as_ptr(), libc::MNT_DETACH) };
    }
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

/// Detaches the link pinned at `path` at once, even while another process
/// (a running agent) holds it open (see [`sys::link_detach`]).
pub fn force_detach_link(path: &Path) -> Result<()> {
    let fd = sys::obj_get(path)?;
    sys::link_detach(std::os::fd::AsFd::as_fd(&fd))
        .with_context(|| format!("detaching the link pinned at {}", path.display()))
}
