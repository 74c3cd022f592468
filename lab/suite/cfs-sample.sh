# The CFS kernel's own view beside the demo recording (issue #16: why the kernel keeps its
# batch vCPUs where they are). Run by hand, one boot (lab/README.md):
#   cargo run -p lab --example boot -- 6.1 lab/suite/cfs-sample.sh DIR target/debug/kvmscope
# Steps sent back: `sched.env` (the fair class's tunables and the MC domain's parameters),
# `demo.record` and `demo.kvms` (as svm.sh's LAB_RECORD_DEMO records them: the demo's VMs
# without affinity rotation, /lab/demo-fixed-affinity.toml, which the boot example ships; 10 s,
# base64), and `sched.samples` (gzip+base64): every
# LAB_SAMPLE_EVERY seconds (0.1 by default; the reads cost the emulated guest CPU time, which
# the recording then shows as other tasks' load) a line `@@sample`, the scheduler debug file
# (`ktime` is CLOCK_MONOTONIC in ms, the recording's clock; each pCPU's root `cfs_rq` with
# `load_avg`, `runnable_avg`, `util_avg`, `nr_running`; each task on the pCPU with `>R`
# running, `R` queued), `/proc/schedstat` (per domain and idle type: lb_count, lb_balanced,
# lb_failed, lb_imbalance, lb_gained, ...; schedstats are switched on first) and the
# recorder's threads' `/proc/PID/task/TID/sched` (the vCPUs' `se.avg.load_avg`: the load the
# balancer moves). Not every task's: a sleeping task's own figures are only brought up to
# date when it next runs, and reading them all (with grep) took seconds a sample under TCG.
# One read of the debug file takes the emulated guest ~100 ms, so samples come ~300 ms apart.
K=/bin/kvmscope
every=${LAB_SAMPLE_EVERY:-0.1}
echo 1 > /proc/sys/kernel/sched_schedstats
{
	for f in /proc/sys/kernel/sched_autogroup_enabled /sys/kernel/debug/sched/*_ns \
		/sys/kernel/debug/sched/domains/cpu0/domain0/*; do
		echo "$f $(cat "$f")"
	done
} > /tmp/sched.env 2>&1
lab_emit sched.env /tmp/sched.env
$K record --demo --scenario /lab/demo-fixed-affinity.toml --duration 10 -o /tmp/demo.kvms --json \
	> /tmp/rec.json 2> /tmp/rec.err &
rec=$!
(
	while kill -0 $rec 2>/dev/null; do
		echo "@@sample"
		cat /sys/kernel/debug/sched/debug /proc/schedstat /proc/$rec/task/*/sched 2>/dev/null
		sleep "$every"
	done
) > /tmp/samples &
sampler=$!
t0=$(lab_ms)
wait $rec
rc=$?
wait $sampler
lab_send demo.record $rc "$t0" /tmp/rec.json /tmp/rec.err
base64 /tmp/demo.kvms > /tmp/demo.kvms.b64
lab_emit demo.kvms /tmp/demo.kvms.b64
gzip -1 -c /tmp/samples | base64 > /tmp/samples.b64
LAB_ENCODING=gzip+base64 lab_send sched.samples 0 "$(lab_ms)" /tmp/samples.b64 /dev/null
