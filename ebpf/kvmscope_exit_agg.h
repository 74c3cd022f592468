/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * In-kernel exit aggregation (issue #15 goal 2), included by kvmscope.bpf.c: with
 * KS_EXITS_AGGREGATE in `exit_mode`, kvm_exit counts into `exit_aggs` (per vCPU thread, reason
 * and isa) instead of sending a record, and kvm_entry adds the exit's handling time (exit ->
 * this entry) to that key's log2 histogram. User space reads the maps periodically.
 *
 * kvm_entry still sends a record where the model needs it, so that its other figures stay
 * exact without every entry: the first entry after a switch-in (resume latency, same or
 * migrated pCPU, is the model's rule over the switch it already has) and the entry after a
 * userspace exit (that exit's handling time, which the model closes itself). A switch-in is
 * seen as a change of the thread's own switch-out counters (nvcsw + nivcsw) since its last
 * entry, so sched_switch carries nothing extra.
 *
 * kvm_pio is counted into `pio_aggs` (per vCPU thread, port and direction) and not sent: the
 * model needs a port I/O exit only as a count. kvm_userspace_exit is still sent: it starts the
 * thread's "in VMM" state, which the views show per event.
 */
#ifndef KVMSCOPE_EXIT_AGG_H
#define KVMSCOPE_EXIT_AGG_H

/* KS_EXITS_* bits, set by user space before load (ProbeOptions::exits). */
const volatile __u32 exit_mode = KS_EXITS_STREAM;

/* Per CPU, so counting needs no atomics; the reader sums the CPUs. An exit whose key finds
 * the map full is counted in `lost`, like a record that finds the ring full. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct ks_exit_key);
	__type(value, struct ks_exit_agg);
} exit_aggs SEC(".maps");

/* Per CPU like exit_aggs; a port I/O exit whose key finds the map full is counted in `lost`
 * under the same cause. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct ks_pio_key);
	__type(value, __u64);
} pio_aggs SEC(".maps");

/* One per tracked vCPU thread that entered or exited its guest; written only by that thread
 * (so never by two CPUs at once) and deleted by user space when it untracks the thread. */
struct ks_exit_open {
	__u64 exit_ts; /* the exit waiting for its entry, 0 if none */
	__u64 switches; /* nvcsw + nivcsw at the last entry */
	struct ks_exit_key key; /* of that exit */
	__u32 entered; /* an entry was seen (switches is valid) */
	__u32 send_next_entry; /* a streamed userspace exit waits for its entry */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct ks_exit_open);
} exit_open SEC(".maps");

static __always_inline bool exits_streamed(void)
{
	return exit_mode & KS_EXITS_STREAM;
}

static __always_inline bool exits_aggregated(void)
{
	return exit_mode & KS_EXITS_AGGREGATE;
}

/* floor(log2(ns)) clamped to the last bucket, without a loop (old verifiers). */
static __always_inline __u64 exit_hist_bucket(__u64 ns)
{
	__u64 b = 0;

	if (ns >> 32) {
		ns >>= 32;
		b += 32;
	}
	if (ns >> 16) {
		ns >>= 16;
		b += 16;
	}
	if (ns >> 8) {
		ns >>= 8;
		b += 8;
	}
	if (ns >> 4) {
		ns >>= 4;
		b += 4;
	}
	if (ns >> 2) {
		ns >>= 2;
		b += 2;
	}
	if (ns >> 1)
		b += 1;
	/* Bounded on the register the address is computed from: see switch_slot(). */
	asm volatile("if %[b] < %[n] goto +1\n\t"
		     "%[b] = %[last]"
		     : [b] "+r"(b)
		     : [n] "i"(KS_EXIT_HIST_BUCKETS), [last] "i"(KS_EXIT_HIST_BUCKETS - 1));
	return b;
}

static __always_inline struct ks_exit_agg *exit_agg_of(struct ks_exit_key *key)
{
	struct ks_exit_agg *a = bpf_map_lookup_elem(&exit_aggs, key);
	struct ks_exit_agg fresh = {};

	if (a)
		return a;
	bpf_map_update_elem(&exit_aggs, key, &fresh, BPF_NOEXIST);
	return bpf_map_lookup_elem(&exit_aggs, key);
}

static __always_inline struct ks_exit_open *exit_open_of(__u32 tid)
{
	struct ks_exit_open *o = bpf_map_lookup_elem(&exit_open, &tid);
	struct ks_exit_open fresh = {};

	if (o)
		return o;
	bpf_map_update_elem(&exit_open, &tid, &fresh, BPF_NOEXIST);
	return bpf_map_lookup_elem(&exit_open, &tid);
}

/* A tracked thread's kvm_exit at `now`. */
static __always_inline void exit_agg_exit(__u32 tid, __u32 reason, __u32 isa, __u64 now)
{
	struct ks_exit_key key = { .tid = tid, .reason = reason, .isa = isa, ._pad = 0 };
	struct ks_exit_agg *a = exit_agg_of(&key);
	struct ks_exit_open *o;

	if (!a) {
		count_lost(KS_LOST_EXIT_AGGS);
		return;
	}
	a->count += 1;
	o = exit_open_of(tid);
	if (o) {
		o->exit_ts = now;
		o->key = key;
	}
}

/* A tracked thread's kvm_pio. */
static __always_inline void exit_agg_pio(__u32 tid, __u32 port, __u32 rw)
{
	struct ks_pio_key key = { .tid = tid, .port = port, .rw = rw };
	__u64 zero = 0;
	__u64 *n = bpf_map_lookup_elem(&pio_aggs, &key);

	if (!n) {
		bpf_map_update_elem(&pio_aggs, &key, &zero, BPF_NOEXIST);
		n = bpf_map_lookup_elem(&pio_aggs, &key);
	}
	if (!n) {
		count_lost(KS_LOST_EXIT_AGGS);
		return;
	}
	*n += 1;
}

/* A tracked thread's kvm_userspace_exit (streamed): its handling time is the model's, so the
 * kvm_exit before it gets none here and the next entry is sent. */
static __always_inline void exit_agg_userspace_exit(__u32 tid)
{
	struct ks_exit_open *o = exit_open_of(tid);

	if (o) {
		o->exit_ts = 0;
		o->send_next_entry = 1;
	}
}

/* A tracked thread's kvm_entry at `now`: closes its open exit. Returns whether the entry
 * must still be sent as a record (see the top of this file). */
static __always_inline bool exit_agg_entry(__u32 tid, __u64 now)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct ks_exit_open *o = exit_open_of(tid);
	struct ks_exit_agg *a;
	__u64 switches;
	bool send;

	if (!o)
		return true;
	switches = BPF_CORE_READ(task, nvcsw) + BPF_CORE_READ(task, nivcsw);
	send = !o->entered || o->switches != switches || o->send_next_entry;
	o->entered = 1;
	o->switches = switches;
	o->send_next_entry = 0;
	if (o->exit_ts) {
		a = exit_agg_of(&o->key);
		if (a)
			a->hist[exit_hist_bucket(now - o->exit_ts)] += 1;
		o->exit_ts = 0;
	}
	return send;
}

#endif /* KVMSCOPE_EXIT_AGG_H */
