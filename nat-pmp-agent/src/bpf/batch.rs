//! Reads a whole per-CPU map with `BPF_MAP_LOOKUP_BATCH` (Linux 5.6+): the
//! source table, 1,024 sets of 8 slots on every CPU, every report interval.
//!
//! Why by hand: aya 0.14 has no batch operations, and reading the table a
//! key at a time costs a syscall per set (an LRU hash of 16,384 senders read
//! that way cost 3.7 % of a core, BENCHMARKS.md of an earlier version). A
//! batch of 1,024 entries is one syscall. The attribute layout is `struct
//! bpf_attr`'s `batch` member (`linux/bpf.h`), which no crate of the aya
//! 0.14 family exposes.
//!
//! Contract: [`percpu_entries`] returns every entry with one value per
//! possible CPU, or `Ok(None)` when the kernel has no batch lookup for the
//! map (the caller then reads key by key). For a hash map, entries deleted
//! while it is read may be missing; nothing is read twice within one bucket.

use std::{
    io,
    mem::size_of,
    os::fd::{AsRawFd as _, BorrowedFd},
};

/// `BPF_MAP_LOOKUP_BATCH` in `enum bpf_cmd`.
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
/// `ENOTSUPP`, the kernel-internal "not supported" some paths return.
const ENOTSUPP: i32 = 524;
/// Entries asked for per syscall (doubled when one hash bucket holds more).
const CHUNK: usize = 1024;

/// A per-CPU map's entries: each key with one value per possible CPU.
pub type PerCpuEntries<K, V> = Vec<(K, Vec<V>)>;

/// The `batch` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Every `(key, per-CPU values)` of the per-CPU hash map behind `fd`, whose
/// values are `V` on each of `cpus` possible CPUs; `Ok(None)` if the kernel
/// cannot batch-read it.
pub fn percpu_entries<K: aya::Pod, V: aya::Pod>(
    fd: BorrowedFd<'_>,
    cpus: usize,
) -> io::Result<Option<PerCpuEntries<K, V>>> {
    // The kernel lays per-CPU values out 8-byte aligned, one after another.
    let stride = size_of::<V>().next_multiple_of(8);
    let map_fd = u32::try_from(fd.as_raw_fd()).map_err(|_| io::Error::other("negative fd"))?;
    let mut chunk = CHUNK;
    let mut out = Vec::new();
    // The kernel's position token (a bucket index for hash maps).
    let mut token = [0u8; 8];
    let mut first = true;
    // Bounded: every call moves past at least one bucket, and no map of
    // ours has more than a few million.
    for _ in 0..1 << 22 {
        let mut keys = vec![0u8; chunk * size_of::<K>()];
        let mut values = vec![0u8; chunk * cpus * stride];
        let mut next = [0u8; 8];
        let mut attr = BatchAttr {
            in_batch: if first { 0 } else { token.as_ptr() as u64 },
            out_batch: next.as_mut_ptr() as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: u32::try_from(chunk).unwrap_or(u32::MAX),
            map_fd,
            ..BatchAttr::default()
        };
        // SAFETY: `attr` points at buffers that outlive the call and hold
        // `count` keys and `count * cpus` strided values, as the command
        // requires; the kernel writes at most that much and `count` back.
        let r = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                &raw mut attr,
                size_of::<BatchAttr>(),
            )
        };
        let end = if r < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                // The last batch (it may still carry entries).
                Some(libc::ENOENT) => true,
                // One bucket holds more entries than asked for: ask for more.
                Some(libc::ENOSPC) if chunk < 1 << 20 => {
                    chunk *= 2;
                    continue;
                }
                Some(libc::EINVAL | libc::EOPNOTSUPP | ENOTSUPP) if first => return Ok(None),
                _ => return Err(e),
            }
        } else {
            false
        };
        let got = (attr.count as usize).min(chunk);
        for i in 0..got {
            // SAFETY: the kernel wrote `got` keys of `size_of::<K>()` bytes
            // and their values; `K`, `V: Pod` accept any bytes, and the
            // reads are unaligned.
            let key = unsafe {
                keys.as_ptr()
                    .add(i * size_of::<K>())
                    .cast::<K>()
                    .read_unaligned()
            };
            let per_cpu = (0..cpus)
                .map(|c| {
                    // SAFETY: as above, inside the values buffer.
                    unsafe {
                        values
                            .as_ptr()
                            .add((i * cpus + c) * stride)
                            .cast::<V>()
                            .read_unaligned()
                    }
                })
                .collect();
            out.push((key, per_cpu));
        }
        if end {
            return Ok(Some(out));
        }
        token = next;
        first = false;
    }
    Err(io::Error::other(
        "BPF_MAP_LOOKUP_BATCH did not reach the map's end",
    ))
}
