//! tun and tap devices made by the `TUNSETIFF` ioctl: not persistent,
//! closing the file deletes the device.

use std::{
    fs::{File, OpenOptions},
    os::{fd::AsRawFd as _, unix::fs::OpenOptionsExt as _},
};

use anyhow::{bail, Context as _, Result};

/// `TUNSETIFF` flags (`linux/if_tun.h`): the kind of device, and no packet
/// information header in front of what is read and written.
const IFF_TUN: i16 = 0x0001;
const IFF_TAP: i16 = 0x0002;
const IFF_NO_PI: i16 = 0x1000;

/// A `struct ifreq` (40 bytes on `x86_64`) holding `name` and, at offset 16,
/// `flags`.
pub fn ifreq(name: &[u8], flags: i16) -> [u8; 40] {
    let mut ifr = [0u8; 40];
    ifr[..name.len()].copy_from_slice(name);
    ifr[16..18].copy_from_slice(&flags.to_ne_bytes());
    ifr
}

/// `/dev/net/tun`, opened for [`tunsetiff`]; `nonblocking`: then a tap's
/// driver runs its native XDP program as it builds the packet
/// (`tun_build_skb`).
pub fn open_tun_file(nonblocking: bool) -> Result<File> {
    let mut options = OpenOptions::new();
    options.read(true).write(true);
    if nonblocking {
        options.custom_flags(libc::O_NONBLOCK);
    }
    options.open("/dev/net/tun").context("opening /dev/net/tun")
}

/// Makes `file` the device `name`, a tap (Ethernet) if `tap`, else a tun
/// (raw IP), without packet information header, in the calling thread's
/// namespace: the kernel sends its new-link event inside this call.
pub fn tunsetiff(file: &File, name: &str, tap: bool) -> Result<()> {
    const TUNSETIFF: libc::c_ulong = 0x4004_54ca; // _IOW('T', 202, int)
    let kind = if tap { IFF_TAP } else { IFF_TUN };
    let mut ifr = ifreq(name.as_bytes(), kind | IFF_NO_PI);
    // SAFETY: TUNSETIFF reads and writes a struct ifreq; `ifr` is at least
    // as large and lives across the call.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF, ifr.as_mut_ptr()) };
    if rc != 0 {
        bail!("TUNSETIFF {name}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}
