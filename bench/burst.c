/* burst: a process-creation load generator with exact ground truth.
 *
 *   burst -o PIDFILE [-m exec|fork] [-n N] [-p P] [-t TINY] [-a PREFIX]
 *
 * Forks P worker processes (default 2) that together create N children
 * (default 100000) as fast as they can, each one waited for before the next:
 *
 *   exec  vfork() + execve(TINY) + waitpid()   -> fork, exec, exit events
 *   fork  fork() + _exit(0) + waitpid()        -> fork, exit events
 *
 * In exec mode child i gets argv {"tiny"}, or with -a PREFIX {"tiny",
 * "PREFIX<i>"} (i = 0..N-1, its line in PIDFILE): a distinctive argv lets a
 * benchmark check that a monitor reported the real command line of each
 * exec, not just a non-empty one.
 *
 * The workers start together (a pipe is the starting gun) and store every
 * child's pid and lifetime in shared arrays; when all are done, PIDFILE gets,
 * as text:
 *
 *   # burst mode=exec n=100000 workers=2 elapsed_ns=1234 failures=0
 *   W <worker pid>            (one line per worker: the children's parent)
 *   <pid> <start> <end>       (N lines, each worker's children in order)
 *
 * start/end are CLOCK_MONOTONIC ns (the clock of the kernel's event
 * timestamps) read just before vfork/fork and just after waitpid returned:
 * every event of that child is stamped inside [start, end], except that its
 * exit event may come a little after end (the kernel builds it after waking
 * the parent).  A pid is not handed out again before the kernel's cyclic pid
 * allocator wraps around, so this window names the child unambiguously.
 *
 * A one-line summary goes to stdout.  Exit status 0 only if every child was
 * created and exited with status 0.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_WORKERS 256

/* Worker w owns slots [slice_start(w), slice_start(w + 1)) of each array. */
struct shared {
	long failures[MAX_WORKERS]; /* children that failed or exited non-zero */
	int64_t *start, *end;       /* CLOCK_MONOTONIC ns around each child's life */
	int32_t *pids;              /* child pids, 0 if the fork failed */
};

static void die(const char *what)
{
	fprintf(stderr, "burst: %s: %s\n", what, strerror(errno));
	exit(2);
}

static void usage(void)
{
	fprintf(stderr, "usage: burst -o PIDFILE [-m exec|fork] [-n N] [-p WORKERS] [-t TINY] [-a PREFIX]\n");
	exit(2);
}

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static long slice_start(long n, int workers, int w)
{
	return n * w / workers;
}

/* One worker: create children [first, last) one at a time. */
static void work(struct shared *sh, int w, long first, long last, int exec_mode, const char *tiny,
		 const char *prefix, int gun)
{
	char arg[256];
	char *argv[] = {(char *)"tiny", prefix ? arg : NULL, NULL};
	char *const envp[] = {NULL};
	char c;

	/* Wait for the starting gun: EOF on the pipe. */
	while (read(gun, &c, 1) < 0 && errno == EINTR)
		;
	close(gun);

	for (long i = first; i < last; i++) {
		pid_t pid;
		int status;

		if (exec_mode && prefix) /* before vfork: the child only calls execve */
			snprintf(arg, sizeof arg, "%s%ld", prefix, i);
		sh->start[i] = (int64_t)now_ns();
		if (exec_mode) {
			pid = vfork();
			if (pid == 0) {
				execve(tiny, argv, envp);
				_exit(127);
			}
		} else {
			pid = fork();
			if (pid == 0)
				_exit(0);
		}
		if (pid < 0) {
			fprintf(stderr, "burst: worker %d: %s failed after %ld children: %s\n", w,
				exec_mode ? "vfork" : "fork", i - first, strerror(errno));
			sh->pids[i] = 0;
			sh->failures[w]++;
			continue;
		}
		sh->pids[i] = pid;
		while (waitpid(pid, &status, 0) < 0) {
			if (errno != EINTR)
				die("waitpid");
		}
		sh->end[i] = (int64_t)now_ns();
		if (status != 0)
			sh->failures[w]++;
	}
	_exit(0);
}

int main(int argc, char **argv)
{
	const char *out = NULL, *tiny = NULL, *mode = "exec", *prefix = NULL;
	long n = 100000;
	int workers = 2, opt;

	while ((opt = getopt(argc, argv, "o:m:n:p:t:a:h")) != -1) {
		switch (opt) {
		case 'o': out = optarg; break;
		case 'm': mode = optarg; break;
		case 'n': n = strtol(optarg, NULL, 10); break;
		case 'p': workers = atoi(optarg); break;
		case 't': tiny = optarg; break;
		case 'a': prefix = optarg; break;
		default: usage();
		}
	}
	int exec_mode = strcmp(mode, "exec") == 0;
	if (!out || optind != argc || n <= 0 || workers <= 0 || workers > MAX_WORKERS ||
	    (!exec_mode && strcmp(mode, "fork") != 0))
		usage();
	if (exec_mode && !tiny) {
		fprintf(stderr, "burst: exec mode needs -t TINY\n");
		exit(2);
	}
	if (exec_mode && access(tiny, X_OK) != 0)
		die(tiny);

	FILE *f = fopen(out, "w");
	if (!f)
		die(out);

	size_t size = sizeof(struct shared) + (size_t)n * (2 * sizeof(int64_t) + sizeof(int32_t));
	struct shared *sh = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED)
		die("mmap");
	memset(sh, 0, size); /* fault the pages in now, not during the burst */
	sh->start = (int64_t *)(sh + 1);
	sh->end = sh->start + n;
	sh->pids = (int32_t *)(sh->end + n);

	int gun[2];
	if (pipe(gun) < 0)
		die("pipe");
	pid_t wpid[MAX_WORKERS];
	for (int w = 0; w < workers; w++) {
		wpid[w] = fork();
		if (wpid[w] < 0)
			die("fork worker");
		if (wpid[w] == 0) {
			close(gun[1]);
			work(sh, w, slice_start(n, workers, w), slice_start(n, workers, w + 1), exec_mode, tiny,
			     prefix, gun[0]);
		}
	}
	close(gun[0]);
	usleep(20000); /* let the workers reach the starting line */

	uint64_t t0 = now_ns();
	close(gun[1]); /* go */
	int bad_workers = 0;
	for (int w = 0; w < workers; w++) {
		int status;
		while (waitpid(wpid[w], &status, 0) < 0) {
			if (errno != EINTR)
				die("waitpid worker");
		}
		if (status != 0)
			bad_workers++;
	}
	uint64_t elapsed = now_ns() - t0;

	long failures = 0;
	for (int w = 0; w < workers; w++)
		failures += sh->failures[w];

	fprintf(f, "# burst mode=%s n=%ld workers=%d elapsed_ns=%llu failures=%ld\n", mode, n, workers,
		(unsigned long long)elapsed, failures);
	for (int w = 0; w < workers; w++)
		fprintf(f, "W %d\n", (int)wpid[w]);
	for (long i = 0; i < n; i++)
		fprintf(f, "%d %lld %lld\n", (int)sh->pids[i], (long long)sh->start[i], (long long)sh->end[i]);
	if (fclose(f) != 0)
		die(out);

	double secs = (double)elapsed / 1e9;
	printf("burst: mode=%s n=%ld workers=%d elapsed=%.3fs rate=%.0f children/s failures=%ld\n", mode, n,
	       workers, secs, (double)n / secs, failures);
	return failures || bad_workers ? 1 : 0;
}
