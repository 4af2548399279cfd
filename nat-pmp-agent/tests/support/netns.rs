//! Network namespaces ([`NetNs`], deleted with their interfaces on drop) and
//! veth pairs between them ([`veth`]).

use std::{
    ffi::OsStr,
    fs::File,
    os::fd::AsRawFd as _,
    process::{Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
};

use anyhow::{anyhow, bail, Context as _, Result};

use super::process::sh;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// `natpmp-<tag>-<pid>-<n>`: unique in this process, and naming it (the
/// bench removes what a process that no longer exists left behind).
pub fn unique_name(tag: &str) -> String {
    format!(
        "natpmp-{tag}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    )
}

/// A network namespace ([`unique_name`]), deleted (with its interfaces,
/// their XDP programs and nftables tables) on drop.
pub struct NetNs {
    pub name: String,
}

impl NetNs {
    /// A new namespace, loopback up.
    pub fn new(tag: &str) -> Result<Self> {
        let name = unique_name(tag);
        sh(&["ip", "netns", "add", &name])?;
        let ns = NetNs { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// `ip -n <ns> ARGS`.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut v = vec!["ip", "-n", &self.name];
        v.extend_from_slice(args);
        sh(&v)
    }

    /// A command that runs `program` inside this namespace (`ip netns exec`
    /// execs it: the child's PID is the program's).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// Runs `f` on a thread that has entered this namespace (it inherits the
    /// caller's CPU affinity); sockets made there stay in the namespace
    /// wherever they are used afterwards. `BPF_PROG_TEST_RUN` with live
    /// frames resolves redirect targets in the caller's namespace, and
    /// `Filter::attach` looks interfaces up there.
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        let path = format!("/run/netns/{}", self.name);
        std::thread::scope(|s| {
            s.spawn(|| {
                let fd = File::open(&path).with_context(|| format!("opening {path}"))?;
                // SAFETY: `fd` is an open namespace file; setns only affects
                // this thread, which ends with the scope.
                let rc = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
                if rc != 0 {
                    bail!("setns into {path}: {}", std::io::Error::last_os_error());
                }
                Ok(f())
            })
            .join()
            .map_err(|_| anyhow!("the thread inside {path} panicked"))?
        })
    }

    /// `dev` as `ip -j link show` describes it, and that text.
    fn link(&self, dev: &str) -> Result<(serde_json::Value, String)> {
        let out = self.ip(&["-j", "link", "show", "dev", dev])?;
        let v =
            serde_json::from_str(&out).with_context(|| format!("parsing `ip -j link`: {out}"))?;
        Ok((v, out))
    }

    /// The interface index of `dev`.
    pub fn ifindex(&self, dev: &str) -> Result<u32> {
        let (v, out) = self.link(dev)?;
        v[0]["ifindex"]
            .as_u64()
            .and_then(|i| u32::try_from(i).ok())
            .with_context(|| format!("no ifindex in `ip -j link`: {out}"))
    }

    /// The id and name of the XDP program attached to `dev`.
    pub fn xdp_prog(&self, dev: &str) -> Result<(u32, String)> {
        let (v, out) = self.link(dev)?;
        let prog = &v[0]["xdp"]["prog"];
        let id = prog["id"]
            .as_u64()
            .and_then(|id| u32::try_from(id).ok())
            .with_context(|| format!("no XDP program attached to {dev} in {}: {out}", self.name))?;
        Ok((id, prog["name"].as_str().unwrap_or("?").to_owned()))
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

/// One end of a veth pair.
pub struct VethEnd<'a> {
    pub ns: &'a NetNs,
    pub dev: &'a str,
    /// Its IPv4 address, a /24.
    pub addr: &'a str,
    /// Its MAC address (the kernel picks one if `None`).
    pub mac: Option<[u8; 6]>,
}

/// Creates the veth pair `a`–`b` (the ends may be in one namespace),
/// addressed and up.
pub fn veth(a: &VethEnd, b: &VethEnd) -> Result<()> {
    let mac = |end: &VethEnd| end.mac.map(|m| m.map(|b| format!("{b:02x}")).join(":"));
    let (mac_a, mac_b) = (mac(a), mac(b));
    let mut args = vec!["ip", "link", "add", a.dev, "netns", &a.ns.name];
    if let Some(m) = &mac_a {
        args.extend(["address", m]);
    }
    args.extend(["type", "veth", "peer", "name", b.dev, "netns", &b.ns.name]);
    if let Some(m) = &mac_b {
        args.extend(["address", m]);
    }
    sh(&args)?;
    for end in [a, b] {
        end.ns
            .ip(&["addr", "add", &format!("{}/24", end.addr), "dev", end.dev])?;
    }
    for end in [a, b] {
        end.ns.ip(&["link", "set", end.dev, "up"])?;
    }
    Ok(())
}
