//! Creating one KVM VM: its memory, boot image and vCPUs set up in 64-bit long mode.
//!
//! Architecture invariant: nothing here is specific to PVM except the one optional MSR
//! write in `enable_pvm_native`, which VT-x/AMD-V KVM refuses (returns 0) and the VMM
//! ignores.

use std::sync::Arc;

use kvm_bindings::{
    kvm_device_attr, kvm_msr_entry, kvm_segment, kvm_userspace_memory_region, CpuId, Msrs, KVMIO,
    KVM_VCPU_TSC_CTRL, KVM_VCPU_TSC_OFFSET,
};
use kvm_ioctls::{Cap, Kvm, VcpuFd, VmFd};

use vmm_sys_util::ioctl::ioctl_with_ref;
use vmm_sys_util::ioctl_iow_nr;

use crate::clock::rdtsc;
use crate::error::VmmError;
use crate::guest::{self, block};
use crate::memory::GuestMemory;

/// PVM: guest-physical address of the guest's virtual interrupt flag page | 1 enables
/// native execution of the guest's code (otherwise PVM emulates every instruction).
pub const MSR_PVM_VCPU_STRUCT: u32 = 0x4b56_4d10;
/// PVM's identification MSR (reads 0x4d5650, "PVM").
pub const MSR_PVM_SIGNATURE: u32 = 0x4b56_4d11;
const MSR_IA32_TSC: u32 = 0x10;

// kvm-ioctls offers the vCPU device-attribute ioctls on aarch64 only; x86 needs this one
// for KVM_VCPU_TSC_OFFSET.
ioctl_iow_nr!(KVM_SET_DEVICE_ATTR, KVMIO, 0xe1, kvm_device_attr);

/// Which kind of KVM this host has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KvmFlavour {
    /// Intel VT-x.
    Vmx,
    /// AMD-V.
    Svm,
    /// PVM, KVM without hardware virtualisation.
    Pvm,
    Unknown,
}

impl std::fmt::Display for KvmFlavour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KvmFlavour::Vmx => "VT-x",
            KvmFlavour::Svm => "AMD-V",
            KvmFlavour::Pvm => "PVM",
            KvmFlavour::Unknown => "unknown",
        })
    }
}

impl KvmFlavour {
    pub fn detect() -> KvmFlavour {
        if std::path::Path::new("/sys/module/kvm_pvm").exists() {
            return KvmFlavour::Pvm;
        }
        let flags = hostfacts::system::cpu_flags();
        let has = |f: &str| flags.iter().any(|w| w == f);
        if has("vmx") {
            KvmFlavour::Vmx
        } else if has("svm") {
            KvmFlavour::Svm
        } else {
            KvmFlavour::Unknown
        }
    }
}

/// Opens /dev/kvm and checks what the VMM relies on.
pub fn open_kvm() -> Result<Kvm, VmmError> {
    let kvm = Kvm::new().map_err(VmmError::from_kvm_open)?;
    let version = kvm.get_api_version();
    if version != 12 {
        return Err(VmmError::ApiVersion(version));
    }
    for (cap, name) in [
        (Cap::UserMemory, "KVM_CAP_USER_MEMORY"),
        (Cap::ImmediateExit, "KVM_CAP_IMMEDIATE_EXIT"),
        (Cap::ExtCpuid, "KVM_CAP_EXT_CPUID"),
    ] {
        if !kvm.check_extension(cap) {
            return Err(VmmError::MissingCapability(name));
        }
    }
    Ok(kvm)
}

/// Per-vCPU values the VMM writes into the control block.
#[derive(Clone, Copy, Debug)]
pub struct BlockParams {
    pub threshold_ticks: u64,
    pub exit_every: u64,
    pub burst_ticks: u64,
    pub sleep_us: u64,
    pub fault: bool,
}

/// A created VM with its vCPUs, ready to run.
pub struct BuiltVm {
    pub fd: VmFd,
    pub mem: Arc<GuestMemory>,
    pub vcpus: Vec<BuiltVcpu>,
}

pub struct BuiltVcpu {
    pub fd: VcpuFd,
    /// Guest TSC − host TSC, to bring the guest's gap timestamps onto the host TSC.
    pub tsc_offset: i64,
    /// Whether PVM accepted the native-execution MSR.
    pub pvm_native: bool,
}

/// Creates VM `label` with one vCPU per entry of `params`.
pub fn build_vm(
    kvm: &Kvm,
    cpuid: &CpuId,
    label: &str,
    params: &[BlockParams],
    want_pvm_native: bool,
) -> Result<BuiltVm, VmmError> {
    let err = |what| move |e| VmmError::setup(label, what, e);
    let fd = kvm.create_vm().map_err(err("create the KVM VM"))?;
    // Needed on Intel hosts without unrestricted guest; refused harmlessly elsewhere.
    let _ = fd.set_tss_address(0xfffb_d000);

    let mem = GuestMemory::new(guest::MEM_SIZE).map_err(|err| VmmError::Setup {
        vm: label.to_string(),
        what: "map guest memory",
        err,
    })?;
    guest::write_boot_image(&mem);
    let region = kvm_userspace_memory_region {
        slot: 0,
        flags: 0,
        guest_phys_addr: 0,
        memory_size: mem.len() as u64,
        userspace_addr: mem.host_addr(),
    };
    // SAFETY: the region is a live anonymous mapping of exactly `memory_size` bytes that is
    // kept alive (Arc) by the VM's vCPU threads and the VMM for as long as the VM can run.
    unsafe { fd.set_user_memory_region(region) }.map_err(err("register guest memory"))?;

    let mut vcpus = Vec::with_capacity(params.len());
    for (i, p) in params.iter().enumerate() {
        let at = guest::control_block(i as u32);
        mem.write_u64(at + block::THRESHOLD_TICKS, p.threshold_ticks);
        mem.write_u64(at + block::EXIT_EVERY, p.exit_every);
        mem.write_u64(at + block::BURST_TICKS, p.burst_ticks);
        mem.write_u64(at + block::SLEEP_US, p.sleep_us);
        mem.write_u64(at + block::RING_MASK, guest::RING_SLOTS - 1);
        mem.write_u64(at + block::VCPU_INDEX, i as u64);
        mem.write_u64(at + block::FAULT, u64::from(p.fault));
        mem.write_u64(at + block::UNIT_ITERS, guest::UNIT_ITERS);

        let vcpu = fd.create_vcpu(i as u64).map_err(err("create a vCPU"))?;
        vcpu.set_cpuid2(cpuid).map_err(err("set vCPU CPUID"))?;
        set_long_mode(&vcpu, at).map_err(err("set vCPU registers"))?;
        let pvm_native = want_pvm_native && enable_pvm_native(&vcpu);
        let tsc_offset = guest_tsc_offset(&vcpu).map_err(err("read the guest TSC"))?;
        vcpus.push(BuiltVcpu {
            fd: vcpu,
            tsc_offset,
            pvm_native,
        });
    }
    Ok(BuiltVm {
        fd,
        mem: Arc::new(mem),
        vcpus,
    })
}

/// RFLAGS bit 1 is reserved and always 1.
const RFLAGS_RESERVED_1: u64 = 1 << 1;
/// Interrupt enable flag.
const RFLAGS_IF: u64 = 1 << 9;

/// Segments, control registers and paging for 64-bit mode at CPL0; RIP at the program,
/// RDI at this vCPU's control block.
fn set_long_mode(vcpu: &VcpuFd, control_block: u64) -> Result<(), vmm_sys_util::errno::Error> {
    let mut sregs = vcpu.get_sregs()?;
    let code = kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector: 0x08,
        type_: 11,
        present: 1,
        dpl: 0,
        db: 0,
        s: 1,
        l: 1,
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    };
    let data = kvm_segment {
        selector: 0x10,
        type_: 3,
        db: 1,
        l: 0,
        ..code
    };
    // A busy 64-bit TSS: VT-x's entry checks want one in long mode.
    let tss = kvm_segment {
        selector: 0x18,
        limit: 0x67,
        type_: 11,
        s: 0,
        l: 0,
        g: 0,
        ..code
    };
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = tss;
    sregs.gdt.base = guest::GDT_ADDR;
    sregs.gdt.limit = 3 * 8 - 1;
    // PE | MP | ET | NE | PG
    sregs.cr0 = 0x8000_0033;
    sregs.cr3 = guest::PML4_ADDR;
    // PAE
    sregs.cr4 = 0x20;
    // LME | LMA
    sregs.efer = 0x500;
    vcpu.set_sregs(&sregs)?;

    let mut regs = vcpu.get_regs()?;
    regs.rip = guest::CODE_ADDR;
    regs.rsp = guest::STACK_TOP;
    // IF=1 although the guest has no IDT: the VMM creates no irqchip and never injects an
    // interrupt, so the flag changes nothing the guest sees. It matters to emulated VT-x:
    // Bochs 2.7 takes no external-interrupt VM exit while the guest runs with IF=0 (real
    // VT-x exits either way), so a `spin` vCPU would never give its pCPU back there.
    regs.rflags = RFLAGS_RESERVED_1 | RFLAGS_IF;
    regs.rdi = control_block;
    vcpu.set_regs(&regs)
}

/// Asks PVM to run this vCPU's code natively. Returns whether the MSR was accepted
/// (true on PVM; VT-x/AMD-V KVM does not know it and sets 0 MSRs).
fn enable_pvm_native(vcpu: &VcpuFd) -> bool {
    let entry = kvm_msr_entry {
        index: MSR_PVM_VCPU_STRUCT,
        data: guest::PVM_VIF_PAGE | 1,
        ..Default::default()
    };
    match Msrs::from_entries(&[entry]) {
        Ok(msrs) => matches!(vcpu.set_msrs(&msrs), Ok(1)),
        Err(_) => false,
    }
}

/// Guest TSC − host TSC.
///
/// Preferably zero: KVM_VCPU_TSC_OFFSET (Linux ≥ 5.16) sets the guest's TSC to the host's
/// exactly (KVM keeps the host's TSC rate unless told otherwise), so gap timestamps need no
/// correction. Otherwise a host-initiated read of IA32_TSC, bracketed by host `rdtsc`s,
/// estimates it to within half an ioctl.
fn guest_tsc_offset(vcpu: &VcpuFd) -> Result<i64, vmm_sys_util::errno::Error> {
    let zero: u64 = 0;
    let attr = kvm_device_attr {
        flags: 0,
        group: KVM_VCPU_TSC_CTRL,
        attr: u64::from(KVM_VCPU_TSC_OFFSET),
        addr: &zero as *const u64 as u64,
    };
    // SAFETY: KVM_SET_DEVICE_ATTR on a vCPU fd reads one kvm_device_attr, and for this
    // attribute one u64 at `addr`, which points at `zero` for the duration of the call.
    let r = unsafe { ioctl_with_ref(vcpu, KVM_SET_DEVICE_ATTR(), &attr) };
    if r == 0 {
        return Ok(0);
    }
    measured_tsc_offset(vcpu)
}

fn measured_tsc_offset(vcpu: &VcpuFd) -> Result<i64, vmm_sys_util::errno::Error> {
    let mut best: Option<(u64, i64)> = None;
    for _ in 0..5 {
        let mut msrs = Msrs::from_entries(&[kvm_msr_entry {
            index: MSR_IA32_TSC,
            ..Default::default()
        }])
        .map_err(|_| vmm_sys_util::errno::Error::new(libc::EINVAL))?;
        let before = rdtsc();
        let n = vcpu.get_msrs(&mut msrs)?;
        let after = rdtsc();
        if n != 1 {
            return Err(vmm_sys_util::errno::Error::new(libc::EIO));
        }
        let guest = msrs.as_slice()[0].data;
        let host = before + (after - before) / 2;
        let offset = guest.wrapping_sub(host) as i64;
        if best.is_none_or(|(w, _)| after - before < w) {
            best = Some((after - before, offset));
        }
    }
    Ok(best.map(|(_, o)| o).unwrap_or(0))
}
