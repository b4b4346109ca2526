//! The SYN queue: a second queue of the TUN device (`IFF_MULTI_QUEUE`) that
//! only pure SYNs reach, so that a SYN flood queues behind itself and not in
//! front of the packets of connections that already exist.
//!
//! The kernel picks the queue of every packet it routes into the TUN with a
//! steering program (`TUNSETSTEERINGEBPF`, Linux `tun_ebpf_select_queue`:
//! the program's return value modulo the number of queues). Ours returns 1
//! for an IPv4 or IPv6 TCP segment with SYN set and ACK clear (not a
//! fragment, no IPv6 extension header), 0 for everything else; a packet too
//! short for a load ends the program with 0 (the eBPF rule for `LD_ABS`).
//! The reader ([`crate::tun::TunDevice`]) drains queue 0 first and takes
//! the SYN queue in slices between looks at queue 0.
//!
//! Why not by hand in user space: the TUN's queue is one FIFO of
//! `txqueuelen` packets; under a flood that tcpd reads slower than it
//! comes, every packet of a legitimate exchange (its ACK, its request, its
//! FIN) waits behind the whole queue (10 000 packets: ~15 ms at 1.5 µs
//! each). With the SYN queue only the client's SYN waits.
//!
//! The program is ten-odd eBPF instructions assembled here (no crate: aya
//! or libbpf would bring a loader and an ELF toolchain for one socket
//! filter). Loading needs CAP_BPF (or CAP_SYS_ADMIN); without it tcpd runs
//! with one queue, as before.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// `struct bpf_insn`.
#[repr(C)]
#[derive(Clone, Copy)]
struct Insn {
    code: u8,
    /// dst_reg in the low nibble, src_reg in the high one.
    regs: u8,
    off: i16,
    imm: i32,
}

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: dst | (src << 4),
        off,
        imm,
    }
}

// Opcodes (linux/bpf.h, linux/bpf_common.h).
const MOV64_X: u8 = 0xbf; // BPF_ALU64 | BPF_MOV | BPF_X
const MOV64_K: u8 = 0xb7;
const AND64_K: u8 = 0x57;
const RSH64_K: u8 = 0x77;
const LSH64_K: u8 = 0x67;
const LDABS_B: u8 = 0x30; // BPF_LD | BPF_ABS | BPF_B
const LDABS_H: u8 = 0x28;
const LDIND_B: u8 = 0x50; // BPF_LD | BPF_IND | BPF_B
const JEQ_K: u8 = 0x15;
const JNE_K: u8 = 0x55;
const JA: u8 = 0x05;
const EXIT: u8 = 0x95;

/// TCP flags byte: SYN | ACK, and SYN alone.
const SYN_ACK_MASK: i32 = 0x12;
const SYN: i32 = 0x02;

/// The steering program. The packet starts at the IP header (a TUN has no
/// link-layer header); `LD_ABS`/`LD_IND` read it in network byte order.
const PROGRAM: [Insn; 24] = [
    insn(MOV64_X, 6, 1, 0, 0), //  0: r6 = ctx (LD_ABS wants it there)
    insn(LDABS_B, 0, 0, 0, 0), //  1: r0 = version | IHL
    insn(MOV64_X, 7, 0, 0, 0), //  2: r7 = r0
    insn(RSH64_K, 0, 0, 0, 4), //  3: r0 = version
    insn(JEQ_K, 0, 0, 10, 6),  //  4: IPv6 -> 15
    insn(JNE_K, 0, 0, 14, 4),  //  5: not IPv4 -> 20
    insn(LDABS_B, 0, 0, 0, 9), //  6: r0 = protocol
    insn(JNE_K, 0, 0, 12, 6),  //  7: not TCP -> 20
    insn(LDABS_H, 0, 0, 0, 6), //  8: r0 = flags | fragment offset
    insn(AND64_K, 0, 0, 0, 0x1fff),
    insn(JNE_K, 0, 0, 9, 0),              // 10: a later fragment -> 20
    insn(AND64_K, 7, 0, 0, 0xf),          // 11: r7 = IHL
    insn(LSH64_K, 7, 0, 0, 2),            // 12: r7 = IPv4 header length
    insn(LDIND_B, 0, 7, 0, 13),           // 13: r0 = TCP flags
    insn(JA, 0, 0, 3, 0),                 // 14: -> 18
    insn(LDABS_B, 0, 0, 0, 6),            // 15: r0 = IPv6 next header
    insn(JNE_K, 0, 0, 3, 6),              // 16: not TCP right away -> 20
    insn(LDABS_B, 0, 0, 0, 53),           // 17: r0 = TCP flags (40 + 13)
    insn(AND64_K, 0, 0, 0, SYN_ACK_MASK), // 18
    insn(JEQ_K, 0, 0, 2, SYN),            // 19: a pure SYN -> 22
    insn(MOV64_K, 0, 0, 0, 0),            // 20: queue 0
    insn(EXIT, 0, 0, 0, 0),               // 21
    insn(MOV64_K, 0, 0, 0, 1),            // 22: queue 1, the SYN queue
    insn(EXIT, 0, 0, 0, 0),               // 23
];

/// The leading fields of `union bpf_attr` for `BPF_PROG_LOAD`, padded with
/// zeros (the kernel accepts a longer attribute whose tail is zero).
#[repr(C)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    rest: [u8; 96],
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TYPE_SOCKET_FILTER: u32 = 1;
/// `TUNSETSTEERINGEBPF`: `_IOR('T', 224, int)`.
const TUNSETSTEERINGEBPF: libc::c_ulong = 0x8004_54e0;

/// Loads the steering program; the fd keeps it alive (the device holds its
/// own reference once attached).
pub fn load() -> io::Result<OwnedFd> {
    let license = c"MIT OR Apache-2.0";
    let attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_SOCKET_FILTER,
        insn_cnt: PROGRAM.len() as u32,
        insns: PROGRAM.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 0,
        log_size: 0,
        log_buf: 0,
        kern_version: 0,
        prog_flags: 0,
        rest: [0; 96],
    };
    // SAFETY: bpf(2) with BPF_PROG_LOAD reads `attr` (size given) and the
    // instruction array and license string it points to, all of which live
    // across the call; it returns a new fd or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            &attr as *const ProgLoadAttr,
            std::mem::size_of::<ProgLoadAttr>() as u32,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = RawFd::try_from(fd).map_err(|_| io::Error::other("bpf(2) returned no fd"))?;
    // SAFETY: the kernel just gave us this fd; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Attaches program `prog` as the steering program of the TUN device of
/// queue fd `tun` (device-wide).
pub fn attach(tun: RawFd, prog: RawFd) -> io::Result<()> {
    let p: libc::c_int = prog;
    // SAFETY: TUNSETSTEERINGEBPF reads one int (the program's fd) from the
    // pointer, which is valid for the call.
    let r = unsafe { libc::ioctl(tun, TUNSETSTEERINGEBPF, &p as *const libc::c_int) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
