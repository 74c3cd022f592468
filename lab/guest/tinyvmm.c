/* tinyvmm: a KVM user that is not kvmscope, for the suites' `--all-kvm` step.
 *
 * One VM, one vCPU in real mode. The guest writes an incrementing byte to port 0x42 OUTS
 * times, then halts; the VMM checks every value and prints one JSON line with its own
 * counters, which the host compares with the kvm_exit/kvm_userspace_exit events kvmscope
 * decoded for this thread.
 *
 * Usage: tinyvmm OUTS [WAIT_MS | -]   (pause after creating the vCPU, so that a tracer
 * rescanning for vCPU descriptors finds this thread before the first KVM_RUN: WAIT_MS, or
 * until a line arrives on stdin with `-`; `--all-kvm` needs a KVM user to start at all)
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define GUEST_MEM 0x4000
#define CODE_AT 0x1000
#define PORT 0x42

static int die(const char *what)
{
	fprintf(stderr, "tinyvmm: %s: %s\n", what, strerror(errno));
	return 1;
}

int main(int argc, char **argv)
{
	long outs = argc > 1 ? atol(argv[1]) : 1000;
	int wait_stdin = argc > 2 && strcmp(argv[2], "-") == 0;
	long wait_ms = argc > 2 && !wait_stdin ? atol(argv[2]) : 0;
	if (outs < 1 || outs > 65535) {
		fprintf(stderr, "tinyvmm: OUTS must be 1..65535, got %ld\n", outs);
		return 2;
	}
	/* mov al,0; mov cx,OUTS; again: out PORT,al; inc al; dec cx; jnz again; hlt */
	const uint8_t code[] = {
		0xb0, 0x00,
		0xb9, (uint8_t)outs, (uint8_t)(outs >> 8),
		0xe6, PORT,
		0xfe, 0xc0,
		0x49,
		0x75, 0xf9,
		0xf4,
	};
	int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kvm < 0)
		return die("open /dev/kvm");
	int vm = ioctl(kvm, KVM_CREATE_VM, 0);
	if (vm < 0)
		return die("KVM_CREATE_VM");
	uint8_t *mem = mmap(NULL, GUEST_MEM, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED)
		return die("mmap guest memory");
	memcpy(mem + CODE_AT, code, sizeof(code));
	struct kvm_userspace_memory_region slot = {
		.slot = 0,
		.guest_phys_addr = 0,
		.memory_size = GUEST_MEM,
		.userspace_addr = (uintptr_t)mem,
	};
	if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &slot) < 0)
		return die("KVM_SET_USER_MEMORY_REGION");
	int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
	if (vcpu < 0)
		return die("KVM_CREATE_VCPU");
	int run_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (run_size < 0)
		return die("KVM_GET_VCPU_MMAP_SIZE");
	struct kvm_run *run = mmap(NULL, run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
	if (run == MAP_FAILED)
		return die("mmap kvm_run");
	struct kvm_sregs sregs;
	if (ioctl(vcpu, KVM_GET_SREGS, &sregs) < 0)
		return die("KVM_GET_SREGS");
	sregs.cs.base = 0;
	sregs.cs.selector = 0;
	if (ioctl(vcpu, KVM_SET_SREGS, &sregs) < 0)
		return die("KVM_SET_SREGS");
	struct kvm_regs regs = { .rip = CODE_AT, .rflags = 0x2 };
	if (ioctl(vcpu, KVM_SET_REGS, &regs) < 0)
		return die("KVM_SET_REGS");
	if (wait_stdin) {
		char line[16];
		if (!fgets(line, sizeof(line), stdin))
			fprintf(stderr, "tinyvmm: stdin closed before the go line: starting\n");
	} else if (wait_ms > 0) {
		struct timespec pause = { wait_ms / 1000, (wait_ms % 1000) * 1000000L };
		nanosleep(&pause, NULL);
	}

	long runs = 0, io_exits = 0, bad_values = 0, other_exits = 0;
	uint8_t expect = 0;
	for (;;) {
		runs++;
		if (ioctl(vcpu, KVM_RUN, 0) < 0) {
			if (errno == EINTR)
				continue;
			return die("KVM_RUN");
		}
		if (run->exit_reason == KVM_EXIT_IO && run->io.direction == KVM_EXIT_IO_OUT &&
		    run->io.port == PORT && run->io.size == 1) {
			uint8_t value = *((uint8_t *)run + run->io.data_offset);
			bad_values += value != expect;
			expect = value + 1;
			io_exits++;
			continue;
		}
		if (run->exit_reason == KVM_EXIT_HLT)
			break;
		other_exits++;
		fprintf(stderr, "tinyvmm: unexpected exit reason %u\n", run->exit_reason);
		if (other_exits > 10)
			return 3;
	}
	printf("{\"pid\":%d,\"tid\":%ld,\"runs\":%ld,\"io_exits\":%ld,\"bad_values\":%ld,"
	       "\"other_exits\":%ld,\"halted\":true}\n",
	       getpid(), (long)syscall(SYS_gettid), runs, io_exits, bad_values, other_exits);
	return io_exits == outs && bad_values == 0 ? 0 : 4;
}
