#!/usr/bin/env bash
# Bytes per event and recorder CPU: `kvmscope record --demo` against `perf record` of the same
# workload in the same run. Not a test: it prints figures.
#
# The demo VMM runs inside the kvmscope process, so perf attaches to that process (-p) and
# both record the same threads over the same interval. Recorder CPU time: perf's whole
# process; for kvmscope every thread except the vCPU threads (vmN-vcpuM), sampled from
# /proc every 0.2 s. Kernel-side tracepoint cost lands on the traced threads in both cases.
#
# Usage (root): export/benches/record_vs_perf.sh [SECONDS]   (default 8)
set -euo pipefail

secs=${1:-8}
root=$(cd "$(dirname "$0")/../.." && pwd)
bin="$root/target/release/kvmscope"
if [ ! -x "$bin" ] || [ -n "${REBUILD:-}" ]; then
    (cd "$root" && cargo build --release --bin kvmscope >&2)
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
hz=$(getconf CLK_TCK)

"$bin" record --demo --duration "$secs" --force -o "$work/demo.trace" 2>"$work/record.err" &
rec=$!
# Wait for the demo's vCPU threads, then attach perf to the same process.
for _ in $(seq 50); do
    cat /proc/$rec/task/*/comm 2>/dev/null | grep -q vcpu && break
    sleep 0.1
done
( TIMEFORMAT='%U %S'; { time perf record -q -e sched:sched_switch -e 'kvm:*' -p "$rec" \
    -o "$work/perf.data" 2>/dev/null; } 2>"$work/perf.time" ) &
perfjob=$!

declare -A cpu
while kill -0 "$rec" 2>/dev/null; do
    for stat in /proc/$rec/task/*/stat; do
        line=$(cat "$stat" 2>/dev/null) || continue
        tid=${stat#/proc/$rec/task/}; tid=${tid%/stat}
        comm=$(cat "/proc/$rec/task/$tid/comm" 2>/dev/null || echo gone)
        case "$comm" in vm*-vcpu*) continue ;; esac
        rest=${line##*) }
        read -r -a f <<<"$rest"
        cpu[$tid]=$(( f[11] + f[12] ))   # utime + stime, in ticks
    done
    sleep 0.2
done
wait "$rec" || true
wait "$perfjob" || true

ks_ticks=0
for t in "${!cpu[@]}"; do ks_ticks=$(( ks_ticks + cpu[$t] )); done
ks_events=$(sed -n 's/^recorded \([0-9]*\) events.*/\1/p' "$work/record.err")
ks_bytes=$(stat -c %s "$work/demo.trace")
perf_events=$(perf report -i "$work/perf.data" --stats 2>/dev/null | awk '/SAMPLE events/ {print $3; exit}')
perf_bytes=$(stat -c %s "$work/perf.data")
read -r pu ps < "$work/perf.time"

python3 - "$ks_events" "$ks_bytes" "$ks_ticks" "$hz" "$perf_events" "$perf_bytes" "$pu" "$ps" "$secs" <<'PY'
import sys
ke, kb, kt, hz, pe, pb, pu, ps, secs = sys.argv[1:]
ke, kb, kt, hz, pe, pb = int(ke), int(kb), int(kt), int(hz), int(pe or 0), int(pb)
k_cpu = kt / hz
p_cpu = float(pu) + float(ps)
kbe = kb / ke
pbe = pb / pe if pe else float("nan")
print(f"workload: kvmscope record --demo --duration {secs}; perf record -e sched:sched_switch -e 'kvm:*' -p <same pid>")
# CPU per million events: seconds per event * 1e6 events, shown in seconds.
print(f"kvmscope: {ke} events, {kb} bytes, {kbe:.2f} bytes/event, recorder CPU {k_cpu*1e3:.0f} ms"
      f" = {k_cpu/ke*1e6:.1f} s per million events")
print(f"perf:     {pe} events, {pb} bytes, {pbe:.2f} bytes/event, perf CPU {p_cpu*1e3:.0f} ms"
      + (f" = {p_cpu/pe*1e6:.1f} s per million events" if pe else ""))
print(f"bytes/event ratio kvmscope/perf: {kbe/pbe:.3f} (goal <= 0.1)")
PY
