# Repeats the closing of a live session many times in one boot, for two builds of kvmscope
# side by side (issue #15: a csd:csd_queue_cpu run skipped while the bundled VMM stopped, about
# one close in forty on sid). Sourced by the lab's /init; run by hand:
#   cargo run -p lab --example boot -- sid lab/suite/closes.sh /tmp/w /tmp/a/kvmscope-A /tmp/b/kvmscope-B
# with executables named kvmscope-ARM (each goes in as /bin/kvmscope-ARM; the example puts the
# suite's .toml files in /lab). Every round closes each arm once per --exits mode, on the
# matrix suite's scenario (/lab/exits.toml), the arms' order alternating from round to round;
# each close is a step `close.ARM.MODE.ROUND` whose stdout is trace's summary line, which
# names any skipped runs ("runs skipped: ..."). With /bin/priv_cross_calls-ARM (the test binary
# of probes/tests/priv_cross_calls.rs built with that arm's probes) each round also runs it
# once, as step `xcalls.ARM.ROUND`: cross-calls to an idle CPU with every other record waking
# the reader, the nesting made likely. LAB_ROUNDS (kernel command line) sets the rounds.
ROUNDS=${LAB_ROUNDS:-8}

arms=$(cd /bin && ls kvmscope-* | sed 's/^kvmscope-//')
# As in the matrix suite's trace steps, where the skips were seen.
echo 1 > /proc/sys/kernel/bpf_stats_enabled
round=1
while [ "$round" -le "$ROUNDS" ]; do
	order=$arms
	[ $((round % 2)) -eq 0 ] && order=$(echo "$arms" | sort -r)
	for arm in $order; do
		if [ -x "/bin/priv_cross_calls-$arm" ]; then
			lab_step "xcalls.$arm.$round" 120 "/bin/priv_cross_calls-$arm" \
				the_cross_call_probe_never_wakes_the_reader_into_itself --exact --nocapture
		fi
		for mode in both aggregate; do
			lab_step "close.$arm.$mode.$round" 300 sh -c \
				"/bin/kvmscope-$arm trace --demo --scenario /lab/exits.toml --duration 3 --format jsonl --exits $mode | tail -n 1"
		done
	done
	round=$((round + 1))
done
echo 0 > /proc/sys/kernel/bpf_stats_enabled
