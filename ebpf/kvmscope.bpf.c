// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * kvmscope's kernel side: scheduler and KVM tracepoints, filtered in the kernel to the
 * threads user space tracks, emitted as the records of kvmscope_abi.h into one ring buffer.
 *
 * - sched:* use tp_btf (typed task_struct pointers, CO-RE reads of task->se).
 * - kvm:* use classic tracepoints: KVM is a module on most hosts, and tp_btf only resolves
 *   vmlinux BTF. Their record layout changes between kernels, so user space reads the field
 *   offsets from tracefs format files and sets the kvm_* globals below before loading; the
 *   verifier sees them as constants.
 * - csd:* (optional) pair the cross-CPU calls a tracked thread queues with their execution on
 *   the target CPU, which is how a VT-x vCPU migration's VMCLEAR IPI shows up.
 */
#include "vmlinux_min.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include "kvmscope_abi.h"

char LICENSE[] SEC("license") = "GPL";

/* Field offsets inside the classic kvm tracepoint records, from tracefs. KS_FIELD_ABSENT
 * means the running kernel's event lacks the field. Defaults are Linux 6.x's layout. */
const volatile __u32 kvm_entry_vcpu_id_off = 8;
const volatile __u32 kvm_exit_reason_off = 8;
const volatile __u32 kvm_exit_isa_off = 24;
const volatile __u32 kvm_exit_vcpu_id_off = 56;
const volatile __u32 kvm_uexit_reason_off = 8;
const volatile __u32 kvm_uexit_errno_off = 12;
const volatile __u32 kvm_pio_rw_off = 8;
const volatile __u32 kvm_pio_port_off = 12;
const volatile __u32 kvm_pio_size_off = 16;
const volatile __u32 kvm_pio_val_off = 24;

/* Wake the reader once per this many bytes of records (see submit()). Waking it per record
 * would make a reader whose own switches are traced (it shares CPUs with tracked threads)
 * wake per event and generate the events that wake it. User space polls with a timeout, so
 * records below the threshold are still read within one poll period. Never 0 (user space). */
const volatile __u64 wakeup_bytes = 64 << 10;

/* Threads to report on: bit (tid % 64) of element (tid / 64). Every sched_switch on the host
 * checks both sides, so this is the hot path: the verifier inlines array lookups (no helper
 * call), where a hash lookup costs a helper call and a hash walk. User space sizes it from
 * kernel.pid_max before load and is its only writer. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4194304 / 64);
	__type(key, __u32);
	__type(value, __u64);
} tracked SEC(".maps");

/* Size is set by user space (ProbeOptions::ring_bytes) before load. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16 << 20);
} events SEC(".maps");

/*
 * sched_switch records do not go through `events` but through one ring per CPU of
 * fixed-size records written in place. sched_switch runs on every context switch of the
 * host, with the run queue locked and interrupts off, so a CPU's ring has one writer at a
 * time and needs no lock, where bpf_ringbuf_reserve()/submit() take a spinlock and touch the
 * shared ring's header. Each ring is a series of chunks, each the one value of a small array
 * map (kvmscope_abi.h): small enough that the kernel kmalloc()s it, so it sits in the
 * linear mapping, covered by huge-page TLB entries. After a vCPU ran its guest the TLB is
 * cold, and a ring in vmalloc space (mmapable arrays, BPF ring buffers) costs a page walk
 * per record written. Measured with probes/examples/bpf_ab.rs (3 spinning vCPUs, 16 rounds
 * each): one big mmapable array, positions in another, cost a median 0.65 of the bpftrace
 * baseline per event; these chunks 0.53.
 * User space creates the chunks, reads them with map lookups and frees records by
 * advancing its tail; records that find the ring full are counted in `lost`, like `events`.
 */
struct switch_chunk {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	/* Sizes, not types: BTF reaches this struct only through pointers, so clang emits its
	 * types as forward declarations, which carry no size. */
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(struct ks_switch_chunk));
};

/* CPU n's chunks at switch_head[n].first_key onwards. Sized by user space. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 1);
	__type(key, __u32);
	__array(values, struct switch_chunk);
} switch_chunks SEC(".maps");

/* One entry per CPU (sized and set up by user space before attaching): written here only
 * after that. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ks_switch_head);
} switch_head SEC(".maps");

/* One entry per CPU (sized by user space): written by user space only. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ks_switch_tail);
} switch_tail SEC(".maps");

/* Wakeups of the reader by the switch rings (wake_reader): a record names the CPU whose ring
 * filled up. Its own small ring, not `events`: the records only exist to wake the reader, and
 * must not move `events`' own wakeup threshold. Sized by user space (one page). */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} switch_wakeups SEC(".maps");

/* Records that found their ring full, per CPU and cause (KS_LOST_*): user space turns them
 * into Lost events. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ks_lost);
} lost SEC(".maps");

/* The waker sched_waking saw, kept on the woken task until its sched_wakeup. Task-local
 * storage, not a hash keyed by tid: a lookup follows the task's own storage pointer, with
 * no hashing, bucket lock or LRU list, and the entry goes away with the task. Measured on
 * the bench's "wakeups" workload (benches/bpf_cost.rs): with an LRU hash here sched_waking
 * cost as much as the whole bpftrace baseline (1.0) and sched_wakeup 1.6 times it; now
 * 0.39-0.43 and 0.81-0.89. Only tracked tasks ever get an entry. */
struct ks_waker {
	__u32 tid;
	__u32 pending; /* set by sched_waking, cleared by sched_wakeup: a waker tid can be 0 */
};

#ifndef KS_WAKER_HASH
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC); /* required for local storage */
	__type(key, int);
	__type(value, struct ks_waker);
} wakers SEC(".maps");

static __always_inline struct ks_waker *waker_of(struct task_struct *p, bool create)
{
	return bpf_task_storage_get(&wakers, p, NULL, create ? BPF_LOCAL_STORAGE_GET_F_CREATE : 0);
}
#else
/* Kernels whose tracing programs cannot use task-local storage (before 5.12; the loader
 * decides from BTF) get this build: the same figure through an LRU hash keyed by tid, at the
 * cost measured above. An evicted entry only loses one waker (sched_wakeup then names the
 * current task, as on a local wakeup). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, __u32);
	__type(value, struct ks_waker);
} wakers SEC(".maps");

static __always_inline struct ks_waker *waker_of(struct task_struct *p, bool create)
{
	__u32 tid = p->pid;
	struct ks_waker *w = bpf_map_lookup_elem(&wakers, &tid);
	struct ks_waker fresh = {};

	if (w || !create)
		return w;
	bpf_map_update_elem(&wakers, &tid, &fresh, BPF_NOEXIST);
	return bpf_map_lookup_elem(&wakers, &tid);
}
#endif

/* csd pointers queued by tracked threads, so their entry/exit on the target CPU is sent. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, __u32);
} pending_csd SEC(".maps");

static __always_inline bool is_tracked(__u32 tid)
{
	__u32 slot = tid / 64;
	__u64 *bits = bpf_map_lookup_elem(&tracked, &slot);

	return tid != 0 && bits && ((*bits >> (tid % 64)) & 1);
}

static __always_inline __u32 current_tid(void)
{
	return (__u32)bpf_get_current_pid_tgid();
}

/* `cause` is a KS_LOST_* constant at every (inlined) call. */
static __always_inline void count_lost(__u32 cause)
{
	__u32 zero = 0;
	struct ks_lost *n = bpf_map_lookup_elem(&lost, &zero);

	if (n && cause < KS_LOST_CAUSES)
		n->by_cause[cause] += 1; /* per-CPU slot: no atomics needed */
}

/* Wake the reader when the data waiting in the ring crosses a multiple of wakeup_bytes, not
 * for every record once past it: a reader that is slow to run (the CPUs are busy with the
 * very threads it traces) would otherwise get one forced wakeup, an irq_work and a self-IPI,
 * per record until it drains the ring. Measured with probes/examples/bpf_ab.rs (WORKLOAD=
 * wakeups, PROGRAM=sched:sched_wakeup, SOLO=1, when it looked at the ring every 50 ms; it now
 * looks every 10 ms): 4.1 µs per sched_wakeup run before, 11 times the bpftrace baseline;
 * 0.32 µs after, 0.82 times.
 * AVAIL_DATA already counts this record (its header too), so the record moved the level
 * across a multiple exactly when the level modulo wakeup_bytes is below its length. A
 * crossing that two CPUs' records make together can go unseen, as does one a cross-call
 * record makes (emit_csd: those never wake); the next one, or the reader's poll timeout,
 * covers it. The priv_probes test
 * a_slow_reader_is_woken_per_wakeup_bytes_not_per_record counts the IRQ work this raises. */
static __always_inline void submit(void *rec, __u64 size)
{
	__u64 len = (size + BPF_RINGBUF_HDR_SZ + 7) & ~7ULL;
	__u64 flags = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) % wakeup_bytes < len
			      ? BPF_RB_FORCE_WAKEUP
			      : BPF_RB_NO_WAKEUP;

	bpf_ringbuf_submit(rec, flags);
}

static __always_inline void *reserve(__u64 size, __u32 kind)
{
	struct ks_hdr *hdr = bpf_ringbuf_reserve(&events, size, 0);

	if (!hdr) {
		count_lost(KS_LOST_EVENTS);
		return NULL;
	}
	hdr->ts = bpf_ktime_get_ns();
	hdr->kind = kind;
	hdr->cpu = bpf_get_smp_processor_id();
	return hdr;
}

/*
 * tp_btf arguments are trusted BTF pointers: plain dereferences are verified loads with CO-RE
 * relocated offsets, far cheaper than bpf_probe_read_kernel() per field. Branches on
 * bpf_core_field_exists() are constants after relocation, so the verifier drops the arm that
 * names a field this kernel lacks.
 */
static __always_inline __u32 task_cpu(struct task_struct *p)
{
	if (bpf_core_field_exists(p->thread_info.cpu))
		return p->thread_info.cpu;
	return ((struct task_struct___cpu *)p)->cpu;
}

static __always_inline __u64 task_state(struct task_struct *p)
{
	if (bpf_core_field_exists(p->__state))
		return p->__state;
	return ((struct task_struct___pre514 *)p)->state;
}

static __always_inline void read_se(struct ks_se *out, struct task_struct *p)
{
	__u32 present = 0;

	out->vruntime = p->se.vruntime;
	out->weight = p->se.load.weight;
	out->sum_exec_runtime = p->se.sum_exec_runtime;
	out->deadline = 0;
	out->slice = 0;
	out->vlag = 0;
	/* EEVDF (Linux >= 6.6) fields; CFS kernels lack them and keep the flags clear. */
	if (bpf_core_field_exists(p->se.deadline)) {
		out->deadline = p->se.deadline;
		present |= KS_SE_HAS_DEADLINE;
	}
	if (bpf_core_field_exists(p->se.slice)) {
		out->slice = p->se.slice;
		present |= KS_SE_HAS_SLICE;
	}
	/* While queued, vlag's storage holds something else on recent kernels (a union). */
	if (bpf_core_field_exists(p->se.vlag) && p->se.on_rq == 0) {
		out->vlag = p->se.vlag;
		present |= KS_SE_HAS_VLAG;
	}
	/* The kernel's own wait counter: lets the model report run-queue wait exactly as
	 * schedstat does, where tracepoint timing starts each wait a few µs late. */
	out->run_delay = 0;
	if (bpf_core_field_exists(p->sched_info.run_delay)) {
		out->run_delay = p->sched_info.run_delay;
		present |= KS_SE_HAS_RUN_DELAY;
	}
	out->present = present;
	out->_pad = 0;
}

/* TASK_COMM_LEN bytes as two 8-byte loads instead of a probe-read helper call. */
static __always_inline void copy_comm(char *dst, struct task_struct *p)
{
	const __u64 *src = (const __u64 *)p->comm;

	((__u64 *)dst)[0] = src[0];
	((__u64 *)dst)[1] = src[1];
}

/* The address of record `index` of `chunk`, bounded on the register it is computed from.
 * A C bounds check is not enough before Linux ~6.8: clang may spill `index`, compare a
 * reloaded copy and compute the address from another reload, and those verifiers do not carry
 * the bound learnt on one register over to the stack slot ("R2 unbounded memory access" on
 * 6.1). The clamp below is never taken (the caller has checked); it exists for the verifier. */
static __always_inline struct ks_switch *switch_slot(struct ks_switch_chunk *chunk, __u64 index)
{
	asm volatile("if %[i] < %[n] goto +1\n\t"
		     "%[i] = 0"
		     : [i] "+r"(index)
		     : [n] "i"(KS_SWITCH_CHUNK_RECORDS));
	return &chunk->rec[index];
}

/*
 * Called when CPU `cpu`'s ring has reached `head` == h->wake_at, so once per many records: it
 * reads the reader's tail (a line the reader writes, hence not on every record) and wakes the
 * reader if `wake_records` or more records wait. Without it the reader learns of switch
 * records only at its poll timeout, and a switch storm (hundreds of thousands a second on one
 * CPU) fills a ring well within that. While the reader stays behind, it is woken again every
 * quarter of `wake_records` more, not per record; once it has caught up, the next look is
 * where `wake_records` would wait if it did not read at all. The wakeup is a record in
 * `switch_wakeups` submitted with BPF_RB_FORCE_WAKEUP: the ring buffer wakes the reader from
 * an irq_work, which is safe here, under the run-queue lock. If that ring is full the reader
 * has unread wakeups already and nothing is lost by skipping one.
 */
static __always_inline void wake_reader(struct ks_switch_head *h, __u32 cpu, __u64 head)
{
	struct ks_switch_tail *t = bpf_map_lookup_elem(&switch_tail, &cpu);
	__u64 tail, wake = h->wake_records;

	if (!t)
		return;
	tail = t->tail;
	h->limit = tail + h->capacity;
	if (head - tail >= wake) {
		__u64 rec = cpu;

		bpf_ringbuf_output(&switch_wakeups, &rec, sizeof(rec), BPF_RB_FORCE_WAKEUP);
		h->wake_at = head + (wake >> 2) + 1;
	} else {
		h->wake_at = tail + wake;
	}
}

/* sched_switch(bool preempt, struct task_struct *prev, struct task_struct *next, ...) */
SEC("tp_btf/sched_switch")
int handle_sched_switch(unsigned long long *ctx)
{
	bool preempt = (bool)ctx[0];
	struct task_struct *prev = (struct task_struct *)ctx[1];
	struct task_struct *next = (struct task_struct *)ctx[2];
	__u32 prev_tid = prev->pid;
	__u32 next_tid = next->pid;
	bool prev_tracked = is_tracked(prev_tid);
	bool next_tracked = is_tracked(next_tid);
	struct ks_switch_head *h;
	struct ks_switch_chunk *chunk;
	struct ks_switch *e;
	void *chunk_map;
	__u32 cpu, key, chunk_no, index, zero = 0;
	__u64 head;

	if (!prev_tracked && !next_tracked)
		return 0;
	cpu = bpf_get_smp_processor_id();
	h = bpf_map_lookup_elem(&switch_head, &cpu);
	if (!h)
		return 0;
	head = h->head;
	/* The tail's line is the one the reader writes: look at it only once the space known to
	 * be free is used up. A stale tail only makes the ring look fuller than it is. */
	if (head >= h->limit) {
		struct ks_switch_tail *t = bpf_map_lookup_elem(&switch_tail, &cpu);

		if (!t) {
			count_lost(KS_LOST_SWITCHES);
			return 0;
		}
		h->limit = t->tail + h->capacity;
		if (head >= h->limit) {
			count_lost(KS_LOST_SWITCHES);
			return 0;
		}
	}
	chunk_no = h->chunk;
	index = h->index;
	key = h->first_key + chunk_no; /* h->chunk is kept below chunks per CPU */
	chunk_map = bpf_map_lookup_elem(&switch_chunks, &key);
	chunk = chunk_map ? bpf_map_lookup_elem(chunk_map, &zero) : NULL;
	/* Only a chunk user space failed to install: count, never drop silently. */
	if (!chunk || index >= KS_SWITCH_CHUNK_RECORDS) {
		count_lost(KS_LOST_SWITCHES);
		return 0;
	}
	e = switch_slot(chunk, index);
	e->hdr.ts = bpf_ktime_get_ns();
	e->hdr.kind = KS_KIND_SWITCH;
	e->hdr.cpu = cpu;
	e->prev_tid = prev_tid;
	e->prev_pid = prev->tgid;
	e->next_tid = next_tid;
	e->next_pid = next->tgid;
	/* Same rule as the tracepoint's prev_state: a preempted task counts as runnable. */
	e->prev_state = preempt ? 0 : task_state(prev);
	copy_comm(e->prev_comm, prev);
	copy_comm(e->next_comm, next);
	e->se_present = 0;
	e->_pad = 0;
	/* The ks_se of an untracked side is left unwritten, not zeroed: se_present tells the
	 * decoder to ignore it, and every record cache line not stored to is one less to fetch.
	 * The chunks only ever hold this program's records: nothing foreign shows through. */
	if (prev_tracked) {
		read_se(&e->prev_se, prev);
		e->se_present |= KS_SWITCH_PREV_SE;
	}
	if (next_tracked) {
		read_se(&e->next_se, next);
		e->se_present |= KS_SWITCH_NEXT_SE;
	}
	if (index + 1 < KS_SWITCH_CHUNK_RECORDS) {
		h->index = index + 1;
	} else {
		h->index = 0;
		h->chunk = (chunk_no + 1) & h->key_mask;
	}
	/* Publish: the reader must see the record before the new head. */
#if defined(__TARGET_ARCH_x86)
	/* x86 keeps stores in program order (TSO) and the JIT emits them as written: only
	 * the compiler must not move the record's stores below this one. */
	asm volatile("" ::: "memory");
	h->head = head + 1;
#else
	/* Elsewhere a fetching atomic is the fully ordered store BPF offers; its result is
	 * used so that clang emits the fetching form (one writer per CPU: it is `head`). */
	if (__sync_fetch_and_add(&h->head, 1) != head)
		count_lost(KS_LOST_SWITCHES);
#endif
	if (head + 1 == h->wake_at)
		wake_reader(h, cpu, head + 1);
	return 0;
}

/* sched_waking(struct task_struct *p): runs in the waker's context. */
SEC("tp_btf/sched_waking")
int handle_sched_waking(unsigned long long *ctx)
{
	struct task_struct *p = (struct task_struct *)ctx[0];
	__u32 tid = p->pid;
	__u32 waker = current_tid();
	struct ks_waker *w;

	if (!is_tracked(tid))
		return 0;
	w = waker_of(p, true);
	if (w) {
		w->tid = waker;
		w->pending = 1;
	}
	return 0;
}

/* sched_wakeup(struct task_struct *p): the task is runnable on its target CPU. */
SEC("tp_btf/sched_wakeup")
int handle_sched_wakeup(unsigned long long *ctx)
{
	struct task_struct *p = (struct task_struct *)ctx[0];
	__u32 tid = p->pid;
	struct ks_wakeup *e;
	struct ks_waker *waker;

	if (!is_tracked(tid))
		return 0;
	e = reserve(sizeof(*e), KS_KIND_WAKEUP);
	if (!e)
		return 0;
	e->tid = tid;
	e->pid = p->tgid;
	e->target_cpu = task_cpu(p);
	/* Remote wakeups complete on the target CPU, where current is not the waker: prefer what
	 * sched_waking saw. */
	waker = waker_of(p, false);
	if (waker && waker->pending) {
		e->waker_tid = waker->tid;
		waker->pending = 0;
	} else {
		e->waker_tid = current_tid();
	}
	submit(e, sizeof(*e));
	return 0;
}

/* sched_migrate_task(struct task_struct *p, int dest_cpu) */
SEC("tp_btf/sched_migrate_task")
int handle_sched_migrate_task(unsigned long long *ctx)
{
	struct task_struct *p = (struct task_struct *)ctx[0];
	__u32 tid = p->pid;
	struct ks_migrate *e;

	if (!is_tracked(tid))
		return 0;
	e = reserve(sizeof(*e), KS_KIND_MIGRATE);
	if (!e)
		return 0;
	e->tid = tid;
	e->pid = p->tgid;
	e->orig_cpu = task_cpu(p);
	e->dest_cpu = (__u32)ctx[1];
	submit(e, sizeof(*e));
	return 0;
}

/* sched_process_exit(struct task_struct *p[, bool group_dead]) */
SEC("tp_btf/sched_process_exit")
int handle_sched_process_exit(unsigned long long *ctx)
{
	struct task_struct *p = (struct task_struct *)ctx[0];
	__u32 tid = p->pid;
	struct ks_task_exit *e;

	if (!is_tracked(tid))
		return 0;
	e = reserve(sizeof(*e), KS_KIND_TASK_EXIT);
	if (!e)
		return 0;
	e->tid = tid;
	e->pid = p->tgid;
	submit(e, sizeof(*e));
	return 0;
}

#include "kvmscope_exit_agg.h"

/* A u32 field of a classic tracepoint record at an offset found in tracefs. */
static __always_inline __u32 record_u32(void *ctx, __u32 off, __u32 absent)
{
	__u32 v = absent;

	if (off != KS_FIELD_ABSENT)
		bpf_probe_read_kernel(&v, sizeof(v), (char *)ctx + off);
	return v;
}

SEC("tracepoint/kvm/kvm_entry")
int handle_kvm_entry(void *ctx)
{
	__u32 tid = current_tid();
	struct ks_kvm_entry *e;

	if (!is_tracked(tid))
		return 0;
	if (exits_aggregated() && !exit_agg_entry(tid, bpf_ktime_get_ns()) && !exits_streamed())
		return 0;
	e = reserve(sizeof(*e), KS_KIND_KVM_ENTRY);
	if (!e)
		return 0;
	e->tid = tid;
	e->vcpu_id = record_u32(ctx, kvm_entry_vcpu_id_off, KS_FIELD_ABSENT);
	submit(e, sizeof(*e));
	return 0;
}

SEC("tracepoint/kvm/kvm_exit")
int handle_kvm_exit(void *ctx)
{
	__u32 tid = current_tid();
	struct ks_kvm_exit *e;

	if (!is_tracked(tid))
		return 0;
	if (exits_aggregated()) {
		exit_agg_exit(tid, record_u32(ctx, kvm_exit_reason_off, 0),
			      record_u32(ctx, kvm_exit_isa_off, 0), bpf_ktime_get_ns());
		if (!exits_streamed())
			return 0;
	}
	e = reserve(sizeof(*e), KS_KIND_KVM_EXIT);
	if (!e)
		return 0;
	e->tid = tid;
	e->vcpu_id = record_u32(ctx, kvm_exit_vcpu_id_off, KS_FIELD_ABSENT);
	e->reason = record_u32(ctx, kvm_exit_reason_off, 0);
	e->isa = record_u32(ctx, kvm_exit_isa_off, 0);
	submit(e, sizeof(*e));
	return 0;
}

SEC("tracepoint/kvm/kvm_userspace_exit")
int handle_kvm_userspace_exit(void *ctx)
{
	__u32 tid = current_tid();
	struct ks_userspace_exit *e;

	if (!is_tracked(tid))
		return 0;
	if (exits_aggregated())
		exit_agg_userspace_exit(tid);
	e = reserve(sizeof(*e), KS_KIND_USERSPACE_EXIT);
	if (!e)
		return 0;
	e->tid = tid;
	e->reason = record_u32(ctx, kvm_uexit_reason_off, 0);
	e->err = (__s32)record_u32(ctx, kvm_uexit_errno_off, 0);
	e->_pad = 0;
	submit(e, sizeof(*e));
	return 0;
}

SEC("tracepoint/kvm/kvm_pio")
int handle_kvm_pio(void *ctx)
{
	__u32 tid = current_tid();
	struct ks_pio *e;

	if (!is_tracked(tid))
		return 0;
	if (exits_aggregated()) {
		exit_agg_pio(tid, record_u32(ctx, kvm_pio_port_off, 0),
			     record_u32(ctx, kvm_pio_rw_off, 0));
		if (!exits_streamed())
			return 0;
	}
	e = reserve(sizeof(*e), KS_KIND_PIO);
	if (!e)
		return 0;
	e->tid = tid;
	e->rw = record_u32(ctx, kvm_pio_rw_off, 0);
	e->port = record_u32(ctx, kvm_pio_port_off, 0);
	e->size = record_u32(ctx, kvm_pio_size_off, 0);
	e->val = record_u32(ctx, kvm_pio_val_off, 0);
	e->_pad = 0;
	submit(e, sizeof(*e));
	return 0;
}

/* Cross-call records never wake the reader: the next record of another program that crosses
 * a multiple of wakeup_bytes does, or the reader's poll timeout. A forced wakeup queues an
 * irq_work, whose self-IPI comes at once where csd_queue_cpu runs with interrupts on
 * (smp_call_function_single/_many: KVM's VMCLEAR, TLB shootdowns as a VMM unmaps its guests);
 * the irq_work wakes the reader, and a wakeup of a task on an idle CPU goes through that
 * CPU's wake list, that is through csd_queue_cpu again, nested in this program on this CPU:
 * the kernel skips that run (recursion_misses), which kvmscope must count as lost. Seen on
 * sid under TCG (issue #15): one csd_queue_cpu run skipped in about one close in forty. */
static __always_inline void emit_csd(__u32 phase, __u64 func, __u64 csd, __u32 target_cpu)
{
	struct ks_csd *e = reserve(sizeof(*e), KS_KIND_CSD);

	if (!e)
		return;
	e->func = func;
	e->csd = csd;
	e->phase = phase;
	e->target_cpu = target_cpu == KS_FIELD_ABSENT ? e->hdr.cpu : target_cpu;
	e->tid = current_tid();
	e->_pad = 0;
	bpf_ringbuf_submit(e, BPF_RB_NO_WAKEUP);
}

/* The verifier refuses direct ctx loads of function-pointer arguments of tp_btf programs
 * ("type FUNC_PROTO is not a struct"); only the address is wanted, so copy the slot. */
static __always_inline __u64 func_arg(unsigned long long *ctx, int n)
{
	__u64 func = 0;

	bpf_probe_read_kernel(&func, sizeof(func), &ctx[n]);
	return func;
}

/* x86-64's THREAD_SIZE: 16 KiB, 32 KiB on a KASAN kernel (user space sets it from the
 * kernel's BTF). Too small a value would take every task-context frame for an interrupt's and
 * send no cross-call at all. */
const volatile __u64 ks_thread_size = 16 << 10;

/* Whether the tracepoint fired for the current task's own work, not in an interrupt that came
 * while it ran: `ctx` is the tracepoint's argument array, on the stack the tracepoint was
 * called on, which is the task's own in task context and the CPU's interrupt stack in a
 * hardirq or in the softirqs run on its way out (an NMI's: its own stack). */
static __always_inline bool in_task_context(unsigned long long *ctx)
{
	struct task_struct *task = bpf_get_current_task_btf();
	void *args = ctx;
	__u64 at = 0;

	/* The verifier keeps ctx a pointer it will not compare; copied, its bytes are a number. */
	bpf_probe_read_kernel(&at, sizeof(at), &args);
	return at - (__u64)task->stack < ks_thread_size;
}

/* csd_queue_cpu(unsigned int cpu, unsigned long callsite, smp_call_func_t func,
 *               call_single_data_t *csd): runs on the CPU asking for the call.
 * Only a tracked thread's own cross-calls (task context: KVM's VMCLEAR, its TLB shootdowns
 * and wakeups) are sent; one an interrupt queues while the thread runs is not the thread's.
 * That rule also makes every run the kernel skips here harmless: this program runs with
 * preemption off, so only an interrupt can fire csd_queue_cpu again on its CPU while it runs,
 * and the kernel skips that nested run (recursion_misses), a run this program would have
 * ignored. So its skipped runs are not lost events (probes/src/loader/lost.rs). */
SEC("tp_btf/csd_queue_cpu")
int handle_csd_queue_cpu(unsigned long long *ctx)
{
	__u64 csd = ctx[3];
	__u32 one = 1;

	if (!is_tracked(current_tid()) || !in_task_context(ctx))
		return 0;
	bpf_map_update_elem(&pending_csd, &csd, &one, BPF_ANY);
	emit_csd(KS_CSD_QUEUE, func_arg(ctx, 2), csd, (__u32)ctx[0]);
	return 0;
}

/* csd_function_entry(smp_call_func_t func, call_single_data_t *csd): on the target CPU. */
SEC("tp_btf/csd_function_entry")
int handle_csd_function_entry(unsigned long long *ctx)
{
	__u64 csd = ctx[1];

	if (!bpf_map_lookup_elem(&pending_csd, &csd))
		return 0;
	emit_csd(KS_CSD_ENTRY, func_arg(ctx, 0), csd, KS_FIELD_ABSENT);
	return 0;
}

SEC("tp_btf/csd_function_exit")
int handle_csd_function_exit(unsigned long long *ctx)
{
	__u64 csd = ctx[1];

	if (!bpf_map_lookup_elem(&pending_csd, &csd))
		return 0;
	bpf_map_delete_elem(&pending_csd, &csd);
	emit_csd(KS_CSD_EXIT, func_arg(ctx, 0), csd, KS_FIELD_ABSENT);
	return 0;
}
