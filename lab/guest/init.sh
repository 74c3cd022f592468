#!/bin/sh
# The lab's generic /init (busybox sh): mount the kernel filesystems, load the modules named
# in /lib/modules/order, run the suite /lab/suite.sh, power off. The suite reports through
# lab_step/lab_emit (protocol: lab/src/results.rs) on the results port: I/O port 0xE9 under
# Bochs (lab/src/bochs.rs), else the second serial port when the emulator has one, else the
# console.
#
# Kernel command-line words the kernel does not know reach us as variables:
#   LAB_MODPARAMS="kvm_amd:nested=0 kvm:foo=1"   parameters for insmod, per module
/bin/busybox --install -s /bin
export PATH=/bin:/sbin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
mount -t bpf bpf /sys/fs/bpf 2>/dev/null
ulimit -l unlimited 2>/dev/null

LAB_OUT=/dev/console
if [ -x /bin/lab-port-e9 ] && /bin/lab-port-e9 probe; then
	LAB_OUT=port-e9
# A second 16550 answers with a real UART type; an absent one reads "unknown".
elif [ -c /dev/ttyS1 ] && ! grep -q '^1: uart:unknown' /proc/tty/driver/serial 2>/dev/null; then
	LAB_OUT=/dev/ttyS1
	stty -F /dev/ttyS1 raw -echo 115200 2>/dev/null
fi

lab_ms() { awk '{ printf "%d", $1 * 1000 }' /proc/uptime; }

# lab_step NAME SECONDS CMD...: run CMD with a time limit; send its stdout, stderr and status.
lab_step() { lab_run "" "$@"; }
# lab_step_gz NAME SECONDS CMD...: lab_step for large output, sent gzip'd and base64'd.
lab_step_gz() { lab_run gzip+base64 "$@"; }

lab_run() {
	lab_enc=$1 lab_name=$2 lab_limit=$3
	shift 3
	lab_t0=$(lab_ms)
	timeout "$lab_limit" "$@" > /tmp/lab.raw 2> /tmp/lab.err
	lab_rc=$?
	if [ -n "$lab_enc" ]; then
		gzip -1 -c /tmp/lab.raw | base64 > /tmp/lab.out
	else
		mv /tmp/lab.raw /tmp/lab.out
	fi
	rm -f /tmp/lab.raw
	LAB_ENCODING=$lab_enc lab_send "$lab_name" "$lab_rc" "$lab_t0" /tmp/lab.out /tmp/lab.err
	return $lab_rc
}

# lab_emit NAME FILE [RC]: send a file as a step of its own.
lab_emit() {
	lab_send "$1" "${3:-0}" "$(lab_ms)" "$2" /dev/null
}

# lab_send NAME RC T0_MS STDOUT_FILE STDERR_FILE: one step on the results port.
lab_send() {
	if [ "$LAB_OUT" = port-e9 ]; then
		lab_frame "$@" | /bin/lab-port-e9
	else
		lab_frame "$@" > "$LAB_OUT"
	fi
	echo "lab: step $1 rc=$2" > /dev/console
}

lab_frame() {
	echo "@@lab begin $1 ${LAB_ENCODING:-}"
	cat "$4"
	echo "@@lab stderr $1"
	cat "$5"
	echo "@@lab end $1 rc=$2 ms=$(($(lab_ms) - $3))"
}

# Modules, in the order the host resolved from .modinfo depends=.
t0=$(lab_ms)
: > /tmp/lab.modules
mods_rc=0
for m in $(cat /lib/modules/order 2>/dev/null); do
	params=""
	for p in $LAB_MODPARAMS; do
		case "$p" in "$m":*) params="$params ${p#*:}" ;; esac
	done
	# shellcheck disable=SC2086 # params are words
	if insmod "/lib/modules/$m.ko" $params >> /tmp/lab.modules 2>&1; then
		echo "$m loaded $params" >> /tmp/lab.modules
	else
		echo "$m FAILED" >> /tmp/lab.modules
		mods_rc=1
	fi
done
{
	echo "release $(uname -r)"
	cat /tmp/lab.modules
	for p in /sys/module/kvm_amd/parameters/* /sys/module/kvm_intel/parameters/*; do
		[ -f "$p" ] && echo "param ${p#/sys/module/} $(cat "$p")"
	done
	ls -l /dev/kvm 2>&1
} > /tmp/lab.modinfo
lab_send modules "$mods_rc" "$t0" /tmp/lab.modinfo /dev/null

if [ -f /lab/suite.sh ]; then
	. /lab/suite.sh
fi
if [ "$LAB_OUT" = port-e9 ]; then
	echo "@@lab done" | /bin/lab-port-e9
else
	echo "@@lab done" > "$LAB_OUT"
fi
sync
poweroff -f
