//! The guest: its memory layout, its program (hand-assembled 64-bit code), the per-vCPU
//! control block the VMM and the guest share, and the port-I/O protocol between them.
//!
//! One program serves every workload; the VMM selects the behaviour by the values it writes
//! into each vCPU's control block before the first `KVM_RUN`. The guest never reads a clock
//! other than its own TSC and never exits except by the `OUT`s below, so a `spin` vCPU runs
//! without exits and the only record of its time off the CPU is its gap ring.

/// Guest physical memory per VM, one slot at GPA 0.
pub const MEM_SIZE: usize = 4 << 20;
/// Global descriptor table (null, code 0x08, data 0x10). Not used for loads (the VMM sets
/// the segment registers directly) but present so that the descriptors are real.
pub const GDT_ADDR: u64 = 0x500;
/// PVM's "virtual interrupt flag" page: zeroed, page-aligned.
pub const PVM_VIF_PAGE: u64 = 0x1000;
pub const PML4_ADDR: u64 = 0x2000;
pub const PDPT_ADDR: u64 = 0x3000;
pub const PD_ADDR: u64 = 0x4000;
/// Where the program is loaded and where every vCPU starts.
pub const CODE_ADDR: u64 = 0x10_0000;
/// Initial stack pointer (the program uses no stack; it is there for exceptions).
pub const STACK_TOP: u64 = 0x20_0000;
/// First vCPU's control block; each vCPU has `VCPU_AREA` bytes from here.
pub const VCPU_AREA_BASE: u64 = 0x20_0000;
pub const VCPU_AREA: u64 = 0x2_0000;
/// Gap ring slots per vCPU (power of two; 16 bytes each).
pub const RING_SLOTS: u64 = 4096;
pub const MAX_VCPUS_PER_VM: u32 = ((MEM_SIZE as u64 - VCPU_AREA_BASE) / VCPU_AREA) as u32;

/// Offsets in a vCPU's control block (all little-endian u64; the guest reads the first
/// group and writes the second).
pub mod block {
    /// In: a gap longer than this many TSC ticks is recorded.
    pub const THRESHOLD_TICKS: u64 = 0x00;
    /// In: port-I/O exit every this many work units (0 = never).
    pub const EXIT_EVERY: u64 = 0x08;
    /// In: length of a work burst in TSC ticks (0 = no bursts, never sleep).
    pub const BURST_TICKS: u64 = 0x10;
    /// In: microseconds to ask the VMM to sleep after each burst (low 32 bits used).
    pub const SLEEP_US: u64 = 0x18;
    /// In: ring slots - 1.
    pub const RING_MASK: u64 = 0x20;
    /// In: this vCPU's index in its VM (echoed in the hello).
    pub const VCPU_INDEX: u64 = 0x28;
    /// In: non-zero makes the guest execute `ud2` right after its hello.
    pub const FAULT: u64 = 0x30;
    /// In: iterations of the inner loop per work unit.
    pub const UNIT_ITERS: u64 = 0x38;
    /// Out: work units done so far.
    pub const WORK_UNITS: u64 = 0x40;
    /// Out: gaps written so far (the ring's head; slot = head & mask).
    pub const RING_HEAD: u64 = 0x48;
    /// Ring of (start TSC, end TSC) pairs.
    pub const RING: u64 = 0x100;
}

/// Inner-loop iterations per work unit: about 100 cycles, so a unit is short against the
/// 10 µs gap threshold and long against the `rdtsc` that ends it.
pub const UNIT_ITERS: u64 = 100;

/// Guest → VMM ports (`OUT dx, eax`).
pub mod port {
    /// Once at start: `HELLO_MAGIC + vCPU index`.
    pub const HELLO: u16 = 0x10;
    /// `exits` workload: the work-unit count (low 32 bits), every K units.
    pub const TICK: u16 = 0x11;
    /// `sleepy` workload: block this vCPU thread for the given microseconds.
    pub const SLEEP: u16 = 0x12;
}

/// "KVM\0" + vCPU index: proves the guest reached long mode and read its control block.
pub const HELLO_MAGIC: u32 = 0x4b56_4d00;

/// The guest program, loaded at [`CODE_ADDR`] with RDI = the vCPU's control block.
///
/// Register use in the main loop: r8 threshold, r9 exit_every, r10 burst ticks, r11 ring
/// mask, r12 previous TSC, r13 work units, r14 units left until the next tick exit, r15 TSC
/// at the start of the current burst, rsi ring base. A gap is written before the head is
/// advanced (x86 stores are seen in order), so the VMM never reads a slot the guest has not
/// finished. After every `OUT` the previous TSC is re-read: time spent in the VMM is not
/// time kept off the CPU.
#[rustfmt::skip]
pub const PROGRAM: &[u8] = &[
    // start: say hello
    0x8b, 0x47, 0x28,                         // 00: mov eax, [rdi+0x28]        ; vCPU index
    0x05, 0x00, 0x4d, 0x56, 0x4b,             // 03: add eax, 0x4b564d00        ; + HELLO_MAGIC
    0xba, 0x10, 0x00, 0x00, 0x00,             // 08: mov edx, 0x10              ; port HELLO
    0xef,                                     // 0d: out dx, eax
    0x48, 0x83, 0x7f, 0x30, 0x00,             // 0e: cmp qword [rdi+0x30], 0    ; FAULT?
    0x74, 0x02,                               // 13: je setup (+2)
    0x0f, 0x0b,                               // 15: ud2                        ; no IDT: triple fault
    // setup: load parameters
    0x4c, 0x8b, 0x07,                         // 17: mov r8, [rdi]              ; THRESHOLD_TICKS
    0x4c, 0x8b, 0x4f, 0x08,                   // 1a: mov r9, [rdi+0x08]         ; EXIT_EVERY
    0x4c, 0x8b, 0x57, 0x10,                   // 1e: mov r10, [rdi+0x10]        ; BURST_TICKS
    0x4c, 0x8b, 0x5f, 0x20,                   // 22: mov r11, [rdi+0x20]        ; RING_MASK
    0x48, 0x8d, 0xb7, 0x00, 0x01, 0x00, 0x00, // 26: lea rsi, [rdi+0x100]       ; RING
    0x45, 0x31, 0xed,                         // 2d: xor r13d, r13d             ; units = 0
    0x4d, 0x89, 0xce,                         // 30: mov r14, r9                ; units to next tick
    0x0f, 0x31,                               // 33: rdtsc
    0x48, 0xc1, 0xe2, 0x20,                   // 35: shl rdx, 32
    0x48, 0x09, 0xd0,                         // 39: or rax, rdx                ; rax = TSC
    0x49, 0x89, 0xc4,                         // 3c: mov r12, rax               ; previous TSC
    0x49, 0x89, 0xc7,                         // 3f: mov r15, rax               ; burst start
    // unit: one work unit
    0x48, 0x8b, 0x4f, 0x38,                   // 42: mov rcx, [rdi+0x38]        ; UNIT_ITERS
    // work:
    0x48, 0x01, 0xcb,                         // 46: add rbx, rcx               ; the "work"
    0x48, 0xff, 0xc9,                         // 49: dec rcx
    0x75, 0xf8,                               // 4c: jnz work (-8)
    0x49, 0xff, 0xc5,                         // 4e: inc r13                    ; units += 1
    0x4c, 0x89, 0x6f, 0x40,                   // 51: mov [rdi+0x40], r13        ; WORK_UNITS
    0x0f, 0x31,                               // 55: rdtsc
    0x48, 0xc1, 0xe2, 0x20,                   // 57: shl rdx, 32
    0x48, 0x09, 0xd0,                         // 5b: or rax, rdx                ; rax = now
    0x48, 0x89, 0xc2,                         // 5e: mov rdx, rax
    0x4c, 0x29, 0xe2,                         // 61: sub rdx, r12               ; now - previous
    0x4c, 0x39, 0xc2,                         // 64: cmp rdx, r8
    0x76, 0x1e,                               // 67: jbe nogap (+0x1e)          ; below threshold
    0x48, 0x8b, 0x4f, 0x48,                   // 69: mov rcx, [rdi+0x48]        ; RING_HEAD
    0x48, 0x89, 0xca,                         // 6d: mov rdx, rcx
    0x4c, 0x21, 0xda,                         // 70: and rdx, r11               ; slot
    0x48, 0xc1, 0xe2, 0x04,                   // 73: shl rdx, 4                 ; * 16 bytes
    0x4c, 0x89, 0x24, 0x16,                   // 77: mov [rsi+rdx], r12         ; gap start
    0x48, 0x89, 0x44, 0x16, 0x08,             // 7b: mov [rsi+rdx+8], rax       ; gap end
    0x48, 0xff, 0xc1,                         // 80: inc rcx
    0x48, 0x89, 0x4f, 0x48,                   // 83: mov [rdi+0x48], rcx        ; publish
    // nogap:
    0x49, 0x89, 0xc4,                         // 87: mov r12, rax               ; previous = now
    0x4d, 0x85, 0xc9,                         // 8a: test r9, r9
    0x74, 0x1d,                               // 8d: jz noexit (+0x1d)          ; not `exits`
    0x49, 0xff, 0xce,                         // 8f: dec r14
    0x75, 0x18,                               // 92: jnz noexit (+0x18)
    0x4d, 0x89, 0xce,                         // 94: mov r14, r9                ; rearm
    0x44, 0x89, 0xe8,                         // 97: mov eax, r13d              ; units, low 32 bits
    0xba, 0x11, 0x00, 0x00, 0x00,             // 9a: mov edx, 0x11              ; port TICK
    0xef,                                     // 9f: out dx, eax
    0x0f, 0x31,                               // a0: rdtsc
    0x48, 0xc1, 0xe2, 0x20,                   // a2: shl rdx, 32
    0x48, 0x09, 0xd0,                         // a6: or rax, rdx
    0x49, 0x89, 0xc4,                         // a9: mov r12, rax               ; restart gap clock
    // noexit:
    0x4d, 0x85, 0xd2,                         // ac: test r10, r10
    0x74, 0x91,                               // af: jz unit (-0x6f)            ; not `sleepy`
    0x4c, 0x89, 0xe0,                         // b1: mov rax, r12
    0x4c, 0x29, 0xf8,                         // b4: sub rax, r15               ; burst so far
    0x4c, 0x39, 0xd0,                         // b7: cmp rax, r10
    0x72, 0x86,                               // ba: jb unit (-0x7a)            ; burst not over
    0x8b, 0x47, 0x18,                         // bc: mov eax, [rdi+0x18]        ; SLEEP_US
    0xba, 0x12, 0x00, 0x00, 0x00,             // bf: mov edx, 0x12              ; port SLEEP
    0xef,                                     // c4: out dx, eax
    0x0f, 0x31,                               // c5: rdtsc
    0x48, 0xc1, 0xe2, 0x20,                   // c7: shl rdx, 32
    0x48, 0x09, 0xd0,                         // cb: or rax, rdx
    0x49, 0x89, 0xc4,                         // ce: mov r12, rax               ; restart gap clock
    0x49, 0x89, 0xc7,                         // d1: mov r15, rax               ; new burst
    0xe9, 0x69, 0xff, 0xff, 0xff,             // d4: jmp unit (-0x97)
];

/// Writes the page tables, GDT and program into a VM's zeroed memory.
///
/// The first GiB is identity-mapped with 2 MiB pages. Every level has U/S=1: PVM runs the
/// guest kernel in a user-mode host context and with U/S=0 `KVM_RUN` loops on shadow page
/// faults; on VT-x/AMD-V the bit is harmless at CPL0.
pub fn write_boot_image(mem: &crate::memory::GuestMemory) {
    const PRESENT: u64 = 1;
    const WRITE: u64 = 1 << 1;
    const USER: u64 = 1 << 2;
    const HUGE: u64 = 1 << 7;
    mem.write_u64(PML4_ADDR, PDPT_ADDR | PRESENT | WRITE | USER);
    mem.write_u64(PDPT_ADDR, PD_ADDR | PRESENT | WRITE | USER);
    for i in 0..512u64 {
        mem.write_u64(PD_ADDR + i * 8, (i << 21) | PRESENT | WRITE | USER | HUGE);
    }
    for (i, d) in [0u64, CODE_DESCRIPTOR, DATA_DESCRIPTOR].iter().enumerate() {
        mem.write_u64(GDT_ADDR + i as u64 * 8, *d);
    }
    mem.write_bytes(CODE_ADDR, PROGRAM);
}

/// 64-bit code segment: present, DPL 0, type 11 (execute/read, accessed), L=1, G=1.
pub const CODE_DESCRIPTOR: u64 = 0x00af_9b00_0000_ffff;
/// Data segment: present, DPL 0, type 3 (read/write, accessed), D/B=1, G=1.
pub const DATA_DESCRIPTOR: u64 = 0x00cf_9300_0000_ffff;

/// Guest physical address of vCPU `index`'s control block.
pub const fn control_block(index: u32) -> u64 {
    VCPU_AREA_BASE + index as u64 * VCPU_AREA
}

// The layout is checked when the crate compiles.
const _: () = {
    assert!(block::RING + RING_SLOTS * 16 <= VCPU_AREA);
    assert!(control_block(MAX_VCPUS_PER_VM - 1) + VCPU_AREA == MEM_SIZE as u64);
    assert!(CODE_ADDR + PROGRAM.len() as u64 <= STACK_TOP);
    assert!(RING_SLOTS.is_power_of_two());
    assert!(PVM_VIF_PAGE % 4096 == 0);
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_offsets_match_the_comments() {
        // The jump targets in the comments depend on these offsets.
        assert_eq!(PROGRAM.len(), 0xd9);
        assert_eq!(&PROGRAM[0x42..0x46], &[0x48, 0x8b, 0x4f, 0x38]);
        assert_eq!(PROGRAM[0x0d], 0xef);
        assert_eq!(PROGRAM[0x9f], 0xef);
        assert_eq!(PROGRAM[0xc4], 0xef);
        // The final jmp lands on `unit`.
        let rel = i32::from_le_bytes(PROGRAM[0xd5..0xd9].try_into().unwrap());
        assert_eq!(0xd9 + rel as i64, 0x42);
    }
}
