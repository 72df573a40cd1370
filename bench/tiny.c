/* tiny: the smallest program that exits 0, for bench/burst.c to execve.
 *
 * Build (bench/burst.py does it, into bench/.build/):
 *   gcc -O2 -static -nostartfiles -nostdlib -fno-asynchronous-unwind-tables -s \
 *       -Wl,--build-id=none -Wl,-n -Wl,-z,noexecstack -o tiny tiny.c
 * No libc, no startup code: _start makes the exit_group(0) syscall directly;
 * the result is a 512-byte ELF with a single LOAD segment, so an exec of it
 * costs the kernel's exec path and nothing else.
 */
#if !defined(__x86_64__) && !defined(__aarch64__)
#error "tiny.c: only x86_64 and aarch64 are supported"
#endif

void _start(void) __attribute__((noreturn, used));

void _start(void)
{
#if defined(__x86_64__)
	__asm__ volatile("mov $231, %eax\n\t" /* SYS_exit_group */
			 "xor %edi, %edi\n\t"
			 "syscall");
#else
	__asm__ volatile("mov x8, #94\n\t" /* SYS_exit_group */
			 "mov x0, #0\n\t"
			 "svc #0");
#endif
	__builtin_unreachable();
}
