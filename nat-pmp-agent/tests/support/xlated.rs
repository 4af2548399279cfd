//! An exact interpreter of a loaded BPF program's *xlated* instructions (what
//! `bpftool prog dump xlated` shows: the program after the verifier rewrote
//! it), run on one XDP frame. It reports how many instructions the frame
//! executes and the first call instruction it reaches, where it stops.
//!
//! Why the xlated form: it is what the JIT compiles, so its instruction count
//! is the path's real length, and a helper the verifier inlined (array map
//! lookups) is no call there while one it did not inline still is.
//!
//! What the kernel's xlated form holds (checked on Linux 6.18, see the tests
//! in `tests/suite/xlated.rs`) and how this module models it:
//! - The context: XDP's 32-bit `struct xdp_md` loads are rewritten into
//!   64-bit loads from `struct xdp_buff` (`data` at +0, `data_end` +8,
//!   `data_meta` +16, `data_hard_start` +24). `r1` points at such a buffer;
//!   any other context field (`rxq`, ...) is an error. A tc program's
//!   (`sched_cls`) `__sk_buff` loads of `data` and `data_end` become 64-bit
//!   loads from `struct sk_buff` (`data`) and from its control block
//!   (`cb` + `offsetof(struct bpf_skb_data_end, data_end)`); the two offsets
//!   come from the kernel's BTF (`/sys/kernel/btf/vmlinux`), and every other
//!   byte of that context reads as undefined (a branch on it is an error).
//! - Map pointers: `LD_IMM64` with `src_reg` 1 (`BPF_PSEUDO_MAP_FD`) holds
//!   the map's *id* in a dump; map `M` lives at `M << 32` here.
//!   `BPF_PSEUDO_MAP_VALUE` (2) is a map value's address (id in the first
//!   slot, offset into `array->value` in the second): global data.
//! - Inlined array lookups (`array_map_gen_lookup`): `r1 += K` (K =
//!   `offsetof(struct bpf_array, value)`, 312 on 6.18), a bounds check and
//!   `r0 = r1 + index * round_up(value_size, 8)`. K is learned from the code.
//!   Entry `i` of an array map lives at `base + K + i * elem_size`, filled
//!   from a snapshot of the kernel's map.
//! - Inlined per-CPU array lookups (`percpu_array_map_gen_lookup`): the
//!   same, but through `pptrs` (8 bytes per entry at `base + K`) and the
//!   kernel-internal `BPF_MOV64_PERCPU_REG` (`ALU64 MOV X` with `off` -1),
//!   which adds this CPU's per-CPU offset: this model is CPU 0, offset 0, and
//!   per-CPU values start zeroed.
//! - Calls: helper calls keep `src_reg` 0 but their `imm` is the helper's
//!   address relative to `__bpf_call_base` (the verifier replaced the helper
//!   id; a map helper became a direct call of the map type's function, e.g.
//!   `htab_lru_percpu_map_lookup_elem`). BPF-to-BPF calls (`src_reg` 1) hold
//!   the relative offset in `off` and the callee's subprogram index in `imm`
//!   (`jit_subprogs` rewrites them so for dumps). Kfunc calls have `src_reg`
//!   2. Every call stops the run.
//! - Memory: the context, the packet (256 bytes of zeroed headroom, as
//!   `BPF_PROG_TEST_RUN` gives, then the frame up to `data_end`), a 512-byte
//!   stack under `r10`, and the array maps' values. Every access must lie
//!   inside one of them; writes to the context, to `.rodata`
//!   (`BPF_F_RDONLY_PROG`) and to per-CPU pointer tables are errors. Stack
//!   bytes never written hold no defined value (the kernel's hold whatever
//!   was there): such a value may be copied around (padding is), but a
//!   branch on it, an address made from it or returning it is an error.
//!
//! Anything else this module does not model (an opcode, a field value, a
//! memory access outside the modelled regions) is an error naming the pc and
//! the opcode, never a guess.
//!
//! Used by the suite's `xlated` tests and by the bench (`benches/xdp`), which
//! includes this file on its own: it depends on std, anyhow and `serde_json`
//! only.
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap,
    reason = "an interpreter of a 64-bit machine: its casts are its semantics"
)]

use std::{borrow::Cow, collections::BTreeMap, path::PathBuf, process::Command};

use anyhow::{anyhow, bail, ensure, Context as _, Result};

/// What one frame did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path {
    /// Instructions executed (an `LD_IMM64` counts once; a call the run
    /// stopped at counts).
    pub insns: usize,
    /// The calls reached: the run stops at the first, so at most one.
    pub calls: Vec<Call>,
    /// `r0` at the entry function's `exit`; `None` when a call stopped it.
    pub ret: Option<u64>,
}

/// A call instruction the run reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// Its index in the xlated program (in 8-byte slots, as bpftool numbers).
    pub pc: usize,
    pub kind: CallKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallKind {
    /// A helper (`src_reg` 0). The value is the xlated `imm`: after the
    /// verifier's fixups it is the called function's address relative to
    /// `__bpf_call_base` (bpftool prints it after `#`), not the helper id;
    /// [`Program::call_name`] gives the function's name.
    Helper(i32),
    /// A BPF-to-BPF call (`src_reg` 1): the callee is at `pc + 1 + offset`.
    BpfToBpf(i32),
    /// A kfunc call (`src_reg` 2): the xlated `imm`.
    Kfunc(i32),
}

/// A map the program uses, as the interpreter sees it.
#[derive(Debug, Clone)]
pub struct MapSnapshot {
    pub id: u32,
    pub name: String,
    /// The map type as bpftool names it: `array`, `percpu_array`, `hash`...
    pub kind: String,
    pub value_size: u32,
    pub max_entries: u32,
    /// `BPF_F_RDONLY_PROG`: the program cannot write it (`.rodata`).
    pub read_only: bool,
    /// For an `array`: each entry's value (missing entries read as zeros).
    /// Ignored for other types.
    pub values: Vec<Vec<u8>>,
}

/// A loaded program's xlated instructions and the maps it needs.
pub struct Program {
    insns: Vec<Insn>,
    /// `second[pc]`: `pc` is the second slot of an `LD_IMM64`.
    second: Vec<bool>,
    /// bpftool's name of the function each call instruction calls.
    names: BTreeMap<usize, String>,
    maps: BTreeMap<u32, MapSnapshot>,
    /// `offsetof(struct bpf_array, value)`.
    value_off: u64,
    /// Map memory: array values, per-CPU pointers and per-CPU values.
    regions: Vec<Region<'static>>,
    /// What `r1` points at.
    hook: Hook,
}

/// The program type, for its context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// `struct xdp_buff`.
    Xdp,
    /// `struct sk_buff` (tc, `sched_cls`): where its `data` pointer and the
    /// control block's `data_end` are, in bytes.
    Tc { data: u64, data_end: u64 },
}

impl Hook {
    /// The tc context's offsets on the running kernel, from its BTF:
    /// `offsetof(struct sk_buff, data)` and `offsetof(struct sk_buff, cb) +
    /// offsetof(struct bpf_skb_data_end, data_end)` (what the verifier's
    /// `bpf_convert_ctx_access` loads).
    pub fn tc() -> Result<Hook> {
        let raw = run_bpftool(&[
            "btf",
            "dump",
            "file",
            "/sys/kernel/btf/vmlinux",
            "format",
            "raw",
        ])
        .context("reading the kernel's BTF for struct sk_buff (needs bpftool and BTF)")?;
        let text = String::from_utf8_lossy(&raw);
        let data = btf_member_offset(&text, "sk_buff", "data")?;
        let cb = btf_member_offset(&text, "sk_buff", "cb")?;
        let end = btf_member_offset(&text, "bpf_skb_data_end", "data_end")?;
        Ok(Hook::Tc {
            data,
            data_end: cb + end,
        })
    }
}

/// The byte offset of `member` in `struct name`, from bpftool's raw BTF
/// dump (`[N] STRUCT 'name' size=S vlen=V`, then one tab-indented line per
/// member: `'member' type_id=T bits_offset=B`).
fn btf_member_offset(raw: &str, name: &str, member: &str) -> Result<u64> {
    let head = format!("] STRUCT '{name}' ");
    let mut lines = raw.lines();
    lines
        .find(|l| l.starts_with('[') && l.contains(&head))
        .with_context(|| format!("no struct {name} in the kernel's BTF"))?;
    let want = format!("'{member}' ");
    for l in lines.take_while(|l| l.starts_with('\t')) {
        let l = l.trim_start();
        if let Some(rest) = l.strip_prefix(&want) {
            let bits: u64 = rest
                .split_whitespace()
                .find_map(|w| w.strip_prefix("bits_offset="))
                .with_context(|| format!("{name}.{member}: no bits_offset in {l:?}"))?
                .parse()
                .with_context(|| format!("{name}.{member}: bits_offset in {l:?}"))?;
            ensure!(bits.is_multiple_of(8), "{name}.{member} is a bit field");
            return Ok(bits / 8);
        }
    }
    bail!("struct {name} has no member {member} in the kernel's BTF")
}

/// Runs stop with an error beyond this many instructions.
pub const MAX_STEPS: usize = 100_000;

// Where the interpreter puts things. Map `M` lives at `M << 32`, above all
// of these.
const CTX: u64 = 0x1000_0000;
const PACKET: u64 = 0x2000_0000;
/// `XDP_PACKET_HEADROOM`, as `BPF_PROG_TEST_RUN` gives.
const HEADROOM: u64 = 256;
const STACK: u64 = 0x3000_0000;
const STACK_SIZE: u64 = 512;
/// Offset of a per-CPU array's values from its map's base.
const PERCPU_DATA: u64 = 0x8000_0000;
/// `offsetof(struct bpf_array, value)` when the code does not tell (no
/// inlined array lookup): then nothing can observe it.
const DEFAULT_VALUE_OFF: u64 = 0x1000;

// Opcode fields.
const LD: u8 = 0x00;
const LDX: u8 = 0x01;
const ST: u8 = 0x02;
const STX: u8 = 0x03;
const ALU: u8 = 0x04;
const JMP: u8 = 0x05;
const JMP32: u8 = 0x06;
const ALU64: u8 = 0x07;
const LD_IMM64: u8 = 0x18;
/// `ALU64 | ADD | K`.
const ADD64_IMM: u8 = 0x07;
const MODE_MEM: u8 = 0x60;
const MODE_MEMSX: u8 = 0x80;
const MODE_ATOMIC: u8 = 0xc0;
const ST_NOSPEC: u8 = 0xc2;
const PSEUDO_MAP_FD: u8 = 1;
const PSEUDO_MAP_VALUE: u8 = 2;
const PSEUDO_MAP_IDX: u8 = 5;
const PSEUDO_MAP_IDX_VALUE: u8 = 6;
/// `BPF_ADDR_PERCPU`, the `off` of `BPF_MOV64_PERCPU_REG`.
const ADDR_PERCPU: i16 = -1;
const BPF_F_RDONLY_PROG: u64 = 0x80;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Insn {
    code: u8,
    dst: u8,
    src: u8,
    off: i16,
    imm: i32,
}

impl Insn {
    fn decode(b: &[u8]) -> Insn {
        Insn {
            code: b[0],
            dst: b[1] & 0x0f,
            src: b[1] >> 4,
            off: i16::from_le_bytes([b[2], b[3]]),
            imm: i32::from_le_bytes([b[4], b[5], b[6], b[7]]),
        }
    }

    fn class(self) -> u8 {
        self.code & 0x07
    }

    /// The operand of a `K` form, sign-extended to 64 bits.
    fn imm64(self) -> u64 {
        i64::from(self.imm) as u64
    }

    fn describe(self) -> String {
        format!(
            "opcode {:#04x} (dst r{}, src r{}, off {}, imm {})",
            self.code, self.dst, self.src, self.off, self.imm
        )
    }
}

/// A stretch of modelled memory.
struct Region<'a> {
    start: u64,
    bytes: Cow<'a, [u8]>,
    writable: bool,
    what: Cow<'a, str>,
    /// Which bytes hold a defined value; `None`: all of them. The stack
    /// starts undefined (the kernel's holds whatever was there before).
    defined: Option<Vec<bool>>,
}

impl Region<'_> {
    fn end(&self) -> u64 {
        self.start + self.bytes.len() as u64
    }

    fn borrowed(&self) -> Region<'_> {
        Region {
            start: self.start,
            bytes: Cow::Borrowed(&self.bytes),
            writable: self.writable,
            what: Cow::Borrowed(&self.what),
            defined: self.defined.clone(),
        }
    }
}

struct Memory<'a> {
    regions: Vec<Region<'a>>,
}

impl Memory<'_> {
    fn find(&self, addr: u64, size: u64) -> std::result::Result<usize, String> {
        for (i, r) in self.regions.iter().enumerate() {
            if addr >= r.start && addr < r.end() {
                return if addr.checked_add(size).is_some_and(|e| e <= r.end()) {
                    Ok(i)
                } else {
                    Err(format!(
                        "{size} bytes at {addr:#x} run past the end of {} ({:#x}..{:#x})",
                        r.what,
                        r.start,
                        r.end()
                    ))
                };
            }
        }
        Err(format!(
            "{size} bytes at {addr:#x}: no modelled memory there (a pointer into nowhere)"
        ))
    }

    /// The value at `addr` (zero-extended) and which of its 8 bytes are
    /// defined (bit i: byte i; the zero extension is).
    fn read(&self, addr: u64, size: u64) -> std::result::Result<(u64, u8), String> {
        let r = &self.regions[self.find(addr, size)?];
        let o = (addr - r.start) as usize;
        let mut defined = !low_bytes(size);
        for b in 0..size as usize {
            if r.defined.as_ref().is_none_or(|d| d[o + b]) {
                defined |= 1 << b;
            }
        }
        let mut buf = [0u8; 8];
        buf[..size as usize].copy_from_slice(&r.bytes[o..o + size as usize]);
        Ok((u64::from_le_bytes(buf), defined))
    }

    fn write(
        &mut self,
        addr: u64,
        size: u64,
        (value, defined): (u64, u8),
    ) -> std::result::Result<(), String> {
        let i = self.find(addr, size)?;
        let r = &mut self.regions[i];
        if !r.writable {
            return Err(format!(
                "{size} bytes at {addr:#x}: {} is read-only",
                r.what
            ));
        }
        let o = (addr - r.start) as usize;
        r.bytes.to_mut()[o..o + size as usize]
            .copy_from_slice(&value.to_le_bytes()[..size as usize]);
        let mask = low_bytes(size);
        if r.defined.is_some() || defined & mask != mask {
            let len = r.bytes.len();
            let d = r.defined.get_or_insert_with(|| vec![true; len]);
            for b in 0..size as usize {
                d[o + b] = defined & (1 << b) != 0;
            }
        }
        Ok(())
    }
}

/// The byte mask of the low `size` bytes.
fn low_bytes(size: u64) -> u8 {
    (0xffu16 >> (8 - size)) as u8
}

fn round8(n: u64) -> u64 {
    n.div_ceil(8) * 8
}

/// `bpftool`, from `PATH` or Debian's /usr/sbin.
fn bpftool() -> &'static str {
    let on_path = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("bpftool").is_file()));
    if on_path {
        "bpftool"
    } else {
        "/usr/sbin/bpftool"
    }
}

fn run_bpftool(args: &[&str]) -> Result<Vec<u8>> {
    let tool = bpftool();
    let out = Command::new(tool)
        .args(args)
        .output()
        .with_context(|| format!("running {tool} {}", args.join(" ")))?;
    ensure!(
        out.status.success(),
        "{tool} {} failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(out.stdout)
}

fn bpftool_json(args: &[&str]) -> Result<serde_json::Value> {
    let out = run_bpftool(args)?;
    serde_json::from_slice(&out)
        .with_context(|| format!("bpftool {} printed no JSON", args.join(" ")))
}

/// `["0x01", ...]` as bytes.
fn hex_bytes(v: &serde_json::Value) -> Result<Vec<u8>> {
    v.as_array()
        .context("not an array of bytes")?
        .iter()
        .map(|b| {
            let s = b.as_str().context("a byte that is not a string")?;
            u8::from_str_radix(s.trim_start_matches("0x"), 16)
                .with_context(|| format!("byte {s:?}"))
        })
        .collect()
}

fn u64_field(v: &serde_json::Value, key: &str) -> Result<u64> {
    v[key]
        .as_u64()
        .with_context(|| format!("no number {key:?} in {v}"))
}

/// The entries of an array map, from `bpftool map dump id M --json`.
fn array_values(id: u32, max_entries: u32) -> Result<Vec<Vec<u8>>> {
    let dump = bpftool_json(&["map", "dump", "id", &id.to_string(), "--json"])?;
    let mut values = vec![Vec::new(); max_entries as usize];
    for e in dump.as_array().context("map dump: not a list")? {
        let key = hex_bytes(&e["key"]).context("map dump: key")?;
        let key: [u8; 4] = key
            .try_into()
            .map_err(|k| anyhow!("map dump: a {}-byte array key", Vec::len(&k)))?;
        let i = u32::from_le_bytes(key) as usize;
        ensure!(i < values.len(), "map dump: key {i} beyond max_entries");
        values[i] = hex_bytes(&e["value"]).context("map dump: value")?;
    }
    Ok(values)
}

impl Program {
    /// Dumps the loaded program `prog_id` with `bpftool prog dump xlated id
    /// N file F` (raw 8-byte insns), reads its map ids from `bpftool prog
    /// show id N --json` and each map's type/value size/max entries from
    /// `bpftool map show id M --json`, and snapshots the contents of its
    /// (non-per-CPU) array maps from the kernel (`bpftool map dump id M
    /// --json`), so config written by the agent is what the interpreter sees.
    /// The names of called functions come from bpftool's own disassembly.
    pub fn load(prog_id: u32) -> Result<Program> {
        let id = prog_id.to_string();
        let file: PathBuf = std::env::temp_dir().join(format!(
            "xlated-{}-{prog_id}-{}.bin",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        let path = file.to_str().context("temporary path is not UTF-8")?;
        let dumped = run_bpftool(&["prog", "dump", "xlated", "id", &id, "file", path]);
        let raw = dumped.and_then(|_| {
            std::fs::read(&file).with_context(|| format!("reading {}", file.display()))
        });
        let _ = std::fs::remove_file(&file);
        let raw = raw.with_context(|| format!("dumping the xlated program {prog_id}"))?;

        let show = bpftool_json(&["prog", "show", "id", &id, "--json"])?;
        let hook = match show["type"].as_str() {
            Some("xdp") => Hook::Xdp,
            Some("sched_cls") => Hook::tc()?,
            t => bail!("program {prog_id} is of type {t:?}: only xdp and sched_cls are modelled"),
        };
        let mut maps = Vec::new();
        for m in show["map_ids"].as_array().map_or(&[][..], Vec::as_slice) {
            let map_id = u32::try_from(m.as_u64().context("a map id that is not a number")?)?;
            let info = bpftool_json(&["map", "show", "id", &map_id.to_string(), "--json"])?;
            let kind = info["type"]
                .as_str()
                .with_context(|| format!("map {map_id}: no type"))?
                .to_owned();
            let value_size = u32::try_from(u64_field(&info, "bytes_value")?)?;
            let max_entries = u32::try_from(u64_field(&info, "max_entries")?)?;
            let values = if kind == "array" {
                array_values(map_id, max_entries)
                    .with_context(|| format!("snapshotting array map {map_id}"))?
            } else {
                Vec::new()
            };
            maps.push(MapSnapshot {
                id: map_id,
                name: info["name"].as_str().unwrap_or("").to_owned(),
                kind,
                value_size,
                max_entries,
                read_only: u64_field(&info, "flags")? & BPF_F_RDONLY_PROG != 0,
                values,
            });
        }
        let mut program = Program::from_parts(&raw, maps)
            .with_context(|| format!("the xlated program {prog_id}"))?;
        program.hook = hook;
        // Names are a convenience: a bpftool whose disassembly does not line
        // up with the raw dump gives none.
        if let Ok(json) = bpftool_json(&["prog", "dump", "xlated", "id", &id, "--json"]) {
            program.names = call_names(&program, &json).unwrap_or_default();
        }
        Ok(program)
    }

    /// A program from raw xlated instructions (8 bytes each, host order) and
    /// the maps its `LD_IMM64`s name by id: what [`Program::load`] builds
    /// from the kernel, and what hand-assembled tests build directly.
    pub fn from_parts(raw: &[u8], maps: Vec<MapSnapshot>) -> Result<Program> {
        ensure!(
            !raw.is_empty() && raw.len().is_multiple_of(8),
            "{} bytes are not whole 8-byte instructions",
            raw.len()
        );
        let insns: Vec<Insn> = raw.chunks_exact(8).map(Insn::decode).collect();
        let mut second = vec![false; insns.len()];
        let mut pc = 0;
        while pc < insns.len() {
            if insns[pc].code == LD_IMM64 {
                ensure!(
                    pc + 1 < insns.len() && insns[pc + 1].code == 0,
                    "pc {pc}: an LD_IMM64 without its second slot"
                );
                second[pc + 1] = true;
                pc += 2;
            } else {
                pc += 1;
            }
        }
        let maps: BTreeMap<u32, MapSnapshot> = maps.into_iter().map(|m| (m.id, m)).collect();
        let mut program = Program {
            insns,
            second,
            names: BTreeMap::new(),
            maps,
            value_off: DEFAULT_VALUE_OFF,
            regions: Vec::new(),
            hook: Hook::Xdp,
        };
        if let Some(k) = program.learn_value_off()? {
            program.value_off = k;
        }
        program.regions = program.map_regions()?;
        Ok(program)
    }

    /// The number of xlated instruction slots (bpftool's numbering).
    pub fn len(&self) -> usize {
        self.insns.len()
    }

    /// `offsetof(struct bpf_array, value)` as the inlined lookups add it.
    #[allow(
        dead_code,
        reason = "the suite's xlated tests use it, the bench does not"
    )]
    pub fn array_value_offset(&self) -> u64 {
        self.value_off
    }

    /// What the call at `pc` calls, as bpftool names it (the kernel function
    /// of a helper, e.g. `bpf_ktime_get_coarse_ns` or
    /// `htab_lru_percpu_map_lookup_elem`; the `bpf_prog_<tag>_<name>` of a
    /// BPF-to-BPF callee), when bpftool could tell.
    pub fn call_name(&self, pc: usize) -> Option<&str> {
        self.names.get(&pc).map(String::as_str)
    }

    /// The maps the program uses.
    #[allow(
        dead_code,
        reason = "the suite's xlated tests use it, the bench does not"
    )]
    pub fn maps(&self) -> impl Iterator<Item = &MapSnapshot> {
        self.maps.values()
    }

    fn map_base(id: u32) -> u64 {
        u64::from(id) << 32
    }

    fn is_array(&self, id: u32) -> bool {
        self.maps
            .get(&id)
            .is_some_and(|m| m.kind == "array" || m.kind == "percpu_array")
    }

    /// Finds K in the inlined lookups: an `LD_IMM64` of an (per-CPU) array
    /// map's pointer followed, before anything else writes that register or
    /// control flow leaves the block, by `ALU64 ADD reg, K`. The program
    /// itself may not do arithmetic on a map pointer, so that add is the
    /// verifier's. All of them must agree.
    fn learn_value_off(&self) -> Result<Option<u64>> {
        let mut found: Option<(usize, u64)> = None;
        for (pc, i) in self.insns.iter().enumerate() {
            if i.code != LD_IMM64
                || !matches!(i.src, PSEUDO_MAP_FD | PSEUDO_MAP_IDX)
                || !self.is_array(i.imm as u32)
            {
                continue;
            }
            let reg = i.dst;
            for (j, n) in self.insns.iter().enumerate().skip(pc + 2) {
                if self.second[j] {
                    continue;
                }
                if n.code == ADD64_IMM && n.dst == reg && n.src == 0 && n.off == 0 {
                    let k = n.imm64();
                    if let Some((at, prev)) = found {
                        ensure!(
                            prev == k,
                            "the inlined array lookups disagree on offsetof(struct bpf_array, \
                             value): {prev} at pc {at}, {k} at pc {j}"
                        );
                    }
                    found = Some((j, k));
                    break;
                }
                let class = n.class();
                if class == JMP || class == JMP32 || writes_reg(*n, reg) {
                    break;
                }
            }
        }
        Ok(found.map(|f| f.1))
    }

    fn map_regions(&self) -> Result<Vec<Region<'static>>> {
        let mut regions = Vec::new();
        for m in self.maps.values() {
            let base = Program::map_base(m.id);
            let elem = round8(u64::from(m.value_size));
            let n = u64::from(m.max_entries);
            match m.kind.as_str() {
                "array" => {
                    let mut bytes = vec![0u8; (n * elem) as usize];
                    for (i, v) in m.values.iter().enumerate() {
                        ensure!(
                            v.len() as u64 <= u64::from(m.value_size) && (i as u64) < n,
                            "map {}: entry {i} of {} bytes does not fit",
                            m.id,
                            v.len()
                        );
                        let at = i * elem as usize;
                        bytes[at..at + v.len()].copy_from_slice(v);
                    }
                    regions.push(Region {
                        start: base + self.value_off,
                        bytes: Cow::Owned(bytes),
                        writable: !m.read_only,
                        what: Cow::Owned(format!("the values of array map {} {}", m.id, m.name)),
                        defined: None,
                    });
                }
                "percpu_array" => {
                    ensure!(
                        self.value_off + n * 8 <= PERCPU_DATA && n * elem < 1 << 31,
                        "map {}: too large for this model",
                        m.id
                    );
                    let pptrs: Vec<u8> = (0..n)
                        .flat_map(|i| (base + PERCPU_DATA + i * elem).to_le_bytes())
                        .collect();
                    regions.push(Region {
                        start: base + self.value_off,
                        bytes: Cow::Owned(pptrs),
                        writable: false,
                        what: Cow::Owned(format!(
                            "the per-CPU pointers of map {} {}",
                            m.id, m.name
                        )),
                        defined: None,
                    });
                    regions.push(Region {
                        start: base + PERCPU_DATA,
                        bytes: Cow::Owned(vec![0u8; (n * elem) as usize]),
                        writable: !m.read_only,
                        what: Cow::Owned(format!(
                            "CPU 0's values of per-CPU array map {} {}",
                            m.id, m.name
                        )),
                        defined: None,
                    });
                }
                _ => {}
            }
        }
        Ok(regions)
    }

    /// The value of an `LD_IMM64` at `pc`.
    fn ld_imm64(&self, pc: usize, i: Insn) -> Result<u64> {
        let hi = self.insns[pc + 1];
        match i.src {
            0 => Ok((u64::from(hi.imm as u32) << 32) | u64::from(i.imm as u32)),
            PSEUDO_MAP_FD | PSEUDO_MAP_IDX => {
                let id = i.imm as u32;
                ensure!(
                    self.maps.contains_key(&id),
                    "map id {id} is not among the program's maps"
                );
                ensure!(hi.imm == 0, "a map pointer with an offset {}", hi.imm);
                Ok(Program::map_base(id))
            }
            PSEUDO_MAP_VALUE | PSEUDO_MAP_IDX_VALUE => {
                let id = i.imm as u32;
                let m = self
                    .maps
                    .get(&id)
                    .with_context(|| format!("map id {id} is not among the program's maps"))?;
                let off = u64::from(hi.imm as u32);
                let base = Program::map_base(id);
                match m.kind.as_str() {
                    "array" => Ok(base + self.value_off + off),
                    // `percpu_array_map_direct_value_addr`: `pptrs[0]`, made
                    // this CPU's by a `BPF_MOV64_PERCPU_REG`.
                    "percpu_array" => Ok(base + PERCPU_DATA + off),
                    k => bail!("a direct value of a {k} map (id {id})"),
                }
            }
            s => bail!("LD_IMM64 with src_reg {s} is not modelled"),
        }
    }

    fn memory(&self, frame: &[u8]) -> Memory<'_> {
        let data = PACKET + HEADROOM;
        let data_end = data + frame.len() as u64;
        let ctx = match self.hook {
            Hook::Xdp => {
                let mut ctx = Vec::with_capacity(32);
                for p in [data, data_end, data, PACKET] {
                    ctx.extend_from_slice(&p.to_le_bytes());
                }
                Region {
                    start: CTX,
                    bytes: Cow::Owned(ctx),
                    writable: false,
                    what: Cow::Borrowed(
                        "the context (struct xdp_buff: data, data_end, data_meta, \
                         data_hard_start)",
                    ),
                    defined: None,
                }
            }
            Hook::Tc {
                data: at,
                data_end: end_at,
            } => {
                let len = (at.max(end_at) + 8) as usize;
                let mut ctx = vec![0u8; len];
                let mut defined = vec![false; len];
                for (o, p) in [(at, data), (end_at, data_end)] {
                    let o = o as usize;
                    ctx[o..o + 8].copy_from_slice(&p.to_le_bytes());
                    defined[o..o + 8].fill(true);
                }
                Region {
                    start: CTX,
                    bytes: Cow::Owned(ctx),
                    writable: false,
                    what: Cow::Borrowed("the context (struct sk_buff: data, cb's data_end)"),
                    defined: Some(defined),
                }
            }
        };
        let mut packet = vec![0u8; HEADROOM as usize];
        packet.extend_from_slice(frame);
        let mut regions: Vec<Region<'_>> = vec![
            ctx,
            Region {
                start: PACKET,
                bytes: Cow::Owned(packet),
                writable: true,
                what: Cow::Borrowed("the packet (headroom and frame)"),
                defined: None,
            },
            Region {
                start: STACK,
                bytes: Cow::Owned(vec![0u8; STACK_SIZE as usize]),
                writable: true,
                what: Cow::Borrowed("the stack"),
                defined: Some(vec![false; STACK_SIZE as usize]),
            },
        ];
        regions.extend(self.regions.iter().map(Region::borrowed));
        Memory { regions }
    }

    /// Runs the program on `frame` from instruction 0 until `exit` of the
    /// entry function. At the first call instruction it records it and
    /// stops (`ret` None, the instructions counted so far, the call
    /// included).
    pub fn run(&self, frame: &[u8]) -> Result<Path> {
        self.exec(frame, None)
    }

    /// [`Program::run`], and the pc of every instruction executed, in order
    /// (to read a path against `bpftool prog dump xlated`).
    #[allow(
        dead_code,
        reason = "the suite's xlated tests use it, the bench does not"
    )]
    pub fn run_traced(&self, frame: &[u8]) -> Result<(Path, Vec<usize>)> {
        let mut trace = Vec::new();
        let path = self.exec(frame, Some(&mut trace))?;
        Ok((path, trace))
    }

    fn exec(&self, frame: &[u8], mut trace: Option<&mut Vec<usize>>) -> Result<Path> {
        let mut mem = self.memory(frame);
        let mut r = Regs::default();
        r.init(1, CTX);
        r.init(10, STACK + STACK_SIZE);
        let mut pc = 0usize;
        let mut insns = 0usize;
        loop {
            ensure!(
                insns < MAX_STEPS,
                "no exit after {MAX_STEPS} instructions (last pc {pc})"
            );
            let Some(&i) = self.insns.get(pc) else {
                bail!(
                    "pc {pc}: beyond the program's {} instructions",
                    self.insns.len()
                );
            };
            if self.second[pc] {
                bail!("pc {pc}: a jump into the second slot of an LD_IMM64");
            }
            insns += 1;
            if let Some(t) = trace.as_deref_mut() {
                t.push(pc);
            }
            let fail = |msg: String| anyhow!("pc {pc}: {}: {msg}", i.describe());
            if i.dst > 10 || i.src > 10 {
                return Err(fail("no such register".into()));
            }
            match i.class() {
                ALU | ALU64 => {
                    self.alu(i, &mut r).map_err(fail)?;
                    pc += 1;
                }
                JMP | JMP32 => match self.jump(pc, i, &r).map_err(fail)? {
                    Flow::Next(next) => pc = next,
                    Flow::Exit => {
                        return Ok(Path {
                            insns,
                            calls: Vec::new(),
                            ret: Some(r.need(0).map_err(fail)?),
                        })
                    }
                    Flow::Call(kind) => {
                        return Ok(Path {
                            insns,
                            calls: vec![Call { pc, kind }],
                            ret: None,
                        })
                    }
                },
                LD => {
                    if i.code != LD_IMM64 {
                        return Err(fail(
                            "legacy packet loads (LD_ABS/LD_IND) are not modelled".into(),
                        ));
                    }
                    let v = self.ld_imm64(pc, i).map_err(|e| fail(format!("{e:#}")))?;
                    r.set(i.dst, (v, ALL)).map_err(fail)?;
                    pc += 2;
                }
                LDX => {
                    ldx(i, &mut r, &mem).map_err(fail)?;
                    pc += 1;
                }
                ST | STX => {
                    store(i, &mut r, &mut mem).map_err(fail)?;
                    pc += 1;
                }
                _ => unreachable!("three bits of class"),
            }
        }
    }

    fn alu(&self, insn: Insn, regs: &mut Regs) -> std::result::Result<(), String> {
        let wide = insn.class() == ALU64;
        let op = insn.code & 0xf0;
        let by_reg = insn.code & 0x08 != 0;
        let (d, d_def) = regs.get(insn.dst);
        if op == 0xd0 {
            // Defined if the swapped (or kept) bytes are.
            let w = low_bytes(u64::from(insn.imm.clamp(8, 64) as u32 / 8));
            let defined = if d_def & w == w { ALL } else { 0 };
            return regs.set(insn.dst, (endian(insn, d)?, defined));
        }
        if by_reg {
            if insn.imm != 0 {
                return Err("a register operand with a nonzero imm".into());
            }
        } else if insn.src != 0 {
            return Err("an immediate operand with a nonzero src_reg".into());
        }
        let (s, s_def) = if by_reg {
            regs.get(insn.src)
        } else {
            (insn.imm64(), ALL)
        };
        let defined = alu_defined(insn, wide, d_def, s, s_def);
        // Which `off` each operation allows.
        let off_ok = match (op, by_reg) {
            (0x30 | 0x90, _) => matches!(insn.off, 0 | 1),
            (0xb0, true) if wide => matches!(insn.off, 0 | 8 | 16 | 32 | ADDR_PERCPU),
            (0xb0, true) => matches!(insn.off, 0 | 8 | 16),
            _ => insn.off == 0,
        };
        if !off_ok {
            return Err(format!(
                "off {} is not modelled for this operation",
                insn.off
            ));
        }
        if wide && op == 0x00 && !by_reg {
            self.check_map_pointer_add(d, s)?;
        }
        let v = if wide {
            alu64(op, insn.off, by_reg, d, s)?
        } else {
            u64::from(alu32(op, insn.off, by_reg, d as u32, s as u32)?)
        };
        regs.set(insn.dst, (v, defined))
    }

    /// The inlined array lookup adds K to a map pointer; any other
    /// arithmetic on one is not the kernel's.
    fn check_map_pointer_add(&self, d: u64, s: u64) -> std::result::Result<(), String> {
        let id = (d >> 32) as u32;
        if d.trailing_zeros() >= 32
            && self.maps.contains_key(&id)
            && (!self.is_array(id) || s != self.value_off)
        {
            return Err(format!(
                "adds {} to the pointer of map {id}: not an inlined array lookup \
                 (offsetof(struct bpf_array, value) is {})",
                s as i64, self.value_off
            ));
        }
        Ok(())
    }

    fn jump(&self, pc: usize, insn: Insn, regs: &Regs) -> std::result::Result<Flow, String> {
        let wide = insn.class() == JMP;
        let op = insn.code & 0xf0;
        let by_reg = insn.code & 0x08 != 0;
        let target = |delta: i64| -> std::result::Result<Flow, String> {
            let t = pc as i64 + 1 + delta;
            if t < 0 || t as usize >= self.insns.len() {
                return Err(format!("jumps to {t}, outside the program"));
            }
            Ok(Flow::Next(t as usize))
        };
        match op {
            0x00 => {
                if by_reg || insn.src != 0 || insn.dst != 0 {
                    return Err("a malformed JA".into());
                }
                // JA uses off; JMP32 JA (gotol) uses imm.
                if wide {
                    if insn.imm != 0 {
                        return Err("JA with a nonzero imm".into());
                    }
                    target(i64::from(insn.off))
                } else {
                    if insn.off != 0 {
                        return Err("gotol with a nonzero off".into());
                    }
                    target(i64::from(insn.imm))
                }
            }
            0x80 if wide && !by_reg => Ok(Flow::Call(match insn.src {
                0 => CallKind::Helper(insn.imm),
                1 => CallKind::BpfToBpf(i32::from(insn.off)),
                2 => CallKind::Kfunc(insn.imm),
                s => return Err(format!("a call with src_reg {s} is not modelled")),
            })),
            0x90 if wide && !by_reg => Ok(Flow::Exit),
            0x10..=0x70 | 0xa0..=0xd0 => {
                if by_reg && insn.imm != 0 || !by_reg && insn.src != 0 {
                    return Err("a malformed conditional jump".into());
                }
                // A branch on an undefined value would be a guess.
                let width = if wide { ALL } else { low_bytes(4) };
                let a = regs.need_bytes(insn.dst, width)?;
                let b = if by_reg {
                    regs.need_bytes(insn.src, width)?
                } else {
                    insn.imm64()
                };
                let (a, b) = if wide {
                    (a, b)
                } else {
                    (u64::from(a as u32), u64::from(b as u32))
                };
                // Signed views of the compared width.
                let (sa, sb) = if wide {
                    (a as i64, b as i64)
                } else {
                    (i64::from(a as u32 as i32), i64::from(b as u32 as i32))
                };
                let taken = match op {
                    0x10 => a == b,
                    0x20 => a > b,
                    0x30 => a >= b,
                    0x40 => a & b != 0,
                    0x50 => a != b,
                    0x60 => sa > sb,
                    0x70 => sa >= sb,
                    0xa0 => a < b,
                    0xb0 => a <= b,
                    0xc0 => sa < sb,
                    _ => sa <= sb,
                };
                if taken {
                    target(i64::from(insn.off))
                } else {
                    Ok(Flow::Next(pc + 1))
                }
            }
            _ => Err("not a modelled jump".into()),
        }
    }
}

/// Defines `$name`, an ALU operation (`op` the operation bits, `off` its
/// variant) on `$u` values (`$i` their signed view, `$mask` the shift count
/// mask): [`alu64`], and [`alu32`], whose caller zero-extends the result.
macro_rules! alu {
    ($name:ident, $u:ty, $i:ty, $mask:literal, $what:literal) => {
        fn $name(op: u8, off: i16, by_reg: bool, d: $u, s: $u) -> std::result::Result<$u, String> {
            Ok(match op {
                0x00 => d.wrapping_add(s),
                0x10 => d.wrapping_sub(s),
                0x20 => d.wrapping_mul(s),
                0x30 => match (s, off) {
                    (0, _) => 0,
                    (_, 0) => d / s,
                    _ => (d as $i).wrapping_div(s as $i) as $u,
                },
                0x40 => d | s,
                0x50 => d & s,
                0x60 => d << (s & $mask),
                0x70 => d >> (s & $mask),
                0x80 if !by_reg => d.wrapping_neg(),
                0x90 => match (s, off) {
                    (0, _) => d,
                    (_, 0) => d % s,
                    _ => (d as $i).wrapping_rem(s as $i) as $u,
                },
                0xa0 => d ^ s,
                0xb0 => match off {
                    8 => <$i>::from(s as u8 as i8) as $u,
                    16 => <$i>::from(s as u16 as i16) as $u,
                    // From 32 bits: for a 32-bit value, all of it.
                    32 => <$i>::from(s as u32 as i32) as $u,
                    // A plain move (off 0), or BPF_MOV64_PERCPU_REG (off
                    // -1), which adds this CPU's per-CPU offset: CPU 0's, 0.
                    _ => s,
                },
                0xc0 => ((d as $i) >> (s & $mask)) as $u,
                _ => return Err(concat!("not a modelled ", $what, " operation").into()),
            })
        }
    };
}

alu!(alu64, u64, i64, 63, "ALU64");
alu!(alu32, u32, i32, 31, "ALU");

/// Which bytes of an ALU result are defined, from those of its operands
/// (`s` is the operand's value, for masks and shifts by a constant).
fn alu_defined(insn: Insn, wide: bool, d: u8, s: u64, s_def: u8) -> u8 {
    let op = insn.code & 0xf0;
    let by_reg = insn.code & 0x08 != 0;
    let width = if wide { ALL } else { low_bytes(4) };
    // Bytes of a constant AND mask that are zero give zero bytes.
    let zero_bytes = (0..8u8)
        .filter(|b| !by_reg && (s >> (b * 8)) as u8 == 0)
        .fold(0u8, |m, b| m | (1 << b));
    // Bytes up to the first undefined one (carries propagate upwards).
    let prefix = |m: u8| low_bytes(u64::from((m & width).trailing_ones().min(8)));
    let all_or_nothing = |m: u8| if m & width == width { ALL } else { 0 };
    let shift = (s & if wide { 63 } else { 31 }) as u32;
    let low = match op {
        // A move reads only its source (movsx: the bytes it extends).
        0xb0 => match insn.off {
            8 | 16 | 32 => all_or_nothing(s_def | !low_bytes(u64::from(insn.off as u16 / 8))),
            _ => s_def,
        },
        // `r ^= r` and `r -= r` are 0 whatever r holds.
        0x10 | 0xa0 if by_reg && insn.src == insn.dst => ALL,
        // Bytewise operations.
        0x40 | 0xa0 => d & s_def,
        0x50 => (d & s_def) | zero_bytes,
        // Carries go up.
        0x00 | 0x10 | 0x20 => prefix(d & s_def),
        0x80 => prefix(d),
        // Shifts by a whole number of bytes move the defined bytes.
        0x60 if !by_reg && shift.is_multiple_of(8) => {
            ((d & width) << (shift / 8)) | low_bytes(u64::from(shift / 8))
        }
        0x70 if !by_reg && shift.is_multiple_of(8) => {
            (d & width) >> (shift / 8) | (width & !(width >> (shift / 8)))
        }
        _ => all_or_nothing(d & s_def),
    };
    // ALU32 results are zero-extended.
    if wide {
        low
    } else {
        (low & width) | !width
    }
}

enum Flow {
    Next(usize),
    Exit,
    Call(CallKind),
}

/// All 8 bytes of a register defined.
const ALL: u8 = 0xff;

/// The registers, each with which of its bytes are defined: set by the
/// program (or the kernel: r1, r10) from defined values. Bytes read from
/// the stack where nothing was written are not, and neither is what is
/// computed from them. An undefined value may be moved and stored (struct
/// padding is), but a branch on it, an address made from it or returning
/// it is an error: the kernel would act on whatever was there.
#[derive(Default)]
struct Regs {
    v: [u64; 11],
    defined: [u8; 11],
}

impl Regs {
    fn init(&mut self, reg: u8, v: u64) {
        self.v[reg as usize] = v;
        self.defined[reg as usize] = ALL;
    }

    fn get(&self, reg: u8) -> (u64, u8) {
        (self.v[reg as usize], self.defined[reg as usize])
    }

    /// The value of `reg`, all of which must be defined.
    fn need(&self, reg: u8) -> std::result::Result<u64, String> {
        self.need_bytes(reg, ALL)
    }

    /// The value of `reg`, whose bytes in `mask` must be defined.
    fn need_bytes(&self, reg: u8, mask: u8) -> std::result::Result<u64, String> {
        if self.defined[reg as usize] & mask == mask {
            Ok(self.v[reg as usize])
        } else {
            Err(format!(
                "uses r{reg}, whose value is undefined (never set, or read from stack bytes \
                 never written)"
            ))
        }
    }

    fn set(&mut self, reg: u8, (v, defined): (u64, u8)) -> std::result::Result<(), String> {
        if reg == 10 {
            return Err("writes r10, the read-only frame pointer".into());
        }
        self.v[reg as usize] = v;
        self.defined[reg as usize] = defined;
        Ok(())
    }
}

/// Does `i` write `reg`? (For the scan that learns K: conservative.)
fn writes_reg(i: Insn, reg: u8) -> bool {
    match i.class() {
        ALU | ALU64 | LD | LDX => i.dst == reg,
        // An atomic with BPF_FETCH writes its src (CMPXCHG writes r0).
        STX => i.code & 0xe0 == MODE_ATOMIC && (i.src == reg || reg == 0),
        _ => false,
    }
}

fn endian(i: Insn, d: u64) -> std::result::Result<u64, String> {
    let swap = match (i.class(), i.code & 0x08) {
        // BPF_TO_LE on a little-endian machine: truncate.
        (ALU, 0x00) => false,
        // BPF_TO_BE, and ALU64's unconditional bswap.
        (ALU, _) | (ALU64, 0x00) => true,
        _ => return Err("not a modelled byte-swap".into()),
    };
    if i.src != 0 || i.off != 0 {
        return Err("a malformed byte-swap".into());
    }
    Ok(match (i.imm, swap) {
        (16, false) => d & 0xffff,
        (32, false) => d & 0xffff_ffff,
        (64, false) => d,
        (16, true) => u64::from((d as u16).swap_bytes()),
        (32, true) => u64::from((d as u32).swap_bytes()),
        (64, true) => d.swap_bytes(),
        (w, _) => return Err(format!("a byte-swap of width {w}")),
    })
}

fn size_of(code: u8) -> u64 {
    match code & 0x18 {
        0x00 => 4,
        0x08 => 2,
        0x10 => 1,
        _ => 8,
    }
}

fn sign_extend(v: u64, size: u64) -> u64 {
    match size {
        1 => i64::from(v as u8 as i8) as u64,
        2 => i64::from(v as u16 as i16) as u64,
        4 => i64::from(v as u32 as i32) as u64,
        _ => v,
    }
}

fn ldx(i: Insn, r: &mut Regs, mem: &Memory) -> std::result::Result<(), String> {
    let size = size_of(i.code);
    let mode = i.code & 0xe0;
    if !(mode == MODE_MEM || mode == MODE_MEMSX && size != 8) || i.imm != 0 {
        return Err("not a modelled load".into());
    }
    let addr = r.need(i.src)?.wrapping_add(i64::from(i.off) as u64);
    let (v, defined) = mem.read(addr, size)?;
    if mode == MODE_MEMSX {
        // The extension is as defined as the sign bit's byte.
        let top = defined & (1 << (size - 1)) != 0;
        let low = defined & low_bytes(size);
        let defined = if top { low | !low_bytes(size) } else { low };
        return r.set(i.dst, (sign_extend(v, size), defined));
    }
    r.set(i.dst, (v, defined))
}

fn store(i: Insn, r: &mut Regs, mem: &mut Memory) -> std::result::Result<(), String> {
    if i.code == ST_NOSPEC {
        // A speculation barrier: nothing for a sequential machine.
        return Ok(());
    }
    let size = size_of(i.code);
    let mode = i.code & 0xe0;
    if mode == MODE_MEM {
        let addr = r.need(i.dst)?.wrapping_add(i64::from(i.off) as u64);
        let v = if i.class() == ST {
            if i.src != 0 {
                return Err("ST with a nonzero src_reg".into());
            }
            (i.imm64(), ALL)
        } else {
            if i.imm != 0 {
                return Err("STX with a nonzero imm".into());
            }
            r.get(i.src)
        };
        return mem.write(addr, size, v);
    }
    if i.class() != STX || mode != MODE_ATOMIC {
        return Err("not a modelled store".into());
    }
    atomic(i, size, r, mem)
}

/// `BPF_ATOMIC`: the read-modify-write operations, exchange, compare and
/// exchange, load-acquire and store-release. One CPU: plain sequential
/// semantics. Every operand must be defined.
fn atomic(i: Insn, size: u64, r: &mut Regs, mem: &mut Memory) -> std::result::Result<(), String> {
    let off = i64::from(i.off) as u64;
    let mask = u64::MAX >> (64 - size * 8);
    let src = r.need(i.src)?;
    match i.imm {
        // BPF_LOAD_ACQ: dst = *(src + off), zero-extended.
        0x100 => {
            let loaded = mem.read(src.wrapping_add(off), size)?;
            return r.set(i.dst, loaded);
        }
        // BPF_STORE_REL: *(dst + off) = src.
        0x110 => {
            let addr = r.need(i.dst)?.wrapping_add(off);
            return mem.write(addr, size, (src & mask, ALL));
        }
        _ => {}
    }
    if size != 4 && size != 8 {
        return Err("an atomic read-modify-write of 1 or 2 bytes".into());
    }
    let addr = r.need(i.dst)?.wrapping_add(off);
    let (old, defined) = mem.read(addr, size)?;
    if defined != ALL {
        return Err(format!(
            "an atomic operation on {size} undefined bytes at {addr:#x}"
        ));
    }
    let fetch = i.imm & 0x01 != 0;
    let new = match i.imm & !0x01 {
        0x00 => old.wrapping_add(src),
        0x40 => old | src,
        0x50 => old & src,
        0xa0 => old ^ src,
        0xe0 if fetch => src,
        0xf0 if fetch => {
            // CMPXCHG: compare with r0, r0 = old.
            let new = if old == r.need(0)? & mask { src } else { old };
            mem.write(addr, size, (new & mask, ALL))?;
            return r.set(0, (old, ALL));
        }
        _ => return Err("not a modelled atomic operation".into()),
    };
    mem.write(addr, size, (new & mask, ALL))?;
    if fetch {
        r.set(i.src, (old, ALL))?;
    }
    Ok(())
}

/// The callee names in bpftool's disassembly (`--json`: one entry per
/// instruction, an `LD_IMM64` counting once), by pc. `None` if the listing
/// does not line up with the raw instructions.
fn call_names(p: &Program, json: &serde_json::Value) -> Option<BTreeMap<usize, String>> {
    let entries = json.as_array()?;
    let mut names = BTreeMap::new();
    let mut pc = 0;
    for e in entries {
        let i = *p.insns.get(pc)?;
        let disasm = e["disasm"].as_str()?;
        let code = format!("({:02x})", i.code);
        if !disasm.starts_with(&code) {
            return None;
        }
        if i.code == (JMP | 0x80) {
            let call = disasm[code.len()..].trim().strip_prefix("call ")?;
            let name = match call.split_once('#') {
                Some((target, name)) if target.starts_with("pc") => name,
                Some((name, _)) => name,
                None => call,
            };
            names.insert(pc, name.to_owned());
        }
        pc += if i.code == LD_IMM64 { 2 } else { 1 };
    }
    (pc == p.insns.len()).then_some(names)
}
