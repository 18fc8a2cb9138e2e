/* cronflow-spawn: the job starter, a tiny fork server (one per cronflow process).
 *
 *     cronflow-spawn SOCKET_FD PARENT_PID
 *
 * Why it exists: Linux's exec keeps, in a process's ru_maxrss, the resident size the process had
 * before exec. A job forked (or vforked) from the ~28 MiB cronflow process would report at least
 * that much even for `true`. Jobs are cloned from this ~1 MiB process instead, with CLONE_PARENT:
 * the job is still the cronflow process's child (its pidfd, wait4 and rusage, timeouts and process
 * group work as for a direct child). Starting it once and keeping it saves an exec per job.
 *
 * Request, one SOCK_SEQPACKET message: two native uint32 ARGC ENVC, then NUL-terminated strings:
 * the workdir, ARGC arguments, ENVC "KEY=VALUE" entries; with it, as SCM_RIGHTS, the write ends
 * of the job's stdout and stderr. stdin is our own /dev/null.
 * Reply: "PID ERRNO WHICH": ERRNO 0 once the job has exec'd; otherwise WHICH says what failed:
 * 'c' the chdir, 'x' the exec (for both, PID has exited with 127: the caller must reap it),
 * 'f' the clone, 'r' the request itself.
 * The server exits at EOF on its socket, or when its parent dies (PR_SET_PDEATHSIG).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#define REQUEST_BYTES (128 * 1024) /* MAX_REQUEST in spawn.py */
#define MAX_STRINGS 16384

static char request[REQUEST_BYTES + 1];
static char *strings[MAX_STRINGS + 2];

/* Like Python's subprocess: PATH from the job's environment (os.defpath without one), each
 * candidate tried with execve, the first error other than "not there" is the one reported. No
 * /bin/sh fallback for a file without a #! line. Returns only on failure, with errno set. */
static void exec_in_path(char **argv, char **envp) {
    const char *file = argv[0];
    if (strchr(file, '/') != NULL) {
        execve(file, argv, envp);
        return;
    }
    const char *path = "/bin:/usr/bin";
    for (char **e = envp; *e != NULL; e++)
        if (strncmp(*e, "PATH=", 5) == 0) path = *e + 5;
    int first_error = 0;
    char candidate[4096];
    for (const char *dir = path;;) {
        const char *end = strchrnul(dir, ':');
        size_t len = (size_t)(end - dir);
        if (len + strlen(file) + 2 <= sizeof candidate) {
            memcpy(candidate, dir, len);
            if (len > 0) candidate[len++] = '/'; /* an empty entry is the workdir */
            strcpy(candidate + len, file);
            execve(candidate, argv, envp);
            if (errno != ENOENT && errno != ENOTDIR && first_error == 0) first_error = errno;
        } else if (first_error == 0) {
            first_error = ENAMETOOLONG;
        }
        if (*end == '\0') break;
        dir = end + 1;
    }
    errno = first_error != 0 ? first_error : ENOENT;
}

/* The job being started: set before the clone, and the child's errno written back into it (the
 * child shares our memory until it execs). */
static struct {
    char *cwd, **argv, **envp;
    int out, err;
    volatile int error, which;
} job;
static char child_stack[64 * 1024] __attribute__((aligned(16)));

/* In the cloned child, on child_stack: never returns. The job leads a new session; fd 0 is our
 * /dev/null; no signal handler can run here (all dispositions are default). */
static int run_job(void *unused) {
    (void)unused;
    setsid();
    if (dup2(job.out, 1) < 0 || dup2(job.err, 2) < 0) goto failed; /* clears CLOEXEC on 1, 2 */
    if (chdir(job.cwd) != 0) {
        job.which = 'c';
        goto failed;
    }
    exec_in_path(job.argv, job.envp);
failed:
    job.error = errno;
    _exit(127);
}

/* Start one job; the caller closes the fds it received. */
static void spawn(int sock, ssize_t size, int out, int err) {
    char reply[64];
    uint32_t counts[2];
    size_t n = 0;
    if (size < (ssize_t)sizeof counts || request[size - 1] != '\0') goto bad_request;
    memcpy(counts, request, sizeof counts);
    for (char *s = request + sizeof counts; s < request + size; s += strlen(s) + 1) {
        if (n >= MAX_STRINGS) goto bad_request;
        strings[n++] = s;
    }
    if (counts[0] < 1 || n != 1 + (size_t)counts[0] + counts[1]) goto bad_request;
    /* NULL-terminate argv and envp in place: argv ends where envp starts, so shift envp by one. */
    memmove(strings + 2 + counts[0], strings + 1 + counts[0], counts[1] * sizeof *strings);
    strings[1 + counts[0]] = NULL;
    strings[2 + counts[0] + counts[1]] = NULL;
    job.cwd = strings[0];
    job.argv = strings + 1;
    job.envp = strings + 2 + counts[0];
    job.out = out;
    job.err = err;
    job.error = 0;
    job.which = 'x';
    /* As posix_spawn does: CLONE_VM|CLONE_VFORK shares our memory (nothing to copy) and resumes
     * us once the job has exec'd or exited, with its errno in `job`. The memory it had before
     * exec, which its ru_maxrss keeps, is ours: a few hundred kB. CLONE_PARENT makes it the
     * cronflow process's child, not ours. */
    int pid = clone(run_job, child_stack + sizeof child_stack,
                    CLONE_VM | CLONE_VFORK | CLONE_PARENT | SIGCHLD, NULL);
    if (pid < 0)
        snprintf(reply, sizeof reply, "0 %d f", errno);
    else
        snprintf(reply, sizeof reply, "%d %d %c", pid, job.error, job.error ? job.which : '-');
    goto send;
bad_request:
    snprintf(reply, sizeof reply, "0 %d r", E2BIG);
send:
    if (send(sock, reply, strlen(reply), MSG_NOSIGNAL) < 0) _exit(1);
}

int main(int argc, char **argv) {
    if (argc != 3) return 2;
    int sock = atoi(argv[1]);
    /* Die with the cronflow process; if it died before this line, there is no one to serve. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != atoi(argv[2])) return 0;
    /* Jobs inherit our dispositions and mask: all default, nothing blocked, whatever the cronflow
     * process had (Python ignores SIGPIPE, a shell's `&` ignores SIGINT, glibc's posix_spawn
     * ignores its internal 32 and 33). The raw syscall, because glibc refuses to touch 32 and 33;
     * all zeroes is SIG_DFL with no flags in every architecture's kernel struct sigaction. */
    static const char default_action[64];
    for (int sig = 1; sig < NSIG; sig++)
        syscall(SYS_rt_sigaction, sig, default_action, NULL, (NSIG - 1) / 8);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    /* Keep 0-2 (/dev/null) and the socket, made CLOEXEC so that no job inherits it. */
    if (sock != 3) {
        if (dup2(sock, 3) < 0) return 1;
        sock = 3;
    }
    fcntl(sock, F_SETFD, FD_CLOEXEC);
    if (syscall(SYS_close_range, 4U, ~0U, 0) != 0)
        for (int fd = 4; fd < 4096; fd++) close(fd);

    for (;;) {
        union {
            struct cmsghdr header;
            char space[CMSG_SPACE(2 * sizeof(int))];
        } control;
        struct iovec iov = {request, sizeof request};
        struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1,
                             .msg_control = control.space, .msg_controllen = sizeof control};
        /* MSG_CMSG_CLOEXEC: the received fds vanish from the job at exec (it has them on 1, 2). */
        ssize_t size = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
        if (size == 0) return 0; /* the cronflow process has gone */
        if (size < 0) {
            if (errno == EINTR) continue;
            return 1;
        }
        int fds[2] = {-1, -1}, nfds = 0;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
            if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
            int *got = (int *)CMSG_DATA(c);
            for (size_t i = 0; i < (c->cmsg_len - CMSG_LEN(0)) / sizeof(int); i++) {
                if (nfds < 2) fds[nfds++] = got[i];
                else close(got[i]);
            }
        }
        if (nfds == 2 && !(msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC))) {
            spawn(sock, size, fds[0], fds[1]);
        } else {
            char reply[32];
            snprintf(reply, sizeof reply, "0 %d r", E2BIG);
            if (send(sock, reply, strlen(reply), MSG_NOSIGNAL) < 0) return 1;
        }
        for (int i = 0; i < nfds; i++) close(fds[i]);
    }
}
