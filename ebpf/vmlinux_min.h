/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * The few kernel types kvmscope's eBPF programs read, declared by hand for CO-RE.
 *
 * Why not a full vmlinux.h: one generated from this machine's BTF is 3+ MB, ties the build to
 * the build host's kernel and needs bpftool and /sys/kernel/btf at build time (not the case in
 * every CI container). CO-RE only needs the names of the fields we touch: libbpf/aya relocate
 * each access against the running kernel's BTF at load time, so member order and the missing
 * members below do not matter. Fields that not every kernel has are probed with
 * bpf_core_field_exists() in kvmscope.bpf.c.
 */
#ifndef KVMSCOPE_VMLINUX_MIN_H
#define KVMSCOPE_VMLINUX_MIN_H

typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;
typedef signed char __s8;
typedef short __s16;
typedef int __s32;
typedef long long __s64;
typedef __u8 u8;
typedef __u16 u16;
typedef __u32 u32;
typedef __u64 u64;
typedef __s64 s64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u32 __wsum;
typedef _Bool bool;
typedef int pid_t;
#define true 1
#define false 0

enum bpf_map_type {
	BPF_MAP_TYPE_HASH = 1,
	BPF_MAP_TYPE_ARRAY = 2,
	BPF_MAP_TYPE_PERCPU_HASH = 5,
	BPF_MAP_TYPE_PERCPU_ARRAY = 6,
	BPF_MAP_TYPE_LRU_HASH = 9,
	BPF_MAP_TYPE_ARRAY_OF_MAPS = 12,
	BPF_MAP_TYPE_RINGBUF = 27,
	BPF_MAP_TYPE_TASK_STORAGE = 29,
};

enum {
	BPF_F_NO_PREALLOC = 1,
};

enum {
	BPF_LOCAL_STORAGE_GET_F_CREATE = 1,
};

enum {
	BPF_RB_NO_WAKEUP = 1,
	BPF_RB_FORCE_WAKEUP = 2,
};

enum {
	BPF_RB_AVAIL_DATA = 0,
};

enum {
	BPF_RINGBUF_HDR_SZ = 8,
};

enum {
	BPF_ANY = 0,
	BPF_NOEXIST = 1,
	BPF_EXIST = 2,
};

#pragma clang attribute push(__attribute__((preserve_access_index)), apply_to = record)

struct load_weight {
	unsigned long weight;
	u32 inv_weight;
};

struct sched_entity {
	struct load_weight load;
	u64 deadline;
	unsigned char on_rq;
	u64 sum_exec_runtime;
	u64 vruntime;
	s64 vlag;
	u64 slice;
};

struct thread_info {
	u32 cpu;
};

/* Present with CONFIG_SCHED_INFO; run_delay is what /proc/<pid>/task/<tid>/schedstat reports
 * as run-queue wait. */
struct sched_info {
	unsigned long long run_delay;
};

struct task_struct {
	struct thread_info thread_info;
	unsigned int __state;
	/* The base of the task's kernel stack (THREAD_SIZE bytes). */
	void *stack;
	struct sched_entity se;
	struct sched_info sched_info;
	pid_t pid;
	pid_t tgid;
	char comm[16];
	/* Voluntary and involuntary switch-outs: exit aggregation tells a guest entry after a
	 * switch-in from one that follows an exit on the same run (kvmscope_exit_agg.h). */
	unsigned long nvcsw;
	unsigned long nivcsw;
};

/* Kernels before 5.14 called the state `state` (a volatile long). */
struct task_struct___pre514 {
	long state;
};

/* Between 5.13 and 5.16 the cpu lived in task_struct even with THREAD_INFO_IN_TASK. */
struct task_struct___cpu {
	unsigned int cpu;
};

/* Opaque here: only its address is used, to pair csd queue/entry/exit events. */
struct __call_single_data {
	int __unused;
};

#pragma clang attribute pop

#endif /* KVMSCOPE_VMLINUX_MIN_H */
