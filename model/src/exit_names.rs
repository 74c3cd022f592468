//! Human names for exit reason codes: `KVM_EXIT_*` (what `KVM_RUN` hands the VMM), VT-x basic
//! exit reasons and AMD-V (SVM) exit codes (what `kvm:kvm_exit` carries).
//!
//! Codes the tables do not know are shown as numbers, never dropped.

use crate::ExitIsa;

/// `kvm_run->exit_reason` values from the KVM API (`include/uapi/linux/kvm.h`).
pub fn kvm_exit_name(code: u32) -> Option<&'static str> {
    const NAMES: [&str; 40] = [
        "UNKNOWN",
        "EXCEPTION",
        "IO",
        "HYPERCALL",
        "DEBUG",
        "HLT",
        "MMIO",
        "IRQ_WINDOW_OPEN",
        "SHUTDOWN",
        "FAIL_ENTRY",
        "INTR",
        "SET_TPR",
        "TPR_ACCESS",
        "S390_SIEIC",
        "S390_RESET",
        "DCR",
        "NMI",
        "INTERNAL_ERROR",
        "OSI",
        "PAPR_HCALL",
        "S390_UCONTROL",
        "WATCHDOG",
        "S390_TSCH",
        "EPR",
        "SYSTEM_EVENT",
        "S390_STSI",
        "IOAPIC_EOI",
        "HYPERV",
        "ARM_NISV",
        "X86_RDMSR",
        "X86_WRMSR",
        "DIRTY_RING_FULL",
        "AP_RESET_HOLD",
        "X86_BUS_LOCK",
        "XEN",
        "RISCV_SBI",
        "RISCV_CSR",
        "NOTIFY",
        "LOONGARCH_IOCSR",
        "MEMORY_FAULT",
    ];
    NAMES.get(code as usize).copied()
}

/// VT-x basic exit reason (low 16 bits of the VMCS exit reason field).
pub fn vmx_exit_name(code: u32) -> Option<&'static str> {
    Some(match code & 0xffff {
        0 => "EXCEPTION_NMI",
        1 => "EXTERNAL_INTERRUPT",
        2 => "TRIPLE_FAULT",
        3 => "INIT_SIGNAL",
        4 => "SIPI_SIGNAL",
        7 => "INTERRUPT_WINDOW",
        8 => "NMI_WINDOW",
        9 => "TASK_SWITCH",
        10 => "CPUID",
        12 => "HLT",
        13 => "INVD",
        14 => "INVLPG",
        15 => "RDPMC",
        16 => "RDTSC",
        18 => "VMCALL",
        19 => "VMCLEAR",
        20 => "VMLAUNCH",
        21 => "VMPTRLD",
        22 => "VMPTRST",
        23 => "VMREAD",
        24 => "VMRESUME",
        25 => "VMWRITE",
        26 => "VMOFF",
        27 => "VMON",
        28 => "CR_ACCESS",
        29 => "DR_ACCESS",
        30 => "IO_INSTRUCTION",
        31 => "MSR_READ",
        32 => "MSR_WRITE",
        33 => "INVALID_STATE",
        34 => "MSR_LOAD_FAIL",
        36 => "MWAIT_INSTRUCTION",
        37 => "MONITOR_TRAP_FLAG",
        39 => "MONITOR_INSTRUCTION",
        40 => "PAUSE_INSTRUCTION",
        41 => "MCE_DURING_VMENTRY",
        43 => "TPR_BELOW_THRESHOLD",
        44 => "APIC_ACCESS",
        45 => "EOI_INDUCED",
        46 => "GDTR_IDTR",
        47 => "LDTR_TR",
        48 => "EPT_VIOLATION",
        49 => "EPT_MISCONFIG",
        50 => "INVEPT",
        51 => "RDTSCP",
        52 => "PREEMPTION_TIMER",
        53 => "INVVPID",
        54 => "WBINVD",
        55 => "XSETBV",
        56 => "APIC_WRITE",
        57 => "RDRAND",
        58 => "INVPCID",
        59 => "VMFUNC",
        60 => "ENCLS",
        61 => "RDSEED",
        62 => "PML_FULL",
        63 => "XSAVES",
        64 => "XRSTORS",
        67 => "UMWAIT",
        68 => "TPAUSE",
        74 => "BUS_LOCK",
        75 => "NOTIFY",
        _ => return None,
    })
}

/// AMD-V `VMEXIT` code. Ranges (CR/DR accesses, exceptions) get a generic name.
pub fn svm_exit_name(code: u32) -> Option<&'static str> {
    Some(match code {
        0x000..=0x00f => "READ_CR",
        0x010..=0x01f => "WRITE_CR",
        0x020..=0x02f => "READ_DR",
        0x030..=0x03f => "WRITE_DR",
        0x040..=0x05f => "EXCEPTION",
        0x060 => "INTR",
        0x061 => "NMI",
        0x062 => "SMI",
        0x063 => "INIT",
        0x064 => "VINTR",
        0x065 => "CR0_SEL_WRITE",
        0x066..=0x06d => "DESCRIPTOR_TABLE",
        0x06e => "RDTSC",
        0x06f => "RDPMC",
        0x070 => "PUSHF",
        0x071 => "POPF",
        0x072 => "CPUID",
        0x073 => "RSM",
        0x074 => "IRET",
        0x075 => "SWINT",
        0x076 => "INVD",
        0x077 => "PAUSE",
        0x078 => "HLT",
        0x079 => "INVLPG",
        0x07a => "INVLPGA",
        0x07b => "IOIO",
        0x07c => "MSR",
        0x07d => "TASK_SWITCH",
        0x07e => "FERR_FREEZE",
        0x07f => "SHUTDOWN",
        0x080 => "VMRUN",
        0x081 => "VMMCALL",
        0x082 => "VMLOAD",
        0x083 => "VMSAVE",
        0x084 => "STGI",
        0x085 => "CLGI",
        0x086 => "SKINIT",
        0x087 => "RDTSCP",
        0x088 => "ICEBP",
        0x089 => "WBINVD",
        0x08a => "MONITOR",
        0x08b => "MWAIT",
        0x08c => "MWAIT_COND",
        0x08d => "XSETBV",
        0x08e => "RDPRU",
        0x08f => "EFER_WRITE_TRAP",
        0x090..=0x09f => "CR_WRITE_TRAP",
        0x0a0 => "INVPCID",
        0x0a5 => "BUS_LOCK",
        0x400 => "NPF",
        0x401 => "AVIC_INCOMPLETE_IPI",
        0x402 => "AVIC_UNACCELERATED_ACCESS",
        0x403 => "VMGEXIT",
        0xffff_ffff => "INVALID",
        _ => return None,
    })
}

/// Name of a `kvm:kvm_exit` reason for the given ISA, or `REASON_<n>`.
pub fn hw_exit_name(isa: ExitIsa, code: u32) -> String {
    let name = match isa {
        ExitIsa::Vmx => vmx_exit_name(code),
        ExitIsa::Svm => svm_exit_name(code),
        ExitIsa::Unknown => None,
    };
    match name {
        Some(n) => n.to_string(),
        None => format!("REASON_{code}"),
    }
}

/// Name of a userspace exit: `userspace:IO`, or `userspace:<n>` for unknown codes.
pub fn userspace_exit_name(code: u32) -> String {
    match kvm_exit_name(code) {
        Some(n) => format!("userspace:{n}"),
        None => format!("userspace:{code}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cover_the_common_codes() {
        assert_eq!(kvm_exit_name(2), Some("IO"));
        assert_eq!(kvm_exit_name(8), Some("SHUTDOWN"));
        assert_eq!(kvm_exit_name(1000), None);
        assert_eq!(hw_exit_name(ExitIsa::Vmx, 48), "EPT_VIOLATION");
        assert_eq!(hw_exit_name(ExitIsa::Vmx, 30), "IO_INSTRUCTION");
        assert_eq!(hw_exit_name(ExitIsa::Svm, 0x7b), "IOIO");
        assert_eq!(hw_exit_name(ExitIsa::Svm, 0x400), "NPF");
        assert_eq!(hw_exit_name(ExitIsa::Unknown, 7), "REASON_7");
        assert_eq!(userspace_exit_name(6), "userspace:MMIO");
        assert_eq!(userspace_exit_name(99), "userspace:99");
    }
}
