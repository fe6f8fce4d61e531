/*
 * pam_bench: times PAM authentications in-process through the real libpam.
 *
 * Each iteration is one login transaction: pam_start_confdir(SERVICE, USER,
 * conv, CONFDIR) -> pam_authenticate(pamh, 0) -> pam_end. The conversation
 * answers every prompt with the answer given (-a, or line i of -A FILE) and
 * swallows info/error messages. pam_start_confdir (Linux-PAM >= 1.4) reads
 * the same service directory that pam_wrapper uses for pamtester, without
 * pam_wrapper, so the harness can also fork() concurrent logins safely.
 *
 * Before every iteration (or round, with -P) the files given with -r/-R are
 * restored from pristine copies and fsync'ed, OUTSIDE the timed region: with
 * the time pinned by libfaketime a code can be accepted only once (replay
 * protection), and failures would lock or rate-limit the account, so every
 * timed login starts from the same on-disk state.
 *
 * Times come from the raw clock_gettime syscall, so libfaketime (which pins
 * the modules' wall clock) cannot touch them. Page faults come from
 * getrusage(RUSAGE_SELF) around the transaction and around pam_authenticate.
 *
 * With -X, the harness times whole processes instead: it runs the command
 * after `--` (pamtester) ITER times, the answer on its stdin, and records the
 * wall time from fork to wait4 and the child's rusage (CPU, page faults).
 *
 * Output: one line of key=value pairs on stdout; raw samples with -o.
 *
 * Build: cc -O2 -Wall -o pam_bench pam_bench.c -lpam
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <security/pam_appl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_RESTORE 20000
#define MAX_PROCS 1024

struct restore {
    char *dst;
    char *data;
    size_t len;
};

static struct restore restores[MAX_RESTORE];
static int n_restores;
static char **answers;
static int n_answers;
static const char *answer_now;
static int prompts_seen;
/* -M: substrings looked for in the messages a login shows (bit i = the
 * i-th -M substring appeared in a PAM_ERROR_MSG or PAM_TEXT_INFO). */
#define MAX_MATCH 4
static const char *match[MAX_MATCH];
static int n_match;
static int match_bits;

static void die(const char *fmt, const char *arg)
{
    fprintf(stderr, "pam_bench: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n");
    exit(3);
}

static uint64_t now_ns(clockid_t clock)
{
    struct timespec ts;
    /* The raw syscall: libfaketime interposes clock_gettime(). */
    if (syscall(SYS_clock_gettime, clock, &ts) != 0)
        die("clock_gettime failed: %s", strerror(errno));
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        die("cannot open %s", path);
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (n == cap) {
            cap *= 2;
            buf = realloc(buf, cap);
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        if (got == 0)
            break;
        n += got;
    }
    fclose(f);
    *len = n;
    return buf;
}

static void add_restore(const char *src, const char *dst)
{
    if (n_restores == MAX_RESTORE)
        die("too many restores (max %s)", "20000");
    restores[n_restores].dst = strdup(dst);
    restores[n_restores].data = read_file(src, &restores[n_restores].len);
    n_restores++;
}

/* Puts every file back as it was, durably, so that the timed fsyncs of the
 * next login do not pay for our writes. */
static void restore_all(void)
{
    for (int i = 0; i < n_restores; i++) {
        int fd = open(restores[i].dst, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0)
            die("cannot restore %s", restores[i].dst);
        size_t off = 0;
        while (off < restores[i].len) {
            ssize_t w = write(fd, restores[i].data + off, restores[i].len - off);
            if (w <= 0)
                die("write failed on %s", restores[i].dst);
            off += (size_t)w;
        }
        if (fsync(fd) != 0)
            die("fsync failed on %s", restores[i].dst);
        close(fd);
    }
}

static int conv(int n, const struct pam_message **msg, struct pam_response **resp, void *data)
{
    (void)data;
    struct pam_response *r = calloc((size_t)n, sizeof *r);
    if (!r)
        return PAM_BUF_ERR;
    for (int i = 0; i < n; i++) {
        switch (msg[i]->msg_style) {
        case PAM_PROMPT_ECHO_OFF:
        case PAM_PROMPT_ECHO_ON:
            r[i].resp = strdup(answer_now);
            prompts_seen++;
            break;
        default: /* PAM_TEXT_INFO, PAM_ERROR_MSG: nothing to answer */
            for (int k = 0; k < n_match; k++)
                if (msg[i]->msg && strstr(msg[i]->msg, match[k]))
                    match_bits |= 1 << k;
            break;
        }
    }
    *resp = r;
    return PAM_SUCCESS;
}

/* strace -e write shows these, so a parser can cut out one pam_authenticate */
static void marker(int on, const char *what)
{
    if (on) {
        ssize_t ignored = write(-1, what, strlen(what));
        (void)ignored;
    }
}

struct sample {
    uint64_t txn_ns;  /* pam_start .. pam_end */
    uint64_t auth_ns; /* pam_authenticate alone */
    uint64_t cpu_ns;  /* process CPU time during pam_authenticate */
    int rc;
    long txn_minflt;  /* page faults, pam_start .. pam_end */
    long txn_majflt;
    long auth_minflt; /* page faults in pam_authenticate */
};

static void faults(long *minflt, long *majflt)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    *minflt = ru.ru_minflt;
    *majflt = ru.ru_majflt;
}

static int login(const char *service, const char *confdir, const char *user, int markers,
                 struct sample *s)
{
    struct pam_conv c = {conv, NULL};
    pam_handle_t *pamh = NULL;
    long f0, j0, f1, j1, f2, j2, f3, j3;
    faults(&f0, &j0);
    marker(markers, "BENCH_TXN_BEGIN");
    uint64_t t0 = now_ns(CLOCK_MONOTONIC);
    int rc = pam_start_confdir(service, user, &c, confdir, &pamh);
    if (rc != PAM_SUCCESS) {
        fprintf(stderr, "pam_bench: pam_start_confdir: %s\n", pam_strerror(pamh, rc));
        exit(3);
    }
    uint64_t t1 = now_ns(CLOCK_MONOTONIC);
    faults(&f1, &j1);
    uint64_t c1 = now_ns(CLOCK_PROCESS_CPUTIME_ID);
    marker(markers, "BENCH_AUTH_BEGIN");
    rc = pam_authenticate(pamh, 0);
    marker(markers, "BENCH_AUTH_END");
    uint64_t c2 = now_ns(CLOCK_PROCESS_CPUTIME_ID);
    faults(&f2, &j2);
    uint64_t t2 = now_ns(CLOCK_MONOTONIC);
    pam_end(pamh, rc);
    uint64_t t3 = now_ns(CLOCK_MONOTONIC);
    marker(markers, "BENCH_TXN_END");
    faults(&f3, &j3);
    s->txn_ns = t3 - t0;
    s->auth_ns = t2 - t1;
    s->cpu_ns = c2 - c1;
    s->rc = rc;
    s->txn_minflt = f3 - f0;
    s->txn_majflt = j3 - j0;
    s->auth_minflt = f2 - f1;
    (void)j1;
    (void)j2;
    return rc;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Sorts v in place and returns the q-quantile (nearest rank). */
static double quantile_us(uint64_t *v, int n, double q)
{
    if (n == 0)
        return 0;
    qsort(v, (size_t)n, sizeof *v, cmp_u64);
    int i = (int)(q * (n - 1) + 0.5);
    return v[i] / 1000.0;
}

static double median_us(uint64_t *v, int n)
{
    if (n == 0)
        return 0;
    qsort(v, (size_t)n, sizeof *v, cmp_u64);
    if (n % 2)
        return v[n / 2] / 1000.0;
    return (v[n / 2 - 1] + v[n / 2]) / 2000.0;
}

/* -L PATH: a stand-in for the syslog daemon (these machines run none): binds a
 * datagram socket at PATH (/dev/log) and discards what arrives, so that
 * modules logging through syslog(3) do not fall back to writing
 * /dev/console (LOG_CONS), which costs milliseconds on a serial console. */
static int log_sink(const char *path)
{
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (fd < 0 || strlen(path) >= sizeof sa.sun_path)
        die("socket for %s", path);
    strcpy(sa.sun_path, path);
    unlink(path);
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0)
        die("cannot bind %s", path);
    chmod(path, 0666);
    unsigned long n = 0;
    char buf[8192];
    for (;;) {
        if (recv(fd, buf, sizeof buf, 0) >= 0)
            n++;
        else if (errno != EINTR)
            break;
    }
    return 0;
}

/* -X: times ITER runs (after WARMUP untimed ones) of the command CMD, each
 * a whole process: the answer on its stdin, stdout and stderr to /dev/null,
 * the -E variables added to its environment only. Wall time from fork to
 * wait4; CPU time and page faults from wait4's rusage of the child. */
static char *child_env[64];
static int n_child_env;

static int exec_mode(char **cmd, int iters, int warmup, int expected, int no_restore,
                     const char *raw)
{
    int total = warmup + iters;
    uint64_t *wall = calloc((size_t)total, sizeof *wall);
    uint64_t *cpu = calloc((size_t)total, sizeof *cpu);
    uint64_t *minflt = calloc((size_t)total, sizeof *minflt);
    uint64_t *majflt = calloc((size_t)total, sizeof *majflt);
    int *status = calloc((size_t)total, sizeof *status);
    int bad = 0, hist[256] = {0};
    int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (devnull < 0)
        die("cannot open %s", "/dev/null");
    for (int i = 0; i < total; i++) {
        if (answers)
            answer_now = answers[i % n_answers];
        if (!no_restore)
            restore_all();
        int in[2];
        if (pipe2(in, O_CLOEXEC))
            die("pipe: %s", strerror(errno));
        /* A line is far below the pipe's buffer: written before the fork. */
        size_t len = strlen(answer_now);
        if (write(in[1], answer_now, len) != (ssize_t)len || write(in[1], "\n", 1) != 1)
            die("write to the pipe: %s", strerror(errno));
        close(in[1]);
        uint64_t t0 = now_ns(CLOCK_MONOTONIC);
        pid_t pid = fork();
        if (pid < 0)
            die("fork: %s", strerror(errno));
        if (pid == 0) {
            dup2(in[0], 0);
            dup2(devnull, 1);
            dup2(devnull, 2);
            for (int e = 0; e < n_child_env; e++)
                putenv(child_env[e]);
            execvp(cmd[0], cmd);
            _exit(127);
        }
        close(in[0]);
        struct rusage ru;
        int st;
        while (wait4(pid, &st, 0, &ru) < 0)
            if (errno != EINTR)
                die("wait4: %s", strerror(errno));
        uint64_t t1 = now_ns(CLOCK_MONOTONIC);
        wall[i] = t1 - t0;
        cpu[i] = ((uint64_t)ru.ru_utime.tv_sec + (uint64_t)ru.ru_stime.tv_sec) * 1000000000u +
                 ((uint64_t)ru.ru_utime.tv_usec + (uint64_t)ru.ru_stime.tv_usec) * 1000u;
        minflt[i] = (uint64_t)ru.ru_minflt;
        majflt[i] = (uint64_t)ru.ru_majflt;
        status[i] = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        if (status[i] == 127)
            die("cannot run %s", cmd[0]);
        if (i < warmup)
            continue;
        hist[status[i] & 255]++;
        if (expected >= 0 && status[i] != expected)
            bad++;
    }
    if (!no_restore)
        restore_all();
    if (raw) {
        /* raw samples, appended: wall_ns cpu_ns minflt majflt status */
        FILE *f = fopen(raw, "a");
        if (!f)
            die("cannot open %s", raw);
        for (int i = warmup; i < total; i++)
            fprintf(f, "%llu %llu %llu %llu %d\n", (unsigned long long)wall[i],
                    (unsigned long long)cpu[i], (unsigned long long)minflt[i],
                    (unsigned long long)majflt[i], status[i]);
        fclose(f);
    }
    printf("mode=exec iters=%d", iters);
    for (int k = 0; k < 256; k++)
        if (hist[k])
            printf(" status%d=%d", k, hist[k]);
    printf(" wall_median_us=%.1f wall_p95_us=%.1f", median_us(wall + warmup, iters),
           quantile_us(wall + warmup, iters, 0.95));
    printf(" cpu_median_us=%.1f", median_us(cpu + warmup, iters));
    for (int i = warmup; i < total; i++) {
        minflt[i] *= 1000;
        majflt[i] *= 1000;
    }
    printf(" minflt_median=%.0f majflt_median=%.0f\n", median_us(minflt + warmup, iters),
           median_us(majflt + warmup, iters));
    if (bad) {
        fprintf(stderr, "pam_bench: %d of %d runs of %s did not exit %d\n", bad, iters, cmd[0],
                expected);
        return 2;
    }
    return 0;
}

/* -F: logins at the real time, for stores whose clock cannot be pinned (the
 * fleet: the database's clock decides). A code is accepted once per user
 * and time step, so:
 *   - the code is the current step's, from -C FILE (first line "STEP0
 *     PERIOD", then one code per step from STEP0 on, made by oathtool);
 *   - users (-u FORMAT with a %d, numbers 1..-U N) are reserved in blocks
 *     through the state file -S (flock'ed, "step next-free-user"): a block
 *     is PROCS x -K users, each worker takes its own slice and uses each of
 *     its users at most once per step; in a new step a slice starts again
 *     (every user is fresh then); if the block does not fit in what is left
 *     of N in this step, the harness waits (untimed) for the next step;
 *   - with -u NAME (no %), every worker logs in as that one user: only one
 *     code per step can succeed, the others are decided attempts that fail.
 * PROCS workers (-P, default 1) are forked and released together; each
 * logs in -w + -n times (count mode) or until -T MS have passed (duration
 * mode; a worker whose slice runs out stops every worker: the figures are
 * then over the shorter time, reported as slice_exhausted=1; with -W it
 * waits for the next step instead).
 * -I MS: each worker pauses MS after every login (a steady trickle, for the
 * failover); -Y FILE is created once the workers are released; SIGUSR1 stops
 * every worker after its current login. Raw samples (-o, appended): start_realtime_ns txn_ns auth_ns rc msg_bits
 * prompts worker. A login longer than -H MS is counted as hung. */
struct rec {
    uint64_t start_ns, txn_ns, auth_ns;
    int32_t rc, bits, prompts, worker;
};

static uint64_t real_ns(void)
{
    return now_ns(CLOCK_REALTIME);
}

static char **codes;
static int n_codes;
static long code_step0, code_period;

static void load_codes(const char *path)
{
    size_t len;
    char *text = read_file(path, &len);
    text = realloc(text, len + 1);
    text[len] = 0;
    char *line = strtok(text, "\n");
    if (!line || sscanf(line, "%ld %ld", &code_step0, &code_period) != 2 || code_period < 1)
        die("%s: the first line must be STEP0 PERIOD", path);
    codes = calloc(len + 1, sizeof *codes);
    for (line = strtok(NULL, "\n"); line; line = strtok(NULL, "\n"))
        codes[n_codes++] = line;
}

static long step_now(void)
{
    return (long)(real_ns() / 1000000000u) / code_period;
}

static const char *code_for(long step)
{
    if (step < code_step0 || step >= code_step0 + n_codes)
        die("no code for this time step in the -C file (%s)", "make more codes");
    return codes[step - code_step0];
}

/* Sleeps until the step after `step` has begun (plus 20 ms). */
static void wait_next_step(long step)
{
    for (;;) {
        uint64_t t = real_ns();
        uint64_t next = (uint64_t)(step + 1) * (uint64_t)code_period * 1000000000u + 20000000u;
        if (t >= next)
            return;
        uint64_t d = next - t;
        struct timespec ts = {(time_t)(d / 1000000000u), (long)(d % 1000000000u)};
        nanosleep(&ts, NULL);
    }
}

/* SIGUSR1 to the harness (duration mode): every worker stops after its
 * current login. */
static volatile int *stop_flag;
static void on_usr1(int sig)
{
    (void)sig;
    if (stop_flag)
        *stop_flag = 1;
}

static int real_mode(const char *service, const char *confdir, const char *user, int procs,
                     int iters, int warmup, long duration_ms, int users, int slice,
                     const char *state, double hung_ms, long pause_ms, const char *started,
                     int wait_step, const char *raw)
{
    int multi = strchr(user, '%') != NULL;
    if (procs < 1)
        procs = 1;
    if (slice < 1)
        slice = warmup + iters;
    int need = multi ? procs * slice : 0, base = 1;
    if (multi && (need > users || !state))
        die("-F with a user format needs -S and PROCS x -K <= -U (%s)", user);
    int sfd = -1;
    long reserved_step = step_now();
    if (multi) {
        sfd = open(state, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        if (sfd < 0 || flock(sfd, LOCK_EX) != 0)
            die("cannot lock %s", state);
        char buf[64] = {0};
        long saved_step = -1, next = 1;
        if (pread(sfd, buf, sizeof buf - 1, 0) > 0)
            sscanf(buf, "%ld %ld", &saved_step, &next);
        reserved_step = step_now();
        if (saved_step != reserved_step)
            next = 1;
        if (next + need - 1 > users) {
            wait_next_step(reserved_step);
            reserved_step = step_now();
            next = 1;
        }
        base = (int)next;
    }
    /* shared: the stop flag (a slice ran out) */
    volatile int *stop = mmap(NULL, sizeof(int), PROT_READ | PROT_WRITE,
                              MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (stop == MAP_FAILED)
        die("mmap: %s", strerror(errno));
    *stop = 0;
    stop_flag = stop;
    signal(SIGUSR1, on_usr1);
    int go[2], res[2];
    if (pipe(go) || pipe(res))
        die("pipe: %s", strerror(errno));
    uint64_t t_end_budget = (uint64_t)duration_ms * 1000000u;
    pid_t pids[MAX_PROCS];
    for (int w = 0; w < procs; w++) {
        pid_t pid = fork();
        if (pid < 0)
            die("fork: %s", strerror(errno));
        if (pid == 0) {
            close(go[1]);
            close(res[0]);
            char c;
            while (read(go[0], &c, 1) < 0 && errno == EINTR) {
            }
            uint64_t t0 = now_ns(CLOCK_MONOTONIC);
            long wstep = step_now();
            int idx = 0, done = 0, waits = 0;
            for (;;) {
                if (*stop)
                    break;
                if (duration_ms > 0) {
                    if (now_ns(CLOCK_MONOTONIC) - t0 >= t_end_budget)
                        break;
                } else if (done >= warmup + iters) {
                    break;
                }
                long s = step_now();
                if (s != wstep) {
                    wstep = s;
                    idx = 0;
                }
                char name[256];
                if (multi) {
                    if (idx >= slice) {
                        if (duration_ms > 0 && !wait_step) {
                            *stop = 2; /* a slice ran out */
                            break;
                        }
                        wait_next_step(s); /* count mode: untimed wait */
                        waits++;
                        continue;
                    }
                    snprintf(name, sizeof name, user, base + w * slice + idx);
                    idx++;
                } else {
                    snprintf(name, sizeof name, "%s", user);
                }
                answer_now = code_for(s);
                prompts_seen = 0;
                match_bits = 0;
                struct sample smp;
                uint64_t st = real_ns();
                login(service, confdir, name, 0, &smp);
                done++;
                if (pause_ms > 0) {
                    struct timespec ts = {pause_ms / 1000, (pause_ms % 1000) * 1000000L};
                    nanosleep(&ts, NULL);
                }
                if (duration_ms <= 0 && done <= warmup)
                    continue;
                struct rec r = {st, smp.txn_ns, smp.auth_ns, smp.rc, match_bits, prompts_seen, w};
                ssize_t ignored = write(res[1], &r, sizeof r);
                (void)ignored;
            }
            struct rec endr = {0, 0, 0, -1, waits, 0, w}; /* end marker */
            ssize_t ignored = write(res[1], &endr, sizeof endr);
            (void)ignored;
            _exit(0);
        }
        pids[w] = pid;
    }
    close(go[0]);
    close(res[1]);
    usleep(20000);
    uint64_t t0 = now_ns(CLOCK_MONOTONIC);
    close(go[1]);
    if (started) {
        int fd = open(started, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
        if (fd < 0)
            die("cannot create %s", started);
        close(fd);
    }
    size_t cap = 4096, n = 0;
    struct rec *recs = malloc(cap * sizeof *recs);
    int ends = 0, waits = 0;
    uint64_t t_last = t0;
    for (;;) {
        struct rec r;
        ssize_t got = read(res[0], &r, sizeof r);
        if (got == 0)
            break;
        if (got < 0) {
            if (errno == EINTR)
                continue;
            die("read: %s", strerror(errno));
        }
        if (got != (ssize_t)sizeof r) /* records are far below PIPE_BUF: never split */
            die("short read from a worker%s", "");
        if (r.rc == -1) {
            ends++;
            waits += r.bits;
            t_last = now_ns(CLOCK_MONOTONIC);
            continue;
        }
        if (n == cap) {
            cap *= 2;
            recs = realloc(recs, cap * sizeof *recs);
        }
        recs[n++] = r;
    }
    for (int w = 0; w < procs; w++) {
        int st;
        waitpid(pids[w], &st, 0);
    }
    if (ends < procs)
        die("a worker died without reporting%s", "");
    if (multi) {
        char buf[64];
        int len = snprintf(buf, sizeof buf, "%ld %d\n", step_now(), base + need);
        if (pwrite(sfd, buf, (size_t)len, 0) != len || ftruncate(sfd, len) != 0)
            die("cannot write %s", state);
        close(sfd);
    }
    double elapsed_s = (double)(t_last - t0) / 1e9;
    int hist[64] = {0}, bits[MAX_MATCH] = {0}, noprompt = 0, hung = 0, ok = 0;
    uint64_t *v = calloc(n + 1, sizeof *v);
    for (size_t i = 0; i < n; i++) {
        hist[recs[i].rc & 63]++;
        if (recs[i].rc == PAM_SUCCESS)
            ok++;
        for (int k = 0; k < n_match; k++)
            if (recs[i].bits & (1 << k))
                bits[k]++;
        if (recs[i].prompts == 0)
            noprompt++;
        if (hung_ms > 0 && recs[i].txn_ns > (uint64_t)(hung_ms * 1e6))
            hung++;
        v[i] = recs[i].txn_ns;
    }
    if (raw) {
        FILE *f = fopen(raw, "a");
        if (!f)
            die("cannot open %s", raw);
        for (size_t i = 0; i < n; i++)
            fprintf(f, "%llu %llu %llu %d %d %d %d\n", (unsigned long long)recs[i].start_ns,
                    (unsigned long long)recs[i].txn_ns, (unsigned long long)recs[i].auth_ns,
                    recs[i].rc, recs[i].bits, recs[i].prompts, recs[i].worker);
        fclose(f);
    }
    printf("mode=real procs=%d logins=%zu success=%d no_prompt=%d hung=%d step_waits=%d "
           "slice_exhausted=%d first_user=%d",
           procs, n, ok, noprompt, hung, waits, *stop == 2, base);
    for (int k = 0; k < 64; k++)
        if (hist[k])
            printf(" rc%d=%d", k, hist[k]);
    for (int k = 0; k < n_match; k++)
        printf(" msg%d=%d", k + 1, bits[k]);
    printf(" elapsed_us=%.0f per_s=%.1f", elapsed_s * 1e6, elapsed_s > 0 ? n / elapsed_s : 0);
    printf(" txn_median_us=%.1f txn_p99_us=%.1f txn_max_us=%.1f\n", median_us(v, (int)n),
           quantile_us(v, (int)n, 0.99), quantile_us(v, (int)n, 1.0));
    return 0;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: pam_bench -s SERVICE -d CONFDIR -u USER (-a ANSWER | -A FILE)\n"
            "                 [-n ITER] [-w WARMUP] [-e EXPECTED_RC] [-r SRC:DST]... [-R LIST]\n"
            "                 [-m] [-P PROCS] [-N]\n"
            "  -u USER     user name; with -P, a printf format taking the child number\n"
            "              (1..PROCS), e.g. u%%05d\n"
            "  -A FILE     answers, one per line, line i for iteration i (no restore needed)\n"
            "  -e RC       every timed login must return this PAM code (0 = success,\n"
            "              7 = PAM_AUTH_ERR); otherwise exit 2\n"
            "  -r SRC:DST  restore DST from SRC before every iteration/round (untimed)\n"
            "  -R LIST     file of 'SRC DST' lines, same as many -r\n"
            "  -m          write(-1, \"BENCH_AUTH_BEGIN/END\") around pam_authenticate\n"
            "  -P PROCS    fork PROCS concurrent logins per round; ITER rounds\n"
            "  -N          no restore before the timed iterations (setup runs)\n"
            "  -o FILE     append raw samples, one line per login (auth_ns txn_ns cpu_ns rc\n"
            "              txn_minflt txn_majflt auth_minflt), per round with -P (batch_ns\n"
            "              successes logins), per process with -X (wall_ns cpu_ns minflt\n"
            "              majflt status)\n"
            "  -e -2       any result but PAM_SUCCESS is expected\n"
            "  -X          time whole processes: run the command after -- ITER times,\n"
            "              the answer on its stdin; -e is then its exit status\n"
            "  -E VAR=VAL  (with -X) add VAR=VAL to the command's environment only\n"
            "       pam_bench -X [-n ITER] [-w WARMUP] [-e STATUS] [-r ...] -a ANSWER -- CMD ARGS...\n"
            "       pam_bench -L PATH   discard syslog datagrams sent to PATH (/dev/log)\n"
            "       pam_bench -F -s SERVICE -d CONFDIR -u FORMAT|USER -C CODES [-U N -S STATE -K SLICE]\n"
            "                 [-P PROCS] (-n ITER [-w WARMUP] | -T MS) [-I MS] [-M TEXT]... [-H MS]\n"
            "                 [-Y FILE] [-W] [-o FILE]\n"
            "              logins at the real time (the fleet: the database's clock decides);\n"
            "              codes by time step from CODES; users reserved per step through\n"
            "              STATE; -T: for MS milliseconds; -M: count logins showing TEXT;\n"
            "              -H: count logins longer than MS as hung; -I: pause MS after each\n"
            "              login; -Y: create FILE once the workers are released; SIGUSR1\n"
            "              stops every worker after its current login; -W: with -T, a worker\n"
            "              whose users ran out waits for the next step (see real_mode())\n");
    exit(3);
}

int main(int argc, char **argv)
{
    const char *service = NULL, *confdir = NULL, *user = NULL, *answer = NULL, *raw = NULL;
    int iters = 100, warmup = 5, expected = -1, markers = 0, procs = 0, no_restore = 0;
    int exec = 0, real = 0, users = 0, slice = 0;
    long duration_ms = 0, pause_ms = 0;
    const char *started = NULL;
    int wait_step = 0;
    double hung_ms = 0;
    const char *state = NULL;
    int opt;
    while ((opt = getopt(argc, argv, "s:d:u:a:A:n:w:e:r:R:mP:NL:o:XE:FC:U:S:K:T:M:H:I:Y:W")) != -1) {
        switch (opt) {
        case 's': service = optarg; break;
        case 'd': confdir = optarg; break;
        case 'u': user = optarg; break;
        case 'a': answer = optarg; break;
        case 'A': {
            size_t len;
            char *text = read_file(optarg, &len);
            text = realloc(text, len + 1);
            text[len] = 0;
            answers = calloc(len + 1, sizeof *answers);
            for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n"))
                answers[n_answers++] = line;
            break;
        }
        case 'n': iters = atoi(optarg); break;
        case 'w': warmup = atoi(optarg); break;
        case 'e': expected = atoi(optarg); break;
        case 'r': {
            char *spec = strdup(optarg), *colon = strchr(spec, ':');
            if (!colon)
                usage();
            *colon = 0;
            add_restore(spec, colon + 1);
            break;
        }
        case 'R': {
            FILE *f = fopen(optarg, "r");
            if (!f)
                die("cannot open %s", optarg);
            char src[4096], dst[4096];
            while (fscanf(f, "%4095s %4095s", src, dst) == 2)
                add_restore(src, dst);
            fclose(f);
            break;
        }
        case 'm': markers = 1; break;
        case 'P': procs = atoi(optarg); break;
        case 'N': no_restore = 1; break;
        case 'L': return log_sink(optarg);
        case 'o': raw = optarg; break;
        case 'X': exec = 1; break;
        case 'E':
            if (n_child_env == 64 || !strchr(optarg, '='))
                usage();
            child_env[n_child_env++] = optarg;
            break;
        case 'F': real = 1; break;
        case 'C': load_codes(optarg); break;
        case 'U': users = atoi(optarg); break;
        case 'S': state = optarg; break;
        case 'K': slice = atoi(optarg); break;
        case 'T': duration_ms = atol(optarg); break;
        case 'H': hung_ms = atof(optarg); break;
        case 'I': pause_ms = atol(optarg); break;
        case 'Y': started = optarg; break;
        case 'W': wait_step = 1; break;
        case 'M':
            if (n_match == MAX_MATCH)
                usage();
            match[n_match++] = optarg;
            break;
        default: usage();
        }
    }
    if (real) {
        if (!service || !confdir || !user || !codes || procs < 0 || procs > MAX_PROCS ||
            (duration_ms <= 0 && iters < 1))
            usage();
        return real_mode(service, confdir, user, procs, iters, warmup, duration_ms, users, slice,
                         state, hung_ms, pause_ms, started, wait_step, raw);
    }
    if (exec) {
        if (optind >= argc || (!answer && !answers) || iters < 1)
            usage();
        answer_now = answer ? answer : answers[0];
        return exec_mode(argv + optind, iters, warmup, expected, no_restore, raw);
    }
    if (!service || !confdir || !user || (!answer && !answers) || iters < 1 || procs < 0 ||
        procs > MAX_PROCS)
        usage();
    answer_now = answer ? answer : answers[0];

    if (procs == 0) {
        /* Sequential: warm-up logins (untimed), then ITER timed logins. */
        int total = warmup + iters;
        struct sample *s = calloc((size_t)total, sizeof *s);
        uint64_t *v = calloc((size_t)total, sizeof *v);
        int ok = 0, bad = 0, hist[64] = {0};
        for (int i = 0; i < total; i++) {
            if (answers)
                answer_now = answers[i % n_answers];
            if (!no_restore)
                restore_all();
            prompts_seen = 0;
            int rc = login(service, confdir, user, markers && i >= warmup, &s[i]);
            if (prompts_seen != 1) {
                fprintf(stderr, "pam_bench: login %d saw %d prompts (expected 1)\n", i,
                        prompts_seen);
                exit(2);
            }
            if (i < warmup)
                continue;
            hist[rc & 63]++;
            if (rc != expected && (expected >= 0 || (expected == -2 && rc == PAM_SUCCESS)))
                bad++;
            if (rc == PAM_SUCCESS)
                ok++;
        }
        if (!no_restore)
            restore_all();
        struct sample *t = s + warmup;
        if (raw) {
            /* raw samples, appended:
             * auth_ns txn_ns cpu_ns rc txn_minflt txn_majflt auth_minflt */
            FILE *f = fopen(raw, "a");
            if (!f)
                die("cannot open %s", raw);
            for (int i = 0; i < iters; i++)
                fprintf(f, "%llu %llu %llu %d %ld %ld %ld\n", (unsigned long long)t[i].auth_ns,
                        (unsigned long long)t[i].txn_ns, (unsigned long long)t[i].cpu_ns, t[i].rc,
                        t[i].txn_minflt, t[i].txn_majflt, t[i].auth_minflt);
            fclose(f);
        }
        printf("mode=seq iters=%d success=%d", iters, ok);
        for (int k = 0; k < 64; k++)
            if (hist[k])
                printf(" rc%d=%d", k, hist[k]);
        for (int i = 0; i < iters; i++) v[i] = t[i].auth_ns;
        printf(" auth_median_us=%.1f auth_p10_us=%.1f auth_p90_us=%.1f",
               median_us(v, iters), quantile_us(v, iters, 0.1), quantile_us(v, iters, 0.9));
        for (int i = 0; i < iters; i++) v[i] = t[i].txn_ns;
        printf(" txn_median_us=%.1f", median_us(v, iters));
        for (int i = 0; i < iters; i++) v[i] = t[i].cpu_ns;
        printf(" cpu_median_us=%.1f cpu_max_us=%.1f", median_us(v, iters),
               quantile_us(v, iters, 1.0));
        for (int i = 0; i < iters; i++) v[i] = (uint64_t)t[i].txn_minflt * 1000;
        printf(" txn_minflt_median=%.0f", median_us(v, iters));
        long majflt = 0;
        for (int i = 0; i < iters; i++) majflt += t[i].txn_majflt;
        printf(" txn_majflt_total=%ld\n", majflt);
        if (bad) {
            fprintf(stderr, "pam_bench: %d of %d logins did not return %d\n", bad, iters,
                    expected);
            return 2;
        }
        return 0;
    }

    /* Concurrent: ITER rounds of PROCS forked logins released together. */
    int rounds = warmup + iters;
    uint64_t *batch = calloc((size_t)rounds, sizeof *batch);
    int *round_ok = calloc((size_t)rounds, sizeof *round_ok);
    uint64_t *lat = calloc((size_t)rounds * procs, sizeof *lat);
    int nlat = 0, ok = 0, bad = 0, noprompt = 0, hist[64] = {0};
    for (int r = 0; r < rounds; r++) {
        restore_all();
        int go[2], res[2];
        if (pipe(go) || pipe(res))
            die("pipe: %s", strerror(errno));
        pid_t pids[MAX_PROCS];
        for (int p = 0; p < procs; p++) {
            pid_t pid = fork();
            if (pid < 0)
                die("fork: %s", strerror(errno));
            if (pid == 0) {
                close(go[1]);
                close(res[0]);
                char name[256];
                snprintf(name, sizeof name, user, p + 1);
                char c;
                while (read(go[0], &c, 1) < 0 && errno == EINTR) {
                }
                struct sample s;
                prompts_seen = 0;
                login(service, confdir, name, 0, &s);
                uint64_t out[2] = {(uint64_t)s.rc | ((uint64_t)prompts_seen << 32), s.txn_ns};
                ssize_t ignored = write(res[1], out, sizeof out);
                (void)ignored;
                _exit(0); /* no atexit/destructors: nothing shared is torn down */
            }
            pids[p] = pid;
        }
        close(go[0]);
        close(res[1]);
        usleep(20000); /* let every child reach the barrier */
        uint64_t t0 = now_ns(CLOCK_MONOTONIC);
        close(go[1]); /* EOF releases every child at once */
        int got = 0;
        uint64_t out[2];
        while (got < procs) {
            ssize_t n = read(res[0], out, sizeof out);
            if (n == (ssize_t)sizeof out) {
                int rc = (int)(out[0] & 0xffffffff), prompts = (int)(out[0] >> 32);
                got++;
                if (prompts > 1) {
                    fprintf(stderr, "pam_bench: a child saw %d prompts\n", prompts);
                    exit(2);
                }
                if (r >= warmup) {
                    /* a module may refuse before prompting (rate limit) */
                    if (prompts == 0)
                        noprompt++;
                    lat[nlat++] = out[1];
                    hist[rc & 63]++;
                    if (rc == PAM_SUCCESS) {
                        ok++;
                        round_ok[r]++;
                    }
                    if (rc != expected &&
                        (expected >= 0 || (expected == -2 && rc == PAM_SUCCESS)))
                        bad++;
                }
            } else if (n == 0) {
                break; /* a child died without reporting */
            } else if (n < 0 && errno != EINTR) {
                die("read: %s", strerror(errno));
            }
        }
        uint64_t t1 = now_ns(CLOCK_MONOTONIC);
        close(res[0]);
        for (int p = 0; p < procs; p++) {
            int st;
            waitpid(pids[p], &st, 0);
        }
        if (got < procs) {
            fprintf(stderr, "pam_bench: only %d of %d children reported\n", got, procs);
            exit(2);
        }
        batch[r] = t1 - t0;
    }
    restore_all();
    if (raw) {
        /* raw rounds, appended: batch_ns successes logins */
        FILE *f = fopen(raw, "a");
        if (!f)
            die("cannot open %s", raw);
        for (int r = warmup; r < rounds; r++)
            fprintf(f, "%llu %d %d\n", (unsigned long long)batch[r], round_ok[r], procs);
        fclose(f);
    }
    printf("mode=fork procs=%d rounds=%d success=%d no_prompt=%d", procs, iters, ok, noprompt);
    for (int k = 0; k < 64; k++)
        if (hist[k])
            printf(" rc%d=%d", k, hist[k]);
    double lat_med = median_us(lat, nlat);
    double lat_max = quantile_us(lat, nlat, 1.0);
    printf(" batch_median_us=%.1f batch_max_us=%.1f login_median_us=%.1f login_max_us=%.1f\n",
           median_us(batch + warmup, iters), quantile_us(batch + warmup, iters, 1.0), lat_med,
           lat_max);
    if (bad) {
        fprintf(stderr, "pam_bench: %d of %d logins did not return %d\n", bad, nlat, expected);
        return 2;
    }
    return 0;
}
