/* lab-port-e9: the results port of the Bochs lane. Bochs's "port_e9_hack" hands every byte
 * written to I/O port 0xE9 to its own stdout as the OUT instruction executes: no UART, no
 * FIFO, no interrupt, no tty buffer to drain or discard at close. The emulated COM2 lost the
 * end of a step's output in 2 of 7 boots (issue #19); this path has nothing that can drop.
 *
 * Usage: lab-port-e9 probe   exit 0 if the emulator answers on 0xE9 (reads back 0xE9, the
 *                            hack's convention; QEMU and real machines read 0xFF)
 *        lab-port-e9         copy stdin to port 0xE9, byte by byte
 */
#include <stdio.h>
#include <string.h>
#include <sys/io.h>
#include <unistd.h>

#define PORT 0xE9

int main(int argc, char **argv)
{
	if (ioperm(PORT, 1, 1) != 0) {
		perror("lab-port-e9: ioperm");
		return 2;
	}
	if (argc > 1 && strcmp(argv[1], "probe") == 0)
		return inb(PORT) == PORT ? 0 : 1;
	unsigned char buf[4096];
	ssize_t n;
	while ((n = read(0, buf, sizeof buf)) > 0)
		for (ssize_t i = 0; i < n; i++)
			outb(buf[i], PORT);
	if (n < 0) {
		perror("lab-port-e9: read");
		return 1;
	}
	return 0;
}
