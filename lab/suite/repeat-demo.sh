# The kernel against itself (issue #16): the demo's VMs without affinity rotation recorded
# LAB_ROUNDS times (8 by default) in one boot, 10 s each, as svm.sh's LAB_RECORD_DEMO records
# them once. Each round sends `demo.record.N` (record --json) and `demo.kvms.N` (the
# recording, base64'd). Run by `cargo run -p lab --example repeat` (lab/README.md), which
# replays each round and compares the rounds (simulate/VALIDATION.md).
K=/bin/kvmscope
ROUNDS=${LAB_ROUNDS:-8}
round=1
while [ "$round" -le "$ROUNDS" ]; do
	# A failed round must not send the previous round's file.
	rm -f /tmp/demo.kvms
	lab_step "demo.record.$round" 300 $K record --demo --scenario /lab/demo-fixed-affinity.toml \
		--duration 10 -o /tmp/demo.kvms --force --json
	base64 /tmp/demo.kvms > /tmp/demo.kvms.b64
	lab_emit "demo.kvms.$round" /tmp/demo.kvms.b64 $?
	round=$((round + 1))
done
