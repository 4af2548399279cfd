//! A bpffs of one's own ([`Bpffs`]), unmounted on drop.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result};

use super::{netns::unique_name, process::sh};

/// A bpffs mounted on a fresh directory under /run ([`unique_name`]). Pins
/// made inside `ip netns exec` (which remounts /sys) must live on a bpffs
/// mounted in the caller's own mount namespace to outlive the command (the
/// agent's pins; xdp-filter's maps, bind-mounted over `/sys/fs/bpf` for it).
/// Unmounted (which drops every pin in it, detaching pinned links) and
/// removed on drop.
pub struct Bpffs {
    pub path: PathBuf,
}

impl Bpffs {
    pub fn new(tag: &str) -> Result<Self> {
        let path = PathBuf::from("/run").join(unique_name(tag));
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        // From here on, dropping it removes the directory.
        let bpffs = Bpffs { path };
        let p = bpffs.path_str();
        sh(&["mount", "-t", "bpf", "bpf", &p])
            .with_context(|| format!("mounting a bpffs at {p}"))?;
        Ok(bpffs)
    }

    pub fn path_str(&self) -> String {
        self.path.to_string_lossy().into_owned()
    }
}

impl Drop for Bpffs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg(&self.path)
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir(&self.path);
    }
}
