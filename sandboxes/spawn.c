/* How the reused bubblewrap sandbox's agent (sandboxes/agent.py) starts a program: selfplay_spawn, through ctypes.
 *
 * A fork copies the agent's page tables and write-protects its memory, and the exec then tears the copy down:
 * ~0.85 ms of CPU a run for the agent's 5 MB Python on a 2-core EPYC VM, where a posix_spawn-like start costs
 * ~0.05 ms. So the child shares the agent's memory (CLONE_VM | CLONE_VFORK: the agent waits until it has exec'd or
 * exited), runs on a stack of its own and makes only system calls: no libc state is touched, no Python code runs. It
 * does what agent.py's forked child does: every signal to its default disposition (no handler of the agent's runs
 * in it, SIGPIPE and SIGXFSZ are no longer ignored), oom_score_adj 1000, its own session, no supplementary groups,
 * uid:gid 65534:65534, the stdin fd on 0, the job's rlimits, the agent's signal mask back, then execve. Its id
 * change, made on the memory it shares, leaves the agent not dumpable (so not ptrace-able by 65534 either).
 *
 *     cc -O2 -shared -fPIC -o spawn.so spawn.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

#define STACK_BYTES (64 * 1024)
#define NOBODY 65534

struct limit { uint64_t soft, hard; };
struct kernel_sigaction { void *handler; unsigned long flags; void *restorer; uint64_t mask; };

struct job {
    const char *path;
    char *const *argv, *const *envp;
    int stdin_fd, count;
    const int *resources;
    const struct limit *limits;
    uint64_t mask;  /* the agent's signal mask, put back before the exec */
    volatile int error;  /* errno of the step that failed in the child; 0 when it exec'd */
};

static int child(void *arg) {
    struct job *job = arg;
    struct kernel_sigaction dfl = {0};  /* SIG_DFL */
    for (int sig = 1; sig <= 64; sig++)
        if (sig != SIGKILL && sig != SIGSTOP)
            syscall(SYS_rt_sigaction, sig, &dfl, NULL, sizeof dfl.mask);
    long fd = syscall(SYS_openat, AT_FDCWD, "/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
    if (fd < 0 || syscall(SYS_write, fd, "1000", 4) != 4 || syscall(SYS_close, fd) < 0) goto fail;
    if (syscall(SYS_setsid) < 0 || syscall(SYS_setgroups, 0, NULL) < 0
        || syscall(SYS_setresgid, NOBODY, NOBODY, NOBODY) < 0 || syscall(SYS_setresuid, NOBODY, NOBODY, NOBODY) < 0
        || syscall(SYS_dup3, job->stdin_fd, 0, 0) < 0)
        goto fail;
    for (int i = 0; i < job->count; i++)
        if (syscall(SYS_prlimit64, 0, job->resources[i], &job->limits[i], NULL) < 0) goto fail;
    syscall(SYS_rt_sigprocmask, SIG_SETMASK, &job->mask, NULL, sizeof job->mask);
    syscall(SYS_execve, job->path, job->argv, job->envp);
fail:
    job->error = errno ? errno : EIO;  /* errno is the agent's thread's: the child shares its memory and TLS */
    syscall(SYS_exit, 127);
    return 127;
}

/* The child's pid, or -1 (and *error) when it could not be made; *error is the errno of the step that failed in
 * the child (it then exited with 127), 0 when it exec'd. */
int selfplay_spawn(const char *path, char *const argv[], char *const envp[], int stdin_fd, int count,
                   const int resources[], const struct limit limits[], int *error) {
    struct job job = {.path = path, .argv = argv, .envp = envp, .stdin_fd = stdin_fd, .count = count,
                      .resources = resources, .limits = limits};
    uint64_t all = ~(uint64_t)0;
    char *stack = malloc(STACK_BYTES);
    if (stack == NULL) {
        *error = ENOMEM;
        return -1;
    }
    /* no handler of the agent's may run while the child shares its memory */
    syscall(SYS_rt_sigprocmask, SIG_SETMASK, &all, &job.mask, sizeof all);
    int pid = clone(child, stack + STACK_BYTES, CLONE_VM | CLONE_VFORK | SIGCHLD, &job);
    int failed = errno;
    syscall(SYS_rt_sigprocmask, SIG_SETMASK, &job.mask, NULL, sizeof all);
    free(stack);
    *error = pid < 0 ? failed : job.error;
    return pid;
}
