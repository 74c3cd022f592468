# kvmscope's suite on an AMD-V kernel (sourced by the lab's /init; see lab/README.md). Every
# step's output goes back to the host, where tests/priv_kernels.rs asserts it. Lean on
# purpose: the emulator runs a debug kvmscope some 20-50 times slower than the host.
K=/bin/kvmscope

# The scenario of the steps below: /lab/exits.toml (lab/suite/exits.toml).

lab_step check 120 $K check --json
# Program run times for the BPF cost per exit of each --exits mode (#15 goal 2).
echo 1 > /proc/sys/kernel/bpf_stats_enabled
lab_step_gz trace 300 $K trace --demo --scenario /lab/exits.toml --duration 3 --format jsonl
# Exits aggregated in the kernel and streamed, in the same run: the counts must be equal.
lab_step_gz trace.both 300 $K trace --demo --scenario /lab/exits.toml --duration 3 --format jsonl --exits both
lab_step_gz trace.agg 300 $K trace --demo --scenario /lab/exits.toml --duration 3 --format jsonl --exits aggregate
echo 0 > /proc/sys/kernel/bpf_stats_enabled
lab_step report 300 $K report --demo --scenario /lab/exits.toml --duration 3 --json
# The default demo (3 VMs, 6 vCPUs, 4 of them spinning): it soft-locked 6.12 under nested SVM
# before the VMM entered its guests with IF=1.
lab_step demo 300 $K report --demo --duration 3 --json

# --all-kvm over two KVM users that are not its own: kvmscope's VMM as a separate process and
# tinyvmm (C). --all-kvm wants a KVM user at its start: tinyvmm's vCPU, waiting for a go line.
# The tracer starts while the CPUs are free (its BPF load is the slow part under emulation);
# it is ready once it announced tinyvmm's thread (a task_info line).
mkfifo /tmp/tiny.go
tinyvmm 3000 - < /tmp/tiny.go > /tmp/tiny.out 2> /tmp/tiny.err &
tiny=$!
exec 3> /tmp/tiny.go
$K trace --all-kvm --format jsonl > /tmp/a.trace 2> /tmp/a.err &
tracer=$!
for _ in $(seq 900); do
	grep -qs '"type":"task_info"' /tmp/a.trace && break
	sleep 0.1
done
sleep 1
$K vmm --vms 1 --vcpus 2 --workload exits --duration 60 --json > /tmp/a.vmm 2> /tmp/a.vmm.err &
vmm=$!
# The tracer finds the VMM on a rescan (once a second): wait until it announced both vCPU
# threads, or the VMM may be stopped below before it is watched (5.10, loaded host: the
# announcement came 0.3 s after the SIGSTOP, and no switch-out of its vCPUs was traced).
for _ in $(seq 900); do
	[ "$(grep -c '"type":"task_info".*"comm":"vm0-vcpu' /tmp/a.trace)" -ge 2 ] && break
	sleep 0.1
done
t0=$(lab_ms)
echo go >&3
wait $tiny
tiny_rc=$?
exec 3>&-
lab_send tinyvmm $tiny_rc "$t0" /tmp/tiny.out /tmp/tiny.err
# Quiescence: stopped (SIGSTOP), the VMM's threads stand still; each one's /proc sched must
# match what its last switch-out carried. The tracer gets a second to read the last records.
kill -STOP $vmm
sleep 1
for t in /proc/$vmm/task/*; do
	echo "task ${t##*/} $(cat "$t/comm")"
	cat "$t/sched"
done > /tmp/a.sched
sleep 1
kill -INT $tracer
wait $tracer
echo "tracer rc=$?" >> /tmp/a.err
kill -CONT $vmm
kill -INT $vmm
wait $vmm
vmm_rc=$?
lab_emit allkvm.sched /tmp/a.sched
lab_send allkvm.vmm $vmm_rc "$(lab_ms)" /tmp/a.vmm /tmp/a.vmm.err
gzip -1 -c /tmp/a.trace | base64 > /tmp/a.trace.b64
LAB_ENCODING=gzip+base64 lab_send allkvm.trace 0 "$(lab_ms)" /tmp/a.trace.b64 /tmp/a.err

# Issue #16's check of `simulate` (cfs on 6.1, eevdf on 6.12), when the host asks for it
# (LAB_RECORD_DEMO=SECONDS on the kernel command line): the demo's VMs without affinity
# rotation (/lab/demo-fixed-affinity.toml), recorded; the host replays the file.
if [ -n "${LAB_RECORD_DEMO:-}" ]; then
	lab_step demo.record 300 $K record --demo --scenario /lab/demo-fixed-affinity.toml \
		--duration "$LAB_RECORD_DEMO" -o /tmp/demo.kvms --json
	base64 /tmp/demo.kvms > /tmp/demo.kvms.b64
	lab_emit demo.kvms /tmp/demo.kvms.b64
fi
