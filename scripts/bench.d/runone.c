/*
 * runone: run one client process and report what it cost, for scripts/bench.
 *
 *   runone TIMEOUT STDIN STDOUT STDERR program [args...]
 *
 * Forks, points fd 0/1/2 of the child at the three files, execs the program (environment
 * inherited) and waits for it with wait4(). Prints one line on its own stdout:
 *
 *   wall_ns utime_us stime_us maxrss_kib status
 *
 * status is the exit code, or 128+signal. The child gets SIGALRM after TIMEOUT seconds.
 *
 * Why not python's subprocess or /usr/bin/time: Linux reports a child's peak RSS as the
 * larger of the program's own peak and the peak of the address space it was exec'd from.
 * Python spawns with vfork (the parent's whole address space, ~14 MiB) and GNU time is a
 * dynamically linked program (~1 MiB). This helper is linked statically and is tiny, so
 * the figure it reports is the client's own (its floor is printed by `runone ... /bin/true`).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void redirect(const char *path, int fd, int flags)
{
	int f = open(path, flags, 0600);
	if (f < 0 || dup2(f, fd) < 0)
		_exit(126);
	if (f != fd)
		close(f);
}

int main(int argc, char **argv)
{
	struct timespec t0, t1;
	struct rusage ru;
	int status;
	pid_t pid;

	if (argc < 6) {
		fprintf(stderr, "usage: runone TIMEOUT STDIN STDOUT STDERR program [args...]\n");
		return 2;
	}
	unsigned timeout = (unsigned)atoi(argv[1]);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	pid = fork();
	if (pid < 0) {
		perror("runone: fork");
		return 2;
	}
	if (pid == 0) {
		redirect(argv[2], 0, O_RDONLY);
		redirect(argv[3], 1, O_WRONLY | O_CREAT | O_TRUNC);
		redirect(argv[4], 2, O_WRONLY | O_CREAT | O_TRUNC);
		alarm(timeout);
		execv(argv[5], argv + 5);
		_exit(127);
	}
	while (wait4(pid, &status, 0, &ru) < 0) {
		if (errno != EINTR) {
			perror("runone: wait4");
			return 2;
		}
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	long long wall = (long long)(t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec);
	int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
	printf("%lld %lld %lld %ld %d\n", wall,
	       (long long)ru.ru_utime.tv_sec * 1000000LL + ru.ru_utime.tv_usec,
	       (long long)ru.ru_stime.tv_sec * 1000000LL + ru.ru_stime.tv_usec,
	       ru.ru_maxrss, code);
	return 0;
}
