//! Decoder golden tests: synthetic ring-buffer records → exact `model::Event`s, and the kvm
//! tracepoint layouts of several kernels (tracefs format fixtures) → offsets → decoded events.

use std::path::{Path, PathBuf};

use model::{
    Comm, CrossCall, CrossCallPhase, Event, ExitIsa, KvmEntry, KvmExit, Migrate, Pio, SchedEntity,
    SchedSwitch, TaskExit, UserspaceExit, Wakeup,
};
use probes::abi::{self, Record};
use probes::decode::{DecodeError, Decoder};
use probes::tracefs::{kallsyms_lookup, EventFormat, KvmOffsets};

fn hdr(kind: u32, ts: u64, cpu: u32) -> abi::Hdr {
    abi::Hdr { ts, kind, cpu }
}

fn comm(name: &str) -> [u8; 16] {
    Comm::new(name).0
}

fn decode(rec: &impl Record) -> Event {
    Decoder::default()
        .decode(rec.as_bytes())
        .expect("record decodes")
}

#[test]
fn switch_with_both_sides_tracked_on_an_eevdf_kernel() {
    let se = |vruntime, weight, present| abi::Se {
        vruntime,
        weight,
        sum_exec_runtime: 5_000_000,
        deadline: vruntime + 2_800_000,
        slice: 2_800_000,
        vlag: -1200,
        run_delay: 40_000,
        present,
        _pad: 0,
    };
    let rec = abi::Switch {
        hdr: hdr(abi::KIND_SWITCH, 1_000_000_123, 1),
        prev_tid: 101,
        prev_pid: 100,
        next_tid: 102,
        next_pid: 100,
        prev_state: 0,
        prev_comm: comm("vm0-vcpu0"),
        next_comm: comm("vm0-vcpu1"),
        se_present: abi::SWITCH_PREV_SE | abi::SWITCH_NEXT_SE,
        _pad: 0,
        // prev: nice 0 (1024 << 10), off the queue so vlag is valid; next: nice 5 (335 << 10).
        prev_se: se(
            7_000_000_000,
            1024 << 10,
            abi::SE_HAS_DEADLINE | abi::SE_HAS_SLICE | abi::SE_HAS_VLAG | abi::SE_HAS_RUN_DELAY,
        ),
        next_se: se(
            6_999_000_000,
            335 << 10,
            abi::SE_HAS_DEADLINE | abi::SE_HAS_SLICE,
        ),
    };
    let want = Event::SchedSwitch(SchedSwitch {
        ts: 1_000_000_123,
        cpu: 1,
        prev_tid: 101,
        prev_pid: 100,
        prev_comm: Comm::new("vm0-vcpu0"),
        prev_state: 0,
        next_tid: 102,
        next_pid: 100,
        next_comm: Comm::new("vm0-vcpu1"),
        prev_se: Some(SchedEntity {
            vruntime: 7_000_000_000,
            weight: 1024,
            sum_exec_runtime: 5_000_000,
            deadline: Some(7_002_800_000),
            vlag: Some(-1200),
            slice: Some(2_800_000),
            run_delay: Some(40_000),
        }),
        next_se: Some(SchedEntity {
            vruntime: 6_999_000_000,
            weight: 335,
            sum_exec_runtime: 5_000_000,
            deadline: Some(7_001_800_000),
            vlag: None,
            slice: Some(2_800_000),
            run_delay: None,
        }),
    });
    assert_eq!(decode(&rec), want);
    assert_eq!(
        serde_json::to_string(&want).unwrap(),
        r#"{"type":"sched_switch","ts":1000000123,"cpu":1,"prev_tid":101,"prev_pid":100,"prev_comm":"vm0-vcpu0","prev_state":0,"next_tid":102,"next_pid":100,"next_comm":"vm0-vcpu1","prev_se":{"vruntime":7000000000,"weight":1024,"sum_exec_runtime":5000000,"deadline":7002800000,"vlag":-1200,"slice":2800000,"run_delay":40000},"next_se":{"vruntime":6999000000,"weight":335,"sum_exec_runtime":5000000,"deadline":7001800000,"slice":2800000}}"#
    );
}

#[test]
fn switch_on_a_cfs_kernel_with_only_prev_tracked() {
    let rec = abi::Switch {
        hdr: hdr(abi::KIND_SWITCH, 42, 0),
        prev_tid: 7,
        prev_pid: 7,
        next_tid: 0,
        next_pid: 0,
        prev_state: 1, // TASK_INTERRUPTIBLE: going to sleep
        prev_comm: comm("qemu-system-x86"),
        next_comm: comm("swapper/0"),
        se_present: abi::SWITCH_PREV_SE,
        _pad: 0,
        prev_se: abi::Se {
            vruntime: 99,
            weight: 88761 << 10, // nice -20
            sum_exec_runtime: 1,
            present: 0, // CFS: no deadline, slice, vlag
            ..Default::default()
        },
        next_se: abi::Se {
            vruntime: 12345,
            ..Default::default()
        }, // ignored: not present
    };
    let Event::SchedSwitch(s) = decode(&rec) else {
        panic!("not a switch")
    };
    assert!(!s.prev_preempted());
    assert_eq!(s.next_comm.as_str(), "swapper/0");
    assert_eq!(s.prev_comm.as_str(), "qemu-system-x86");
    assert_eq!(
        s.prev_se,
        Some(SchedEntity {
            vruntime: 99,
            weight: 88761,
            sum_exec_runtime: 1,
            ..Default::default()
        })
    );
    assert_eq!(s.next_se, None);
}

#[test]
fn scheduler_side_records() {
    let w = abi::Wakeup {
        hdr: hdr(abi::KIND_WAKEUP, 10, 1),
        tid: 5,
        pid: 4,
        target_cpu: 0,
        waker_tid: 9,
    };
    assert_eq!(
        decode(&w),
        Event::Wakeup(Wakeup {
            ts: 10,
            cpu: 1,
            tid: 5,
            pid: 4,
            target_cpu: 0,
            waker_tid: 9
        })
    );
    let m = abi::Migrate {
        hdr: hdr(abi::KIND_MIGRATE, 11, 0),
        tid: 5,
        pid: 4,
        orig_cpu: 1,
        dest_cpu: 0,
    };
    assert_eq!(
        decode(&m),
        Event::Migrate(Migrate {
            ts: 11,
            cpu: 0,
            tid: 5,
            pid: 4,
            orig_cpu: 1,
            dest_cpu: 0
        })
    );
    let x = abi::TaskExit {
        hdr: hdr(abi::KIND_TASK_EXIT, 12, 1),
        tid: 5,
        pid: 4,
    };
    assert_eq!(
        decode(&x),
        Event::TaskExit(TaskExit {
            ts: 12,
            cpu: 1,
            tid: 5,
            pid: 4
        })
    );
}

#[test]
fn kvm_side_records() {
    let u = abi::UserspaceExit {
        hdr: hdr(abi::KIND_USERSPACE_EXIT, 20, 0),
        tid: 5,
        reason: 2,
        err: -4,
        _pad: 0,
    };
    assert_eq!(
        decode(&u),
        Event::UserspaceExit(UserspaceExit {
            ts: 20,
            cpu: 0,
            tid: 5,
            reason: 2,
            errno: -4
        })
    );
    let p = abi::Pio {
        hdr: hdr(abi::KIND_PIO, 21, 1),
        tid: 5,
        rw: 1,
        port: 0x3f8,
        size: 1,
        val: 0x41,
        _pad: 0,
    };
    assert_eq!(
        decode(&p),
        Event::Pio(Pio {
            ts: 21,
            cpu: 1,
            tid: 5,
            rw: 1,
            port: 0x3f8,
            size: 1,
            val: 0x41
        })
    );
    let e = abi::KvmEntry {
        hdr: hdr(abi::KIND_KVM_ENTRY, 22, 1),
        tid: 5,
        vcpu_id: 3,
    };
    assert_eq!(
        decode(&e),
        Event::KvmEntry(KvmEntry {
            ts: 22,
            cpu: 1,
            tid: 5,
            vcpu_id: 3
        })
    );
}

#[test]
fn cross_calls_are_marked_vmclear_by_address() {
    let vmclear = 0xffff_ffff_c0a1_b2c0;
    let decoder = Decoder {
        vmclear_func: Some(vmclear),
    };
    let rec = |phase, func| abi::Csd {
        hdr: hdr(abi::KIND_CSD, 30, 1),
        func,
        csd: 0xffff_8881_0000_1000,
        phase,
        target_cpu: 0,
        tid: 77,
        _pad: 0,
    };
    let ev = decoder
        .decode(rec(abi::CSD_QUEUE, vmclear).as_bytes())
        .unwrap();
    assert_eq!(
        ev,
        Event::CrossCall(CrossCall {
            ts: 30,
            cpu: 1,
            phase: CrossCallPhase::Queue,
            func: vmclear,
            csd: 0xffff_8881_0000_1000,
            target_cpu: 0,
            tid: 77,
            is_vmclear: true,
        })
    );
    let Event::CrossCall(other) = decoder
        .decode(rec(abi::CSD_EXIT, 0x1234).as_bytes())
        .unwrap()
    else {
        panic!("not a cross call")
    };
    assert_eq!(other.phase, CrossCallPhase::Exit);
    assert!(!other.is_vmclear);
    assert_eq!(
        decoder.decode(rec(7, vmclear).as_bytes()),
        Err(DecodeError::BadCsdPhase(7))
    );
}

#[test]
fn bad_records_are_errors_not_panics() {
    let d = Decoder::default();
    assert_eq!(d.decode(&[0u8; 3]), Err(DecodeError::NoHeader { len: 3 }));
    let h = hdr(abi::KIND_SWITCH, 1, 0);
    assert_eq!(
        d.decode(h.as_bytes()),
        Err(DecodeError::Short {
            kind: abi::KIND_SWITCH,
            len: 16,
            want: std::mem::size_of::<abi::Switch>()
        })
    );
    assert_eq!(
        d.decode(hdr(99, 1, 0).as_bytes()),
        Err(DecodeError::UnknownKind(99))
    );
}

// --- kvm tracepoint layouts from tracefs format files -------------------------------------

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tracefs")
}

/// Offsets as the loader computes them from a tracefs tree.
fn offsets(root: &Path) -> KvmOffsets {
    let load = |ev| {
        EventFormat::load(root, "kvm", ev)
            .unwrap()
            .unwrap_or_else(|| panic!("{ev}"))
    };
    let mut o = KvmOffsets::default();
    o.set_entry(&load("kvm_entry")).unwrap();
    o.set_exit(&load("kvm_exit")).unwrap();
    o.set_userspace_exit(&load("kvm_userspace_exit")).unwrap();
    o.set_pio(&load("kvm_pio")).unwrap();
    o
}

/// What `record_u32()` in kvmscope.bpf.c does with a raw tracepoint record.
fn bpf_read_u32(raw: &[u8], off: u32, absent: u32) -> u32 {
    if off == abi::FIELD_ABSENT {
        return absent;
    }
    let o = off as usize;
    u32::from_ne_bytes(raw[o..o + 4].try_into().unwrap())
}

/// A raw kvm_exit tracepoint record laid out as `format` says, with the given field values.
fn raw_record(format: &EventFormat, values: &[(&str, u64)]) -> Vec<u8> {
    let end = format
        .fields
        .iter()
        .map(|f| (f.offset + f.size) as usize)
        .max()
        .unwrap();
    let mut raw = vec![0xAAu8; end]; // junk between fields must not leak into the decode
    raw[0..2].copy_from_slice(&(format.id as u16).to_ne_bytes());
    for (name, value) in values {
        let f = format
            .field(name)
            .unwrap_or_else(|| panic!("{} has no {name}", format.name));
        let bytes = value.to_ne_bytes();
        raw[f.offset as usize..(f.offset + f.size) as usize]
            .copy_from_slice(&bytes[..f.size as usize]);
    }
    raw
}

/// Runs a raw kvm_exit record through the BPF side's extraction and the decoder.
fn kvm_exit_via_probe(root: &Path, values: &[(&str, u64)]) -> KvmExit {
    let o = offsets(root);
    let format = EventFormat::load(root, "kvm", "kvm_exit").unwrap().unwrap();
    let raw = raw_record(&format, values);
    let rec = abi::KvmExit {
        hdr: hdr(abi::KIND_KVM_EXIT, 500, 1),
        tid: 4242,
        vcpu_id: bpf_read_u32(&raw, o.exit_vcpu_id, abi::FIELD_ABSENT),
        reason: bpf_read_u32(&raw, o.exit_reason, 0),
        isa: bpf_read_u32(&raw, o.exit_isa, 0),
    };
    match Decoder::default().decode(rec.as_bytes()).unwrap() {
        Event::KvmExit(e) => e,
        other => panic!("decoded {other:?}"),
    }
}

#[test]
fn vmx_6_1_kvm_exit_layout_and_decode() {
    let root = fixtures().join("linux-6.1-vmx");
    let o = offsets(&root);
    assert_eq!((o.exit_reason, o.exit_isa, o.exit_vcpu_id), (8, 24, 56));
    assert_eq!(o.entry_vcpu_id, 8);
    // EPT violation (48) on vCPU 2.
    let e = kvm_exit_via_probe(
        &root,
        &[
            ("exit_reason", 48),
            ("isa", 1),
            ("vcpu_id", 2),
            ("guest_rip", 0xffff_ffff_8100_0000),
        ],
    );
    assert_eq!(
        e,
        KvmExit {
            ts: 500,
            cpu: 1,
            tid: 4242,
            vcpu_id: 2,
            reason: 48,
            isa: ExitIsa::Vmx
        }
    );
}

#[test]
fn svm_6_8_kvm_exit_layout_and_decode() {
    let root = fixtures().join("linux-6.8-svm");
    let o = offsets(&root);
    assert_eq!((o.exit_reason, o.exit_isa, o.exit_vcpu_id), (8, 24, 56));
    // SVM_EXIT_NPF (0x400) on vCPU 5.
    let e = kvm_exit_via_probe(
        &root,
        &[
            ("exit_reason", 0x400),
            ("isa", 2),
            ("vcpu_id", 5),
            ("info1", u64::MAX),
        ],
    );
    assert_eq!(
        e,
        KvmExit {
            ts: 500,
            cpu: 1,
            tid: 4242,
            vcpu_id: 5,
            reason: 0x400,
            isa: ExitIsa::Svm
        }
    );
}

#[test]
fn old_5_4_kvm_exit_without_vcpu_id_decodes_with_absent_marker() {
    let root = fixtures().join("linux-5.4-vmx");
    let o = offsets(&root);
    assert_eq!(o.exit_vcpu_id, abi::FIELD_ABSENT);
    assert_eq!(o.entry_vcpu_id, 8);
    let e = kvm_exit_via_probe(&root, &[("exit_reason", 30), ("isa", 1)]);
    assert_eq!(
        e.vcpu_id,
        u32::MAX,
        "absent vcpu_id is reported as u32::MAX"
    );
    assert_eq!((e.reason, e.isa), (30, ExitIsa::Vmx));
}

#[test]
fn this_hosts_6_18_layout_was_captured() {
    let root = fixtures().join("linux-6.18-pvm");
    let o = offsets(&root);
    assert_eq!((o.exit_reason, o.exit_isa, o.exit_vcpu_id), (8, 24, 56));
    assert_eq!((o.uexit_reason, o.uexit_errno), (8, 12));
    assert_eq!(
        (o.pio_rw, o.pio_port, o.pio_size, o.pio_val),
        (8, 12, 16, 24)
    );
    let entry = EventFormat::load(&root, "kvm", "kvm_entry")
        .unwrap()
        .unwrap();
    let names: Vec<_> = entry.fields.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "common_type",
            "common_flags",
            "common_preempt_count",
            "common_pid",
            "vcpu_id",
            "rip",
            "immediate_exit",
            "intr_info",
            "error_code"
        ]
    );
    assert_eq!(
        entry.field("immediate_exit").map(|f| (f.offset, f.size)),
        Some((24, 1))
    );
}

#[test]
fn format_parser_handles_arrays_data_loc_and_rejects_garbage() {
    let text = "name: sched_migrate_task\nID: 300\nformat:\n\
        \tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
        \tfield:__data_loc char[] comm;\toffset:8;\tsize:4;\tsigned:0;\n\
        \tfield:char prev_comm[16];\toffset:12;\tsize:16;\tsigned:0;\n\
        \tfield:pid_t pid;\toffset:28;\tsize:4;\tsigned:1;\n\nprint fmt: \"x\"\n";
    let f = EventFormat::parse(text).unwrap();
    assert_eq!((f.name.as_str(), f.id), ("sched_migrate_task", 300));
    let comm = f.field("comm").unwrap();
    assert_eq!(
        (comm.ctype.as_str(), comm.offset, comm.size),
        ("__data_loc char[]", 8, 4)
    );
    let prev = f.field("prev_comm").unwrap();
    assert_eq!((prev.ctype.as_str(), prev.size), ("char[16]", 16));
    assert!(f.field("pid").unwrap().signed);
    // A field of the wrong size cannot be used as a u32.
    assert!(f.u32_offset("prev_comm").unwrap_err().contains("16 bytes"));
    assert!(f.u32_offset("nope").unwrap_err().contains("no field"));

    assert!(EventFormat::parse("").is_err());
    assert!(EventFormat::parse("name: x\nID: y\n")
        .unwrap_err()
        .contains("bad ID"));
    assert!(EventFormat::parse("name: x\nID: 1\n\tfield:int a;\toffset:z;\n").is_err());
    // An event whose kvm_exit lacks exit_reason is unusable, with a reason.
    let bare = EventFormat::parse(
        "name: kvm_exit\nID: 1\n\tfield:int x;\toffset:8;\tsize:4;\tsigned:1;\n",
    )
    .unwrap();
    assert!(KvmOffsets::default()
        .set_exit(&bare)
        .unwrap_err()
        .contains("exit_reason"));
}

#[test]
fn live_tracefs_kvm_formats_parse_when_readable() {
    let root = Path::new("/sys/kernel/tracing");
    let mut seen = 0;
    for ev in ["kvm_entry", "kvm_exit", "kvm_userspace_exit", "kvm_pio"] {
        match EventFormat::load(root, "kvm", ev) {
            Ok(Some(f)) => {
                assert_eq!(f.name, ev);
                seen += 1;
            }
            Ok(None) => {}
            Err(e) => {
                eprintln!("skipped: {e}");
                return;
            }
        }
    }
    if seen == 4 {
        let o = offsets(root);
        assert_ne!(o.exit_reason, abi::FIELD_ABSENT);
    } else {
        eprintln!("skipped: this host's tracefs shows {seen}/4 kvm events (not mounted or no KVM)");
    }
}

#[test]
fn kallsyms_lookup_finds_module_symbols() {
    // Names that contain the one looked for come first: they are skipped.
    let text = "ffffffff81000000 T _text\n\
                0000000000000000 t hidden_sym\n\
                ffffffffc0a1b000 t __loaded_vmcs_clear_prefixed\t[kvm_intel]\n\
                ffffffffc0a1b100 t x__loaded_vmcs_clear\t[kvm_intel]\n\
                ffffffffc0a1b2c0 t __loaded_vmcs_clear\t[kvm_intel]";
    assert_eq!(
        kallsyms_lookup(text, "__loaded_vmcs_clear"),
        Some(0xffff_ffff_c0a1_b2c0)
    );
    assert_eq!(kallsyms_lookup(text, "hidden_sym"), None);
    assert_eq!(kallsyms_lookup(text, "missing"), None);
    // Only the whole name, wherever it occurs in the text.
    assert_eq!(kallsyms_lookup(text, "_text"), Some(0xffff_ffff_8100_0000));
    assert_eq!(
        kallsyms_lookup(text, "x__loaded_vmcs_clear"),
        Some(0xffff_ffff_c0a1_b100)
    );
}
