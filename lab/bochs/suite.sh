# kvmscope's suite on an Intel VT-x kernel under Bochs (sourced by the lab's /init after it
# loaded kvm_intel; see lab/README.md). tests/priv_bochs.rs asserts what comes back.
#
# Each BPF load costs minutes of emulated time here, so there is exactly one: `record`, with
# the kernel's own csd:* events in tracefs over the same run as the oracle. `report` and
# `export` run on the host from the trace file, which comes back as base64 text.
K=/bin/kvmscope
T=/sys/kernel/tracing

# One VM with two vCPUs whose affinities rotate every 50 ms: each time a vCPU thread is
# loaded on the other CPU, kvm_intel VMCLEARs its VMCS on the old one by IPI
# (__loaded_vmcs_clear). `exits` makes port-I/O exits to count against the VMM's own
# counters. The spinning vCPU leaves its guest only on host interrupts: under Bochs it would
# stop the guest kernel if the VMM entered guests with IF=0.
cat > /tmp/vmclear.toml <<'TOML'
migrate_every_ms = 50
[[vm]]
name = "mig"
vcpus = 2
workload = "exits"
exit_every = 1000
[[vm]]
name = "spin"
vcpus = 1
workload = "spin"
TOML

lab_step cpu 60 sh -c "grep -m1 'model name' /proc/cpuinfo; grep -c ^processor /proc/cpuinfo; grep -m1 -o -w vmx /proc/cpuinfo"
lab_step check 600 $K check --json

# tracefs on the clock kvmscope stamps events with (CLOCK_MONOTONIC).
echo 0 > $T/tracing_on
echo > $T/trace
echo mono > $T/trace_clock
echo 4096 > $T/buffer_size_kb
if [ -d $T/events/csd ]; then
	for e in csd_queue_cpu csd_function_entry csd_function_exit; do
		echo 1 > $T/events/csd/$e/enable
	done
fi
echo 1 > $T/tracing_on
# Where emulated time goes (diagnostics, on the console as they happen).
(
	while sleep 3; do
		p=$(pidof kvmscope)
		[ -n "$p" ] || continue
		echo "sample $(cut -d' ' -f1 /proc/uptime) $(cat /proc/loadavg)"
		for t in /proc/$p/task/*; do
			echo "  $(cut -d' ' -f2,3,14,15 $t/stat) $(cat $t/wchan)"
			# A blocked thread's kernel stack says which call waits.
			grep -q '^State:.*D' $t/status && sed 's/^/    /' $t/stack
		done
	done > /dev/console 2>&1
) &
lab_sampler=$!
lab_step record 1800 $K record --demo --scenario /tmp/vmclear.toml --duration 4 -o /tmp/run.trace --json
kill $lab_sampler
echo 0 > $T/tracing_on
lab_step trace 600 base64 /tmp/run.trace
lab_step_gz tracefs-csd 600 grep -E 'csd_(queue_cpu|function_entry|function_exit):' $T/trace
lab_step tracefs-stats 60 sh -c "grep -H -E '^(overrun|dropped events):' $T/per_cpu/cpu*/stats"

# Last: with IF=0 guests this hung the guest kernel under Bochs.
lab_step spin 600 $K vmm --vms 1 --vcpus 2 --workload spin --duration 2 --json
