#!/usr/bin/env bash
# Installs what building and testing kvmscope needs on a Debian 12 machine, and mounts the
# kernel filesystems the probes read. Idempotent: a second run changes nothing.
# Run as root (BPF and /dev/kvm need it anyway).
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
    echo "setup.sh: run as root (it installs packages and mounts tracefs/bpffs)" >&2
    exit 1
fi

# clang-19 + libbpf-dev: the eBPF C programs (probes/build.rs); bpftool: BTF inspection;
# qemu-system-x86: the QEMU tests; tmux: the dashboard's end-to-end test; util-linux:
# setpriv for the not-root tests; linux-perf + bpftrace: the benchmarks' baselines;
# gcc + libc6-dev (static tinyvmm), xz-utils + zstd (kernel modules), binutils (strip): the
# kernel matrix (lab/), which fetches its kernels itself into /var/cache/kvmscope-lab;
# prometheus (2.42, with promtool): the exporter's real-Prometheus test and its rule tests
# (on a host with systemd its postinst also starts a Prometheus on :9090; tests use other ports).
packages=(clang-19 llvm-19 libbpf-dev bpftool qemu-system-x86 tmux util-linux procps linux-perf bpftrace
    gcc libc6-dev xz-utils zstd binutils prometheus)
# bochs (+ its BIOS images) and isolinux/syslinux-common/xorriso: the Bochs VT-x lane
# (lab/bochs), which boots the lab's kernels from a CD image on an emulated Intel CPU.
packages+=(bochs bochsbios vgabios isolinux syslinux-common xorriso)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup.sh: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
    echo "setup.sh: no cargo on PATH: install Rust (https://rustup.rs) first" >&2
    exit 1
fi
if ! cargo nextest --version >/dev/null 2>&1; then
    echo "setup.sh: installing cargo-nextest"
    cargo install --locked cargo-nextest
fi

mountpoint -q /sys/kernel/tracing || mount -t tracefs nodev /sys/kernel/tracing
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
echo "setup.sh: ready"
