//! The xlated-instruction interpreter (`tests/support/xlated.rs`): checked on
//! hand-assembled instruction sequences, then against the kernel itself on
//! the product's loaded program (the action it reaches at `exit` must be
//! the one `BPF_PROG_TEST_RUN` returns for the same frame and
//! configuration), and used for the requirement: the paths of
//! traffic that is not NAT-PMP and of untagged IPv4/IPv6 NAT-PMP requests
//! make no call.
//!
//! The kernel tests need root; they load the program but attach it nowhere.

use nat_pmp_agent::{bpf::Filter, probe::sample_payload};
use nat_pmp_ebpf_common::{
    frames::{ethernet, ethernet_pppoe, padded, v4},
    headers::{ETH_P_8021Q, ETH_P_IP, PPP_IP},
    Class, Mode, NATPMP_PORT,
};

use crate::support::{
    frames::{tcp4, tcp6, udp4, udp6},
    require_root,
    xdp::{action_name, XDP_PASS},
    xlated::{Call, CallKind, MapSnapshot, Path, Program},
};

// ---------------------------------------------------------------------------
// The interpreter on hand-assembled code.

/// One instruction, encoded as the kernel stores it (little-endian host).
fn ins(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> [u8; 8] {
    let mut b = [0u8; 8];
    b[0] = code;
    b[1] = (src << 4) | dst;
    b[2..4].copy_from_slice(&off.to_le_bytes());
    b[4..8].copy_from_slice(&imm.to_le_bytes());
    b
}

/// `LD_IMM64 dst, v` (two slots) with `src_reg` `src`.
fn ld64(dst: u8, src: u8, v: u64) -> [[u8; 8]; 2] {
    #[expect(clippy::cast_possible_truncation, reason = "the two halves")]
    [
        ins(0x18, dst, src, 0, (v as u32).cast_signed()),
        ins(0, 0, 0, 0, ((v >> 32) as u32).cast_signed()),
    ]
}

const EXIT: [u8; 8] = [0x95, 0, 0, 0, 0, 0, 0, 0];

fn assemble(code: &[[u8; 8]]) -> Vec<u8> {
    code.concat()
}

fn run_on(code: &[[u8; 8]], maps: Vec<MapSnapshot>, frame: &[u8]) -> anyhow::Result<Path> {
    Program::from_parts(&assemble(code), maps)?.run(frame)
}

/// Runs `code` (no maps, a 60-byte frame) to its exit and returns r0.
fn ret(code: &[[u8; 8]]) -> u64 {
    let path = run_on(code, Vec::new(), &[0u8; 60]).expect("the sequence runs");
    assert!(path.calls.is_empty());
    path.ret.expect("reaches exit")
}

fn neg(v: i64) -> u64 {
    u64::from_ne_bytes(v.to_ne_bytes())
}

#[test]
fn alu64_and_alu32() {
    // -7 / 2 and -7 % 2: signed (off 1), truncating towards zero, or not.
    let div = |op: u8, off: i16| {
        vec![
            ins(0xb7, 0, 0, 0, -7),
            ins(0xb7, 1, 0, 0, 2),
            ins(op, 0, 1, off, 0),
            EXIT,
        ]
    };
    // 0xffff_ffff_0000_0005 divided by zero, or modulo zero.
    let by_zero = |op: u8| {
        let mut c = ld64(0, 0, 0xffff_ffff_0000_0005).to_vec();
        c.extend([ins(0xb7, 1, 0, 0, 0), ins(op, 0, 1, 0, 0), EXIT]);
        c
    };
    // What the sequence does, the sequence, r0 at its exit.
    let cases: Vec<(&str, Vec<[u8; 8]>, u64)> = vec![
        (
            "w0 = -1 zero-extends; r0 += 1 carries into the upper half",
            vec![ins(0xb4, 0, 0, 0, -1), ins(0x07, 0, 0, 0, 1), EXIT],
            1 << 32,
        ),
        (
            "r0 = -1 sign-extends; w0 += 1 wraps and clears the upper half",
            vec![ins(0xb7, 0, 0, 0, -1), ins(0x04, 0, 0, 0, 1), EXIT],
            0,
        ),
        ("signed division", div(0x3f, 1), neg(-3)),
        ("signed modulo", div(0x9f, 1), neg(-1)),
        ("unsigned: -7 as u64 / 2", div(0x3f, 0), neg(-7) / 2),
        ("division by zero gives 0", by_zero(0x3f), 0),
        (
            "modulo by zero keeps the dividend",
            by_zero(0x9f),
            0xffff_ffff_0000_0005,
        ),
        ("ALU32 division by zero gives 0", by_zero(0x3c), 0),
        (
            "ALU32 modulo by zero keeps the dividend's low half",
            by_zero(0x9c),
            5,
        ),
        (
            "arithmetic shift, 64-bit",
            vec![ins(0xb7, 0, 0, 0, -16), ins(0xc7, 0, 0, 0, 2), EXIT],
            neg(-4),
        ),
        (
            "arithmetic shift, 32-bit",
            vec![ins(0xb4, 0, 0, 0, i32::MIN), ins(0xc4, 0, 0, 0, 4), EXIT],
            0xf800_0000,
        ),
        (
            "shift counts are masked to the width",
            vec![
                ins(0xb7, 0, 0, 0, 1),
                ins(0xb7, 1, 0, 0, 65),
                ins(0x6f, 0, 1, 0, 0),
                EXIT,
            ],
            2,
        ),
        (
            "movsx: r0 = (s8) r1",
            vec![ins(0xb7, 1, 0, 0, 0x80), ins(0xbf, 0, 1, 8, 0), EXIT],
            neg(-128),
        ),
        (
            "movsx: w0 = (s16) w1 (zero-extended to 64 bits)",
            vec![ins(0xb7, 1, 0, 0, 0x8000), ins(0xbc, 0, 1, 16, 0), EXIT],
            0xffff_8000,
        ),
        (
            "neg",
            vec![ins(0xb7, 0, 0, 0, 5), ins(0x87, 0, 0, 0, 0), EXIT],
            neg(-5),
        ),
        (
            "mul, xor",
            vec![
                ins(0xb7, 0, 0, 0, 6),
                ins(0x27, 0, 0, 0, 7),
                ins(0xa7, 0, 0, 0, 1),
                EXIT,
            ],
            43,
        ),
        (
            "the kernel's BPF_MOV64_PERCPU_REG (off -1) adds CPU 0's offset, 0",
            vec![ins(0xb7, 1, 0, 0, 77), ins(0xbf, 0, 1, -1, 0), EXIT],
            77,
        ),
    ];
    for (what, code, want) in cases {
        assert_eq!(ret(&code), want, "{what}");
    }
}

#[test]
fn jmp32_compares_the_low_half() {
    let mut c = ld64(1, 0, 0x1_0000_0001).to_vec();
    c.extend([
        ins(0xb7, 0, 0, 0, 0),        // 2: r0 = 0
        ins(0x15, 1, 0, 1, 1),        // 3: if r1 == 1 goto 5 (not taken)
        ins(0x47, 0, 0, 0, 1),        // 4: r0 |= 1
        ins(0x16, 1, 0, 1, 1),        // 5: if w1 == 1 goto 7 (taken)
        ins(0x47, 0, 0, 0, 2),        // 6: r0 |= 2 (skipped)
        ins(0xb4, 2, 0, 0, i32::MIN), // 7: w2 = 0x80000000
        ins(0xc5, 2, 0, 1, 0),        // 8: if r2 s< 0 goto 10 (not taken)
        ins(0x47, 0, 0, 0, 4),        // 9: r0 |= 4
        ins(0xc6, 2, 0, 1, 0),        // 10: if w2 s< 0 goto 12 (taken)
        ins(0x47, 0, 0, 0, 8),        // 11: r0 |= 8 (skipped)
        ins(0xae, 1, 2, 1, 0),        // 12: if w1 < w2 goto 14 (taken)
        ins(0x47, 0, 0, 0, 16),       // 13: r0 |= 16 (skipped)
        ins(0x06, 0, 0, 0, 1),        // 14: gotol 16
        ins(0x47, 0, 0, 0, 32),       // 15: r0 |= 32 (skipped)
        ins(0x45, 1, 0, 1, 0x100),    // 16: if r1 & 0x100 goto 18 (not taken)
        ins(0x47, 0, 0, 0, 64),       // 17: r0 |= 64
        EXIT,                         // 18
    ]);
    let program = Program::from_parts(&assemble(&c), Vec::new()).expect("assembles");
    let (path, trace) = program.run_traced(&[0; 60]).expect("runs");
    assert_eq!(path.ret, Some(1 | 4 | 64));
    // The LD_IMM64 counts once.
    assert_eq!(trace, [0, 2, 3, 4, 5, 7, 8, 9, 10, 12, 14, 16, 17, 18]);
    assert_eq!(path.insns, trace.len());
}

#[test]
fn ld_imm64_counts_once() {
    let mut c = ld64(0, 0, 0x0123_4567_89ab_cdef).to_vec();
    c.push(EXIT);
    let path = run_on(&c, Vec::new(), &[0; 60]).expect("runs");
    assert_eq!(path.ret, Some(0x0123_4567_89ab_cdef));
    assert_eq!(path.insns, 2);
    // A jump into the second slot is an error.
    let mut bad = vec![ins(0x05, 0, 0, 1, 0)];
    bad.extend(ld64(0, 0, 1));
    bad.push(EXIT);
    let err = run_on(&bad, Vec::new(), &[0; 60]).expect_err("must fail");
    assert!(format!("{err:#}").contains("second slot"), "{err:#}");
}

#[test]
fn endianness() {
    let swap = |code: u8, width: i32, v: u64| {
        let mut c = ld64(0, 0, v).to_vec();
        c.extend([ins(code, 0, 0, 0, width), EXIT]);
        ret(&c)
    };
    let v = 0x0102_0304_0506_0708;
    // be16/be32/be64 (ALU | END | TO_BE) swap on this little-endian host.
    assert_eq!(swap(0xdc, 16, v), 0x0807);
    assert_eq!(swap(0xdc, 32, v), 0x0807_0605);
    assert_eq!(swap(0xdc, 64, v), 0x0807_0605_0403_0201);
    // le16/le32/le64 (TO_LE) only truncate.
    assert_eq!(swap(0xd4, 16, v), 0x0708);
    assert_eq!(swap(0xd4, 32, v), 0x0506_0708);
    assert_eq!(swap(0xd4, 64, v), v);
    // ALU64 | END: unconditional bswap (cpu v4).
    assert_eq!(swap(0xd7, 16, v), 0x0807);
    assert_eq!(swap(0xd7, 64, v), 0x0807_0605_0403_0201);
}

#[test]
fn memory_context_packet_and_stack() {
    let frame: Vec<u8> = (0u8..60).map(|b| b.wrapping_mul(7) ^ 0x80).collect();
    // r0 = data_end - data, from the xdp_buff the context points at.
    let len = run_on(
        &[
            ins(0x79, 2, 1, 0, 0),
            ins(0x79, 3, 1, 8, 0),
            ins(0xbf, 0, 3, 0, 0),
            ins(0x1f, 0, 2, 0, 0),
            EXIT,
        ],
        Vec::new(),
        &frame,
    )
    .expect("runs");
    assert_eq!(len.ret, Some(60));
    // A big-endian 16-bit field, and a sign-extending byte load.
    let field = |code: u8, off: i16| {
        run_on(
            &[ins(0x79, 2, 1, 0, 0), ins(code, 0, 2, off, 0), EXIT],
            Vec::new(),
            &frame,
        )
        .expect("runs")
        .ret
        .expect("exit")
    };
    assert_eq!(
        field(0x69, 12),
        u64::from(u16::from_le_bytes([frame[12], frame[13]]))
    );
    assert_eq!(
        field(0x91, 1),
        neg(i64::from(i8::from_ne_bytes([frame[1]])))
    );
    // Past data_end: an error, as the verifier would not have let it be.
    let err = run_on(
        &[ins(0x79, 2, 1, 0, 0), ins(0x71, 0, 2, 60, 0), EXIT],
        Vec::new(),
        &frame,
    )
    .expect_err("beyond the frame");
    assert!(format!("{err:#}").contains("pc 1"), "{err:#}");
    // Stack: a store and a narrower load back; ST (imm) and an atomic add.
    assert_eq!(
        ret(&[
            ins(0x7a, 10, 0, -8, -2),   // *(u64 *)(r10 - 8) = -2
            ins(0xb7, 1, 0, 0, 3),      // r1 = 3
            ins(0xdb, 10, 1, -8, 0x01), // r1 = atomic_fetch_add(r10 - 8, r1)
            ins(0x79, 0, 10, -8, 0),    // r0 = *(u64 *)(r10 - 8)
            ins(0x0f, 0, 1, 0, 0),      // r0 += r1 (the old value)
            EXIT,
        ]),
        neg(-1)
    );
    // Stack bytes never written hold garbage in the kernel: copying them
    // (as a struct's padding is) is fine, returning or branching on them
    // is an error.
    let half_written = [
        ins(0x62, 10, 0, -8, 1),  // *(u32 *)(r10 - 8) = 1
        ins(0x79, 1, 10, -8, 0),  // r1 = *(u64 *)(r10 - 8): half undefined
        ins(0x7b, 10, 1, -16, 0), // *(u64 *)(r10 - 16) = r1
        ins(0x61, 0, 10, -16, 0), // r0 = *(u32 *)(r10 - 16): the defined half
    ];
    let mut copy = half_written.to_vec();
    copy.push(EXIT);
    assert_eq!(ret(&copy), 1);
    let mut branch = half_written.to_vec();
    branch.extend([ins(0x15, 1, 0, 0, 0), EXIT]); // if r1 == 0 goto +0
    let err = run_on(&branch, Vec::new(), &frame).expect_err("a branch on garbage");
    assert!(
        format!("{err:#}").contains("pc 4") && format!("{err:#}").contains("undefined"),
        "{err:#}"
    );
    // Definedness is tracked per byte: the defined low half of r1, moved
    // alone, may be branched on; its undefined high half, shifted down, not.
    let mut low_half = half_written.to_vec();
    low_half.extend([
        ins(0xbc, 1, 1, 0, 0), // w1 = w1
        ins(0x15, 1, 0, 0, 1), // if r1 == 1 goto +0
        EXIT,
    ]);
    assert_eq!(ret(&low_half), 1);
    let mut high_half = half_written.to_vec();
    high_half.extend([
        ins(0x77, 1, 0, 0, 32), // r1 >>= 32
        ins(0x16, 1, 0, 0, 0),  // if w1 == 0 goto +0
        EXIT,
    ]);
    let err = run_on(&high_half, Vec::new(), &frame).expect_err("the undefined half");
    assert!(format!("{err:#}").contains("pc 5"), "{err:#}");
    let mut returned = half_written.to_vec();
    returned.extend([ins(0x61, 0, 10, -12, 0), EXIT]); // r0 = the undefined half
    let err = run_on(&returned, Vec::new(), &frame).expect_err("returns garbage");
    assert!(format!("{err:#}").contains("undefined"), "{err:#}");
    // A context field this model does not have (xdp_buff.rxq).
    let err = run_on(&[ins(0x79, 0, 1, 32, 0), EXIT], Vec::new(), &frame).expect_err("rxq");
    assert!(format!("{err:#}").contains("no modelled memory"), "{err:#}");
}

fn array_map(id: u32, value_size: u32, values: Vec<Vec<u8>>, read_only: bool) -> MapSnapshot {
    MapSnapshot {
        id,
        name: format!("map{id}"),
        kind: "array".into(),
        value_size,
        max_entries: u32::try_from(values.len()).expect("few entries"),
        read_only,
        values,
    }
}

#[test]
fn inlined_array_lookups_and_global_data() {
    const K: i32 = 312;
    let values: Vec<Vec<u8>> = (0u8..3).map(|i| vec![i; 12]).collect();
    let config = array_map(7, 12, values, false);
    let rodata = array_map(8, 8, vec![vec![9, 0, 0, 0, 0, 0, 0, 0]], true);
    let percpu = MapSnapshot {
        kind: "percpu_array".into(),
        ..array_map(11, 16, vec![Vec::new(); 4], false)
    };
    // The kernel's array_map_gen_lookup for key 2 of map 7 (value size 12,
    // elements of 16 bytes), then a load of bytes 4..8 of the value.
    let mut c = vec![
        ins(0x62, 10, 0, -8, 2), // *(u32 *)(r10 - 8) = 2
        ins(0xbf, 2, 10, 0, 0),  // r2 = r10
        ins(0x07, 2, 0, 0, -8),  // r2 += -8
    ];
    c.extend(ld64(1, 1, 7)); // r1 = map[id:7]
    c.extend([
        ins(0x07, 1, 0, 0, K), // r1 += K
        ins(0x61, 0, 2, 0, 0), // r0 = *(u32 *)(r2 + 0)
        ins(0x35, 0, 0, 3, 3), // if r0 >= 3 goto +3
        ins(0x67, 0, 0, 0, 4), // r0 <<= 4
        ins(0x0f, 0, 1, 0, 0), // r0 += r1
        ins(0x05, 0, 0, 1, 0), // goto +1
        ins(0xb7, 0, 0, 0, 0), // r0 = 0
        ins(0x61, 6, 0, 4, 0), // r6 = *(u32 *)(r0 + 4)
    ]);
    // percpu_array_map_gen_lookup of key 2 of map 11, a store into this
    // CPU's value and a load back.
    c.extend(ld64(1, 1, 11));
    c.extend([
        ins(0x07, 1, 0, 0, K),   // r1 += K (pptrs)
        ins(0x61, 0, 2, 0, 0),   // r0 = key
        ins(0x35, 0, 0, 5, 4),   // if r0 >= 4 goto +5
        ins(0x67, 0, 0, 0, 3),   // r0 <<= 3
        ins(0x0f, 0, 1, 0, 0),   // r0 += r1
        ins(0x79, 0, 0, 0, 0),   // r0 = *(u64 *)(r0 + 0)
        ins(0xbf, 0, 0, -1, 0),  // r0 = this CPU's r0
        ins(0x05, 0, 0, 1, 0),   // goto +1
        ins(0xb7, 0, 0, 0, 0),   // r0 = 0
        ins(0x7a, 0, 0, 8, 100), // *(u64 *)(r0 + 8) = 100
        ins(0x79, 7, 0, 8, 0),   // r7 = *(u64 *)(r0 + 8)
    ]);
    // .rodata through BPF_PSEUDO_MAP_VALUE: map 8's value + 0.
    c.extend(ld64(1, 2, 8));
    c.extend([
        ins(0x61, 0, 1, 0, 0), // r0 = *(u32 *)(r1 + 0)
        ins(0x0f, 0, 6, 0, 0), // r0 += r6
        ins(0x0f, 0, 7, 0, 0), // r0 += r7
        EXIT,
    ]);
    let maps = vec![config.clone(), rodata.clone(), percpu.clone()];
    let program = Program::from_parts(&assemble(&c), maps).expect("assembles");
    assert_eq!(program.array_value_offset(), 312);
    let path = program.run(&[0; 60]).expect("runs");
    assert_eq!(path.ret, Some(0x0202_0202 + 100 + 9));
    // Writing .rodata (BPF_F_RDONLY_PROG) is an error.
    let mut w = ld64(1, 2, 8).to_vec();
    w.extend([ins(0x62, 1, 0, 0, 1), EXIT]);
    let err = run_on(&w, vec![rodata], &[0; 60]).expect_err("read-only");
    assert!(format!("{err:#}").contains("read-only"), "{err:#}");
    // Reading the map structure itself (below `value`) is an error.
    let mut s = ld64(1, 1, 7).to_vec();
    s.extend([ins(0x79, 0, 1, 0, 0), EXIT]);
    let err = run_on(&s, vec![config], &[0; 60]).expect_err("struct bpf_map");
    assert!(format!("{err:#}").contains("pc 2"), "{err:#}");
}

#[test]
fn calls_stop_the_run() {
    let stop = |call: [u8; 8]| {
        run_on(&[ins(0xb7, 0, 0, 0, 0), call, EXIT], Vec::new(), &[0; 60]).expect("runs")
    };
    let kinds = [
        (ins(0x85, 0, 0, 0, 269_552), CallKind::Helper(269_552)),
        (ins(0x85, 0, 1, 3, 1), CallKind::BpfToBpf(3)),
        (ins(0x85, 0, 2, 0, -4242), CallKind::Kfunc(-4242)),
    ];
    for (call, kind) in kinds {
        assert_eq!(
            stop(call),
            Path {
                insns: 2,
                calls: vec![Call { pc: 1, kind }],
                ret: None
            }
        );
    }
}

#[test]
fn unmodelled_code_is_an_error() {
    let fails = |code: &[[u8; 8]], what: &str| {
        let err = run_on(code, Vec::new(), &[0; 60]).expect_err(what);
        format!("{err:#}")
    };
    // An unknown ALU64 operation (0xf0) names the pc and the opcode.
    let e = fails(
        &[ins(0xb7, 0, 0, 0, 0), ins(0xf7, 0, 0, 0, 0), EXIT],
        "opcode",
    );
    assert!(e.contains("pc 1") && e.contains("0xf7"), "{e}");
    // A load through a null pointer.
    let e = fails(
        &[ins(0xb7, 1, 0, 0, 0), ins(0x79, 0, 1, 0, 0), EXIT],
        "null",
    );
    assert!(e.contains("pc 1") && e.contains("nowhere"), "{e}");
    // Legacy LD_ABS.
    let e = fails(&[ins(0x30, 0, 0, 0, 0), EXIT], "LD_ABS");
    assert!(e.contains("pc 0") && e.contains("0x30"), "{e}");
    // ADDR_SPACE_CAST (off 1) is not modelled.
    let e = fails(&[ins(0xbf, 0, 1, 1, 1), EXIT], "cast");
    assert!(e.contains("pc 0"), "{e}");
    // An endless loop hits the step bound.
    let e = fails(&[ins(0x05, 0, 0, -1, 0), EXIT], "loop");
    assert!(e.contains("no exit after"), "{e}");
}

// ---------------------------------------------------------------------------
// The product's program, in the kernel.

/// Which requirement a frame's path falls under.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Group {
    /// Not NAT-PMP: must make no call, in every configuration.
    NotNatpmp,
    /// An untagged IPv4 or IPv6 NAT-PMP request: no call in drop and
    /// monitor mode, source tracking on and off.
    UntaggedRequest,
    /// Measured only.
    Other,
}

struct Frame {
    name: &'static str,
    bytes: Vec<u8>,
    group: Group,
}

fn frames() -> Vec<Frame> {
    let nat0 = sample_payload(Class::NatpmpExternalAddressRequest);
    let map_udp = sample_payload(Class::NatpmpMapUdpRequest);
    let udp4 = |dport: u16, payload: &[u8]| padded(udp4(40000, dport, payload));
    let udp6 = |dport: u16, payload: &[u8]| padded(udp6(40000, dport, payload));
    let tcp4 = padded(tcp4(443, &[]));
    let tcp6 = padded(tcp6(443, &[]));
    // A DNS query header (id, flags RD, one question) and a root question.
    let dns = [0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1];
    let frame = |name, bytes, group| Frame { name, bytes, group };
    vec![
        frame("IPv4 TCP/443", tcp4, Group::NotNatpmp),
        frame("IPv4 UDP/53 (DNS)", udp4(53, &dns), Group::NotNatpmp),
        frame("IPv6 TCP/443", tcp6, Group::NotNatpmp),
        frame(
            "IPv4 NAT-PMP opcode 0 request",
            udp4(NATPMP_PORT, &nat0),
            Group::UntaggedRequest,
        ),
        frame(
            "IPv4 NAT-PMP map UDP request",
            udp4(NATPMP_PORT, &map_udp),
            Group::UntaggedRequest,
        ),
        frame(
            "IPv6 NAT-PMP opcode 0 request",
            udp6(NATPMP_PORT, &nat0),
            Group::UntaggedRequest,
        ),
        frame(
            "802.1Q + opcode 0 request",
            padded(ethernet(&[ETH_P_8021Q], ETH_P_IP, &v4(&nat0))),
            Group::Other,
        ),
        frame(
            "PPPoE + opcode 0 request",
            padded(ethernet_pppoe(PPP_IP, &v4(&nat0))),
            Group::Other,
        ),
        frame(
            "bare Ethernet header (14 bytes)",
            udp4(NATPMP_PORT, &nat0)[..14].to_vec(),
            Group::Other,
        ),
        frame(
            "10 bytes, too short for Ethernet",
            udp4(NATPMP_PORT, &nat0)[..10].to_vec(),
            Group::Other,
        ),
    ]
}

/// Drop and monitor mode, per-source tracking on and off.
const CONFIGS: [(Mode, bool); 4] = [
    (Mode::Drop, true),
    (Mode::Drop, false),
    (Mode::Monitor, true),
    (Mode::Monitor, false),
];

/// One frame under one configuration.
struct Seen {
    frame: &'static str,
    group: Group,
    config: String,
    /// The action `BPF_PROG_TEST_RUN` returned (None: it refused the frame).
    kernel: Option<u32>,
    path: Path,
    /// What the call it stopped at calls, as bpftool names it.
    callee: Option<String>,
}

impl Seen {
    fn calls(&self) -> String {
        if self.path.calls.is_empty() {
            return "none".into();
        }
        self.path
            .calls
            .iter()
            .map(|c| {
                let kind = match c.kind {
                    CallKind::Helper(imm) => format!("helper #{imm}"),
                    CallKind::BpfToBpf(off) => format!("BPF-to-BPF pc{off:+}"),
                    CallKind::Kfunc(imm) => format!("kfunc #{imm}"),
                };
                let name = self.callee.as_deref().unwrap_or("?");
                format!("pc {}: {kind} {name}", c.pc)
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Loads the product's program, runs every frame under every configuration
/// in the kernel and in the interpreter (of the xlated program dumped after
/// the configuration was written), and checks that wherever the
/// interpreter reaches `exit` it returns the kernel's action.
fn observe() -> Vec<Seen> {
    require_root();
    let mut filter = Filter::load().expect("loading the XDP program");
    let id = filter.program_id().expect("the program's id");
    let frames = frames();
    let mut seen = Vec::new();
    for (mode, track) in CONFIGS {
        filter.set_mode(mode).expect("setting the mode");
        filter
            .set_source_tracking(track)
            .expect("setting source tracking");
        let program = Program::load(id).expect("dumping the xlated program");
        if seen.is_empty() {
            let maps: Vec<String> = program
                .maps()
                .map(|m| format!("{} {} ({})", m.id, m.name, m.kind))
                .collect();
            println!(
                "program {id}: {} xlated instructions; offsetof(struct bpf_array, value) = {}; \
                 maps: {}",
                program.len(),
                program.array_value_offset(),
                maps.join(", ")
            );
        }
        let config = format!(
            "{}, sources {}",
            mode.name(),
            if track { "on" } else { "off" }
        );
        for f in &frames {
            // BPF_PROG_TEST_RUN refuses XDP frames below ETH_HLEN.
            let kernel = if f.bytes.len() >= 14 {
                Some(filter.run_frame(&f.bytes).expect("BPF_PROG_TEST_RUN"))
            } else {
                assert!(
                    filter.run_frame(&f.bytes).is_err(),
                    "the kernel ran a {}-byte frame",
                    f.bytes.len()
                );
                None
            };
            let path = program
                .run(&f.bytes)
                .unwrap_or_else(|e| panic!("interpreting {} ({config}): {e:#}", f.name));
            match (kernel, path.ret) {
                (Some(k), Some(r)) => assert_eq!(
                    u64::from(k),
                    r,
                    "{} ({config}): the kernel returned {k}, the interpreter {r}",
                    f.name
                ),
                // A frame the kernel cannot be given: what the program
                // would do is still the contract's (it cannot parse it).
                (None, Some(r)) => assert_eq!(r, u64::from(XDP_PASS), "{}", f.name),
                _ => {}
            }
            let callee = path
                .calls
                .first()
                .and_then(|c| program.call_name(c.pc))
                .map(str::to_owned);
            seen.push(Seen {
                frame: f.name,
                group: f.group,
                config: config.clone(),
                kernel,
                path,
                callee,
            });
        }
    }
    seen
}

#[test]
fn interpreter_agrees_with_the_kernel() {
    let seen = observe();
    println!("| frame | configuration | kernel | interpreter | insns | calls |");
    println!("|---|---|---|---|---:|---|");
    for s in &seen {
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            s.frame,
            s.config,
            s.kernel.map_or("refused", |k| action_name(u64::from(k))),
            s.path.ret.map_or("(stopped at a call)", action_name),
            s.path.insns,
            s.calls()
        );
    }
    // The cross-check is only worth something if it happened.
    let compared = seen
        .iter()
        .filter(|s| s.kernel.is_some() && s.path.ret.is_some())
        .count();
    assert!(
        compared >= 3 * CONFIGS.len(),
        "only {compared} paths reached exit"
    );
}

#[test]
fn fast_paths_make_no_call() {
    let seen = observe();
    let offending: Vec<String> = seen
        .iter()
        .filter(|s| s.group != Group::Other && !s.path.calls.is_empty())
        .map(|s| {
            format!(
                "{} ({}): {} after {} instructions",
                s.frame,
                s.config,
                s.calls(),
                s.path.insns
            )
        })
        .collect();
    assert!(
        offending.is_empty(),
        "{} of the paths that must make no call make one:\n  {}",
        offending.len(),
        offending.join("\n  ")
    );
}

/// Prints the xlated instructions one frame executes (`TRACE_PATH=1`):
/// where a path's instructions go, for tuning.
#[test]
fn print_a_path() {
    if std::env::var_os("TRACE_PATH").is_none() {
        return;
    }
    require_root();
    let mut filter = Filter::load().expect("loading");
    filter.set_mode(Mode::Drop).expect("drop");
    if std::env::var_os("NO_SOURCES").is_some() {
        filter.set_source_tracking(false).expect("sources off");
    }
    let id = filter.program_id().expect("id");
    let prog = Program::load(id).expect("dump");
    let which = std::env::var("TRACE_PATH").unwrap_or_default();
    let f = frames()
        .into_iter()
        .find(|f| f.name.contains(&which))
        .expect("a frame of that name");
    print_path(id, &prog, &f.bytes);
}

/// Prints the lines of `bpftool prog dump xlated` that `frame` executes in
/// the loaded program `id` (`prog`, its dump), then its length and calls.
fn print_path(id: u32, prog: &Program, frame: &[u8]) {
    let (path, pcs) = prog.run_traced(frame).expect("runs");
    let text = std::process::Command::new("bpftool")
        .args(["prog", "dump", "xlated", "id", &id.to_string()])
        .output()
        .expect("bpftool");
    let text = String::from_utf8_lossy(&text.stdout);
    let lines: std::collections::HashMap<usize, &str> = text
        .lines()
        .filter_map(|l| {
            let (n, _) = l.trim().split_once(':')?;
            Some((n.trim().parse().ok()?, l))
        })
        .collect();
    for pc in &pcs {
        println!("{}", lines.get(pc).copied().unwrap_or("?"));
    }
    println!("{} insns, calls {:?}", path.insns, path.calls);
}

// ---------------------------------------------------------------------------
// The tc egress program (issue 13, item 5: within 5 ns of a bare tc program
// on traffic that is not NAT-PMP).

/// tcx's "next" (`TC_ACT_UNSPEC`): the egress program's only verdict.
const TCX_NEXT: i32 = -1;

/// Frames leaving the WAN that are not answers, with the most xlated
/// instructions each may execute in the egress program (`Some`: the
/// kernel's `data`/`data_end` loads and the final `exit` included), and
/// answers (`None`: they reach the counting call).
///
/// The bounds are the paths' lengths when the egress program met the
/// issue's target (issue 13 item 5: within 5 ns of a bare tc program, which
/// executes 2): a regression guard, each instruction being worth about a
/// third of a nanosecond there. Before the answers-only quick look
/// (`answers_quick` in -common's walk) they were 30, 38, 32, 41, 37 and 38.
fn egress_frames() -> Vec<(&'static str, Vec<u8>, Option<usize>)> {
    let nat0 = sample_payload(Class::NatpmpExternalAddressRequest);
    let reply = sample_payload(Class::NatpmpExternalAddressResponse);
    let dns = [0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1];
    let tcp4 = padded(tcp4(443, &[]));
    vec![
        ("IPv4 TCP/443", tcp4.clone(), Some(16)),
        ("IPv4 UDP/53 (DNS)", padded(udp4(40000, 53, &dns)), Some(16)),
        ("IPv6 TCP/443", padded(tcp6(443, &[])), Some(18)),
        ("IPv6 UDP/53 (DNS)", padded(udp6(40000, 53, &dns)), Some(18)),
        (
            "802.1Q + IPv4 TCP/443",
            padded(ethernet(&[ETH_P_8021Q], ETH_P_IP, &tcp4[14..])),
            Some(24),
        ),
        (
            "IPv4 request to 5351 (not an answer)",
            padded(udp4(40000, NATPMP_PORT, &nat0)),
            Some(16),
        ),
        (
            "IPv4 answer from 5351",
            padded(udp4(NATPMP_PORT, 40000, &reply)),
            None,
        ),
        (
            "IPv6 answer from 5351",
            padded(udp6(NATPMP_PORT, 40000, &reply)),
            None,
        ),
    ]
}

/// The loaded egress program's info (its id, its verified instructions).
fn egress_info(filter: &Filter) -> aya::programs::ProgramInfo {
    filter
        .egress_program()
        .expect("the object has the egress program")
        .info()
        .expect("the egress program's info")
}

/// Every frame through the loaded egress program, in the kernel and in the
/// interpreter (which must agree on the verdict): frames that are not
/// answers leave within their bound ([`egress_frames`]) and make no call;
/// answers reach the counting call.
#[test]
fn egress_paths_are_short() {
    require_root();
    let filter = Filter::load().expect("loading the eBPF object");
    let info = egress_info(&filter);
    let id = info.id();
    let program = Program::load(id).expect("dumping the egress program's xlated code");
    println!(
        "egress program {id}: {} xlated instructions, {:?} verified",
        program.len(),
        info.verified_instruction_count()
    );
    println!("| frame | kernel | interpreter | insns | calls |");
    println!("|---|---|---|---:|---|");
    let mut problems = Vec::new();
    for (name, bytes, bound) in egress_frames() {
        let kernel = filter.run_egress(&bytes).expect("BPF_PROG_TEST_RUN");
        assert_eq!(kernel, TCX_NEXT, "{name}: the egress program's verdict");
        let path = program
            .run(&bytes)
            .unwrap_or_else(|e| panic!("interpreting {name}: {e:#}"));
        let call = path.calls.first().map(|c| {
            program
                .call_name(c.pc)
                .map_or_else(|| format!("pc {}", c.pc), str::to_owned)
        });
        #[expect(clippy::cast_possible_truncation, reason = "tc's 32-bit verdict")]
        let ret = path.ret.map(|r| r as i32);
        println!(
            "| {name} | {kernel} | {ret:?} | {} | {} |",
            path.insns,
            call.as_deref().unwrap_or("none")
        );
        let Some(bound) = bound else {
            if path.calls.is_empty() {
                problems.push(format!("{name}: reached exit without counting"));
            }
            continue;
        };
        if ret != Some(kernel) {
            problems.push(format!(
                "{name}: the interpreter returned {ret:?} ({} calls), the kernel {kernel}",
                path.calls.len()
            ));
        } else if path.insns > bound {
            problems.push(format!(
                "{name}: {} instructions (at most {bound}: see `egress_frames`)",
                path.insns
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Prints the xlated instructions one frame executes through the egress
/// program (`TRACE_EGRESS=<part of a frame name>`), for tuning.
#[test]
fn print_an_egress_path() {
    let Some(which) = std::env::var_os("TRACE_EGRESS") else {
        return;
    };
    let which = which.to_string_lossy().into_owned();
    require_root();
    let filter = Filter::load().expect("loading");
    let id = egress_info(&filter).id();
    let prog = Program::load(id).expect("dump");
    let (_, bytes, _) = egress_frames()
        .into_iter()
        .find(|f| f.0.contains(&which))
        .expect("a frame of that name");
    print_path(id, &prog, &bytes);
}
