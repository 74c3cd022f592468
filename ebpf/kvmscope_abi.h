/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * The one ABI shared by the eBPF programs (kvmscope.bpf.c) and the Rust decoder
 * (probes/src/abi.rs): every record the programs put in the ring buffer, and the numbers that
 * pin their layout.
 *
 * Rules that keep the two sides in step:
 * - Only fixed-width integers, every struct padded by hand to a multiple of 8 bytes, no
 *   implicit padding (the _Static_asserts below fail if the compiler had to add any).
 * - Every size and field offset is a KS_* #define here; the C side asserts the structs
 *   against them and probes/build.rs turns them into Rust constants that abi.rs asserts
 *   against, so a change on one side only cannot compile.
 * - Records start with struct ks_hdr; `kind` says which struct follows.
 * - Kernel values are shipped raw (se.load.weight keeps the kernel's fixed-point scale);
 *   the Rust decoder converts them to model units.
 */
#ifndef KVMSCOPE_ABI_H
#define KVMSCOPE_ABI_H

#ifndef __bpf__
#include <stdint.h>
#include <stddef.h>
typedef uint8_t __u8;
typedef uint32_t __u32;
typedef int32_t __s32;
typedef uint64_t __u64;
typedef int64_t __s64;
#endif

#define KS_TASK_COMM_LEN 16

/* Offset value meaning "this kernel's tracepoint has no such field". */
#define KS_FIELD_ABSENT 0xffffffffu

/* ks_hdr.kind: which record follows the header. */
#define KS_KIND_SWITCH 1
#define KS_KIND_WAKEUP 2
#define KS_KIND_MIGRATE 3
#define KS_KIND_TASK_EXIT 4
#define KS_KIND_KVM_ENTRY 5
#define KS_KIND_KVM_EXIT 6
#define KS_KIND_USERSPACE_EXIT 7
#define KS_KIND_PIO 8
#define KS_KIND_CSD 9

/* ks_se.present bits: which optional sched_entity fields this kernel has. */
#define KS_SE_HAS_DEADLINE 1u
#define KS_SE_HAS_SLICE 2u
/* vlag is only meaningful while the task is off the run queue (it shares a union otherwise). */
#define KS_SE_HAS_VLAG 4u
/* sched_info exists only with CONFIG_SCHED_INFO (schedstats, delay accounting, taskstats). */
#define KS_SE_HAS_RUN_DELAY 8u

/* ks_switch.se_present bits. */
#define KS_SWITCH_PREV_SE 1u
#define KS_SWITCH_NEXT_SE 2u

/* ks_csd.phase values. */
#define KS_CSD_QUEUE 0u
#define KS_CSD_ENTRY 1u
#define KS_CSD_EXIT 2u

/* kvm_exit `isa` values (KVM_ISA_VMX / KVM_ISA_SVM in arch/x86/kvm/trace.h). */
#define KS_KVM_ISA_VMX 1u
#define KS_KVM_ISA_SVM 2u

/* exit_mode bits (kvmscope.bpf.c): kvm_exit/kvm_entry as records, as in-kernel aggregates, or
 * both (the equality check of the kernel matrix). */
#define KS_EXITS_STREAM 1u
#define KS_EXITS_AGGREGATE 2u

/* Counters of `struct ks_lost` (the `lost` map's one value per CPU): where a lost record was
 * going. The shared `events` ring buffer
 * and the per-CPU switch rings fill for different reasons (a burst of wakeups and kvm records
 * against 16 MiB; a CPU's switch storm against its few thousand records), so the reader
 * counts them apart. */
#define KS_LOST_EVENTS 0u
#define KS_LOST_SWITCHES 1u
/* Not a ring: exits (and port I/O exits) the aggregation maps had no room for
 * (--exits aggregate/both). */
#define KS_LOST_EXIT_AGGS 2u
/* How many KS_LOST_* causes there are: the length of `struct ks_lost`. */
#define KS_LOST_CAUSES 3u

/* Log2 buckets of exit handling time (exit -> next entry): bucket b holds [2^b, 2^(b+1)) ns,
 * bucket 0 also 0 ns, the last one everything from 2^39 ns (~9 min) up. */
#define KS_EXIT_HIST_BUCKETS 40

struct ks_hdr {
	__u64 ts; /* bpf_ktime_get_ns(): CLOCK_MONOTONIC */
	__u32 kind; /* KS_KIND_* */
	__u32 cpu; /* CPU the program ran on */
};
#define KS_SIZE_HDR 16
#define KS_OFF_HDR_TS 0
#define KS_OFF_HDR_KIND 8
#define KS_OFF_HDR_CPU 12

struct ks_se {
	__u64 vruntime;
	__u64 weight; /* raw se.load.weight: nice 0 = 1024 << 10 on 64-bit kernels */
	__u64 sum_exec_runtime;
	__u64 deadline;
	__u64 slice;
	__s64 vlag;
	__u64 run_delay; /* sched_info.run_delay: the schedstat run-queue wait counter */
	__u32 present; /* KS_SE_HAS_* */
	__u32 _pad;
};
#define KS_SIZE_SE 64
#define KS_OFF_SE_VRUNTIME 0
#define KS_OFF_SE_WEIGHT 8
#define KS_OFF_SE_SUM_EXEC 16
#define KS_OFF_SE_DEADLINE 24
#define KS_OFF_SE_SLICE 32
#define KS_OFF_SE_VLAG 40
#define KS_OFF_SE_RUN_DELAY 48
#define KS_OFF_SE_PRESENT 56

struct ks_switch {
	struct ks_hdr hdr;
	__u32 prev_tid;
	__u32 prev_pid;
	__u32 next_tid;
	__u32 next_pid;
	__u64 prev_state; /* 0 = preempted while runnable */
	char prev_comm[KS_TASK_COMM_LEN];
	char next_comm[KS_TASK_COMM_LEN];
	__u32 se_present; /* KS_SWITCH_*_SE: which side's ks_se is filled; the other's bytes are unspecified */
	__u32 _pad;
	struct ks_se prev_se;
	struct ks_se next_se;
};
#define KS_SIZE_SWITCH 208
#define KS_OFF_SWITCH_PREV_TID 16
#define KS_OFF_SWITCH_PREV_PID 20
#define KS_OFF_SWITCH_NEXT_TID 24
#define KS_OFF_SWITCH_NEXT_PID 28
#define KS_OFF_SWITCH_PREV_STATE 32
#define KS_OFF_SWITCH_PREV_COMM 40
#define KS_OFF_SWITCH_NEXT_COMM 56
#define KS_OFF_SWITCH_SE_PRESENT 72
#define KS_OFF_SWITCH_PREV_SE 80
#define KS_OFF_SWITCH_NEXT_SE 144

/* sched_switch records travel in chunks: each chunk is the single value of its own small
 * array map, and `switch_chunks` (an array of maps) holds every CPU's chunks. A chunk stays
 * under the size the kernel still kmalloc()s for a map (32 KiB with the map's header), so it
 * lives in the kernel's linear mapping, where one huge-page TLB entry covers it, rather than
 * in vmalloc space, where every 4 KiB page costs a TLB miss on the write path (see
 * kvmscope.bpf.c). */
#define KS_SWITCH_CHUNK_RECORDS 144
struct ks_switch_chunk {
	struct ks_switch rec[KS_SWITCH_CHUNK_RECORDS];
};
/* KS_SIZE_SWITCH * KS_SWITCH_CHUNK_RECORDS */
#define KS_SIZE_SWITCH_CHUNK 29952

/* One CPU's write position (`switch_head[cpu]`): records written on that CPU, and what the
 * write path needs with them on one cache line, so that it loads nothing else. User space
 * sets `capacity`, `first_key` and `key_mask` before attaching; after that only the BPF
 * program on that CPU writes the entry, and user space reads `head` with a map lookup.
 * `chunk_key`/`index` are `head` split into chunk and record (kept here to spare a division
 * per record); `limit` is how far the writer may go before it looks at the tail again;
 * `wake_at`/`wake_records` decide when it wakes the reader (kvmscope.bpf.c, wake_reader). */
struct ks_switch_head {
	__u64 head;
	__u64 limit;
	__u64 capacity;
	__u32 first_key; /* switch_chunks index of this CPU's first chunk */
	__u32 key_mask; /* chunks per CPU - 1 (a power of two - 1) */
	__u32 chunk; /* chunk of record `head`, 0..=key_mask */
	__u32 index; /* record `head` within it */
	__u64 wake_at; /* the `head` at which the writer next looks at how far the reader is */
	__u32 wake_records; /* records waiting that make the writer wake the reader */
	__u32 _pad32;
	__u64 _pad;
};
#define KS_SIZE_SWITCH_HEAD 64
#define KS_OFF_SWITCH_HEAD_HEAD 0
#define KS_OFF_SWITCH_HEAD_LIMIT 8
#define KS_OFF_SWITCH_HEAD_CAPACITY 16
#define KS_OFF_SWITCH_HEAD_FIRST_KEY 24
#define KS_OFF_SWITCH_HEAD_KEY_MASK 28
#define KS_OFF_SWITCH_HEAD_CHUNK 32
#define KS_OFF_SWITCH_HEAD_INDEX 36
#define KS_OFF_SWITCH_HEAD_WAKE_AT 40
#define KS_OFF_SWITCH_HEAD_WAKE_RECORDS 48

/* One CPU's read position (`switch_tail[cpu]`): records consumed. Written only by the reader
 * (a map update); a map of its own, so that the update cannot overwrite `head`. */
struct ks_switch_tail {
	__u64 tail;
	__u64 _pad[7];
};
#define KS_SIZE_SWITCH_TAIL 64
#define KS_OFF_SWITCH_TAIL_TAIL 0

/* One record per wakeup of a tracked task: sched_waking supplies the waker, sched_wakeup the
 * time and target CPU. */
struct ks_wakeup {
	struct ks_hdr hdr;
	__u32 tid;
	__u32 pid;
	__u32 target_cpu;
	__u32 waker_tid; /* 0: idle/none seen */
};
#define KS_SIZE_WAKEUP 32
#define KS_OFF_WAKEUP_TID 16
#define KS_OFF_WAKEUP_PID 20
#define KS_OFF_WAKEUP_TARGET_CPU 24
#define KS_OFF_WAKEUP_WAKER_TID 28

struct ks_migrate {
	struct ks_hdr hdr;
	__u32 tid;
	__u32 pid;
	__u32 orig_cpu;
	__u32 dest_cpu;
};
#define KS_SIZE_MIGRATE 32
#define KS_OFF_MIGRATE_TID 16
#define KS_OFF_MIGRATE_PID 20
#define KS_OFF_MIGRATE_ORIG_CPU 24
#define KS_OFF_MIGRATE_DEST_CPU 28

struct ks_task_exit {
	struct ks_hdr hdr;
	__u32 tid;
	__u32 pid;
};
#define KS_SIZE_TASK_EXIT 24
#define KS_OFF_TASK_EXIT_TID 16
#define KS_OFF_TASK_EXIT_PID 20

struct ks_kvm_entry {
	struct ks_hdr hdr;
	__u32 tid;
	__u32 vcpu_id;
};
#define KS_SIZE_KVM_ENTRY 24
#define KS_OFF_KVM_ENTRY_TID 16
#define KS_OFF_KVM_ENTRY_VCPU_ID 20

struct ks_kvm_exit {
	struct ks_hdr hdr;
	__u32 tid;
	__u32 vcpu_id; /* KS_FIELD_ABSENT if the kernel's kvm_exit has no vcpu_id */
	__u32 reason;
	__u32 isa; /* KS_KVM_ISA_*, 0 if the tracepoint has no isa field */
};
#define KS_SIZE_KVM_EXIT 32
#define KS_OFF_KVM_EXIT_TID 16
#define KS_OFF_KVM_EXIT_VCPU_ID 20
#define KS_OFF_KVM_EXIT_REASON 24
#define KS_OFF_KVM_EXIT_ISA 28

struct ks_userspace_exit {
	struct ks_hdr hdr;
	__u32 tid;
	__u32 reason;
	__s32 err; /* the tracepoint's `errno` */
	__u32 _pad;
};
#define KS_SIZE_USERSPACE_EXIT 32
#define KS_OFF_USERSPACE_EXIT_TID 16
#define KS_OFF_USERSPACE_EXIT_REASON 20
#define KS_OFF_USERSPACE_EXIT_ERR 24

struct ks_pio {
	struct ks_hdr hdr;
	__u32 tid;
	__u32 rw;
	__u32 port;
	__u32 size;
	__u32 val;
	__u32 _pad;
};
#define KS_SIZE_PIO 40
#define KS_OFF_PIO_TID 16
#define KS_OFF_PIO_RW 20
#define KS_OFF_PIO_PORT 24
#define KS_OFF_PIO_SIZE 28
#define KS_OFF_PIO_VAL 32

struct ks_csd {
	struct ks_hdr hdr;
	__u64 func;
	__u64 csd;
	__u32 phase; /* KS_CSD_* */
	__u32 target_cpu;
	__u32 tid; /* current on hdr.cpu */
	__u32 _pad;
};
#define KS_SIZE_CSD 48
#define KS_OFF_CSD_FUNC 16
#define KS_OFF_CSD_CSD 24
#define KS_OFF_CSD_PHASE 32
#define KS_OFF_CSD_TARGET_CPU 36
#define KS_OFF_CSD_TID 40

/* Key of `exit_aggs`: one vCPU thread's exits of one reason. */
struct ks_exit_key {
	__u32 tid;
	__u32 reason;
	__u32 isa; /* KS_KVM_ISA_*, 0 if the tracepoint has no isa field */
	__u32 _pad;
};
#define KS_SIZE_EXIT_KEY 16
#define KS_OFF_EXIT_KEY_TID 0
#define KS_OFF_EXIT_KEY_REASON 4
#define KS_OFF_EXIT_KEY_ISA 8

/* Key of `pio_aggs` (value: a __u64 count per CPU): one vCPU thread's port I/O exits on one
 * port in one direction. */
struct ks_pio_key {
	__u32 tid;
	__u32 port;
	__u32 rw; /* 0 = in, 1 = out */
};
#define KS_SIZE_PIO_KEY 12
#define KS_OFF_PIO_KEY_TID 0
#define KS_OFF_PIO_KEY_PORT 4
#define KS_OFF_PIO_KEY_RW 8

/* Value of `lost` (per CPU): records that found no room, by KS_LOST_*. One value, so the
 * reader reads every cause with one map lookup, as before there were causes. */
struct ks_lost {
	__u64 by_cause[KS_LOST_CAUSES];
};
#define KS_SIZE_LOST 24

/* Value of `exit_aggs` (per CPU, summed by the reader): exits counted since load and the
 * handling time of those closed by a kvm_entry. */
struct ks_exit_agg {
	__u64 count;
	__u64 hist[KS_EXIT_HIST_BUCKETS];
};
#define KS_SIZE_EXIT_AGG 328
#define KS_OFF_EXIT_AGG_COUNT 0
#define KS_OFF_EXIT_AGG_HIST 8

#define KS_ASSERT_LAYOUT(type, size) _Static_assert(sizeof(struct type) == (size), #type " size")
#define KS_ASSERT_OFF(type, field, off)                                                          \
	_Static_assert(__builtin_offsetof(struct type, field) == (off), #type "." #field " offset")

KS_ASSERT_LAYOUT(ks_hdr, KS_SIZE_HDR);
KS_ASSERT_OFF(ks_hdr, ts, KS_OFF_HDR_TS);
KS_ASSERT_OFF(ks_hdr, kind, KS_OFF_HDR_KIND);
KS_ASSERT_OFF(ks_hdr, cpu, KS_OFF_HDR_CPU);

KS_ASSERT_LAYOUT(ks_se, KS_SIZE_SE);
KS_ASSERT_OFF(ks_se, vruntime, KS_OFF_SE_VRUNTIME);
KS_ASSERT_OFF(ks_se, weight, KS_OFF_SE_WEIGHT);
KS_ASSERT_OFF(ks_se, sum_exec_runtime, KS_OFF_SE_SUM_EXEC);
KS_ASSERT_OFF(ks_se, deadline, KS_OFF_SE_DEADLINE);
KS_ASSERT_OFF(ks_se, slice, KS_OFF_SE_SLICE);
KS_ASSERT_OFF(ks_se, vlag, KS_OFF_SE_VLAG);
KS_ASSERT_OFF(ks_se, run_delay, KS_OFF_SE_RUN_DELAY);
KS_ASSERT_OFF(ks_se, present, KS_OFF_SE_PRESENT);

KS_ASSERT_LAYOUT(ks_switch_chunk, KS_SIZE_SWITCH_CHUNK);
KS_ASSERT_LAYOUT(ks_switch_head, KS_SIZE_SWITCH_HEAD);
KS_ASSERT_OFF(ks_switch_head, head, KS_OFF_SWITCH_HEAD_HEAD);
KS_ASSERT_OFF(ks_switch_head, limit, KS_OFF_SWITCH_HEAD_LIMIT);
KS_ASSERT_OFF(ks_switch_head, capacity, KS_OFF_SWITCH_HEAD_CAPACITY);
KS_ASSERT_OFF(ks_switch_head, first_key, KS_OFF_SWITCH_HEAD_FIRST_KEY);
KS_ASSERT_OFF(ks_switch_head, key_mask, KS_OFF_SWITCH_HEAD_KEY_MASK);
KS_ASSERT_OFF(ks_switch_head, chunk, KS_OFF_SWITCH_HEAD_CHUNK);
KS_ASSERT_OFF(ks_switch_head, index, KS_OFF_SWITCH_HEAD_INDEX);
KS_ASSERT_OFF(ks_switch_head, wake_at, KS_OFF_SWITCH_HEAD_WAKE_AT);
KS_ASSERT_OFF(ks_switch_head, wake_records, KS_OFF_SWITCH_HEAD_WAKE_RECORDS);
KS_ASSERT_LAYOUT(ks_switch_tail, KS_SIZE_SWITCH_TAIL);
KS_ASSERT_OFF(ks_switch_tail, tail, KS_OFF_SWITCH_TAIL_TAIL);

KS_ASSERT_LAYOUT(ks_switch, KS_SIZE_SWITCH);
KS_ASSERT_OFF(ks_switch, prev_tid, KS_OFF_SWITCH_PREV_TID);
KS_ASSERT_OFF(ks_switch, prev_pid, KS_OFF_SWITCH_PREV_PID);
KS_ASSERT_OFF(ks_switch, next_tid, KS_OFF_SWITCH_NEXT_TID);
KS_ASSERT_OFF(ks_switch, next_pid, KS_OFF_SWITCH_NEXT_PID);
KS_ASSERT_OFF(ks_switch, prev_state, KS_OFF_SWITCH_PREV_STATE);
KS_ASSERT_OFF(ks_switch, prev_comm, KS_OFF_SWITCH_PREV_COMM);
KS_ASSERT_OFF(ks_switch, next_comm, KS_OFF_SWITCH_NEXT_COMM);
KS_ASSERT_OFF(ks_switch, se_present, KS_OFF_SWITCH_SE_PRESENT);
KS_ASSERT_OFF(ks_switch, prev_se, KS_OFF_SWITCH_PREV_SE);
KS_ASSERT_OFF(ks_switch, next_se, KS_OFF_SWITCH_NEXT_SE);

KS_ASSERT_LAYOUT(ks_wakeup, KS_SIZE_WAKEUP);
KS_ASSERT_OFF(ks_wakeup, tid, KS_OFF_WAKEUP_TID);
KS_ASSERT_OFF(ks_wakeup, pid, KS_OFF_WAKEUP_PID);
KS_ASSERT_OFF(ks_wakeup, target_cpu, KS_OFF_WAKEUP_TARGET_CPU);
KS_ASSERT_OFF(ks_wakeup, waker_tid, KS_OFF_WAKEUP_WAKER_TID);

KS_ASSERT_LAYOUT(ks_migrate, KS_SIZE_MIGRATE);
KS_ASSERT_OFF(ks_migrate, tid, KS_OFF_MIGRATE_TID);
KS_ASSERT_OFF(ks_migrate, pid, KS_OFF_MIGRATE_PID);
KS_ASSERT_OFF(ks_migrate, orig_cpu, KS_OFF_MIGRATE_ORIG_CPU);
KS_ASSERT_OFF(ks_migrate, dest_cpu, KS_OFF_MIGRATE_DEST_CPU);

KS_ASSERT_LAYOUT(ks_task_exit, KS_SIZE_TASK_EXIT);
KS_ASSERT_OFF(ks_task_exit, tid, KS_OFF_TASK_EXIT_TID);
KS_ASSERT_OFF(ks_task_exit, pid, KS_OFF_TASK_EXIT_PID);

KS_ASSERT_LAYOUT(ks_kvm_entry, KS_SIZE_KVM_ENTRY);
KS_ASSERT_OFF(ks_kvm_entry, tid, KS_OFF_KVM_ENTRY_TID);
KS_ASSERT_OFF(ks_kvm_entry, vcpu_id, KS_OFF_KVM_ENTRY_VCPU_ID);

KS_ASSERT_LAYOUT(ks_kvm_exit, KS_SIZE_KVM_EXIT);
KS_ASSERT_OFF(ks_kvm_exit, tid, KS_OFF_KVM_EXIT_TID);
KS_ASSERT_OFF(ks_kvm_exit, vcpu_id, KS_OFF_KVM_EXIT_VCPU_ID);
KS_ASSERT_OFF(ks_kvm_exit, reason, KS_OFF_KVM_EXIT_REASON);
KS_ASSERT_OFF(ks_kvm_exit, isa, KS_OFF_KVM_EXIT_ISA);

KS_ASSERT_LAYOUT(ks_userspace_exit, KS_SIZE_USERSPACE_EXIT);
KS_ASSERT_OFF(ks_userspace_exit, tid, KS_OFF_USERSPACE_EXIT_TID);
KS_ASSERT_OFF(ks_userspace_exit, reason, KS_OFF_USERSPACE_EXIT_REASON);
KS_ASSERT_OFF(ks_userspace_exit, err, KS_OFF_USERSPACE_EXIT_ERR);

KS_ASSERT_LAYOUT(ks_pio, KS_SIZE_PIO);
KS_ASSERT_OFF(ks_pio, tid, KS_OFF_PIO_TID);
KS_ASSERT_OFF(ks_pio, rw, KS_OFF_PIO_RW);
KS_ASSERT_OFF(ks_pio, port, KS_OFF_PIO_PORT);
KS_ASSERT_OFF(ks_pio, size, KS_OFF_PIO_SIZE);
KS_ASSERT_OFF(ks_pio, val, KS_OFF_PIO_VAL);

KS_ASSERT_LAYOUT(ks_csd, KS_SIZE_CSD);
KS_ASSERT_OFF(ks_csd, func, KS_OFF_CSD_FUNC);
KS_ASSERT_OFF(ks_csd, csd, KS_OFF_CSD_CSD);
KS_ASSERT_OFF(ks_csd, phase, KS_OFF_CSD_PHASE);
KS_ASSERT_OFF(ks_csd, target_cpu, KS_OFF_CSD_TARGET_CPU);
KS_ASSERT_OFF(ks_csd, tid, KS_OFF_CSD_TID);

KS_ASSERT_LAYOUT(ks_exit_key, KS_SIZE_EXIT_KEY);
KS_ASSERT_OFF(ks_exit_key, tid, KS_OFF_EXIT_KEY_TID);
KS_ASSERT_OFF(ks_exit_key, reason, KS_OFF_EXIT_KEY_REASON);
KS_ASSERT_OFF(ks_exit_key, isa, KS_OFF_EXIT_KEY_ISA);
KS_ASSERT_LAYOUT(ks_exit_agg, KS_SIZE_EXIT_AGG);
KS_ASSERT_LAYOUT(ks_pio_key, KS_SIZE_PIO_KEY);
KS_ASSERT_OFF(ks_pio_key, tid, KS_OFF_PIO_KEY_TID);
KS_ASSERT_OFF(ks_pio_key, port, KS_OFF_PIO_KEY_PORT);
KS_ASSERT_OFF(ks_pio_key, rw, KS_OFF_PIO_KEY_RW);
KS_ASSERT_LAYOUT(ks_lost, KS_SIZE_LOST);
KS_ASSERT_OFF(ks_exit_agg, count, KS_OFF_EXIT_AGG_COUNT);
KS_ASSERT_OFF(ks_exit_agg, hist, KS_OFF_EXIT_AGG_HIST);

#endif /* KVMSCOPE_ABI_H */
