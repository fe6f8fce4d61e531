/*
 * Host-process hygiene harness for pam_twofactor (driven by tests/hygiene.rs).
 *
 * In ONE process: snapshot everything a PAM module could change in its host
 * (umask, cwd, real/effective/saved uids and gids, supplementary groups, the
 * disposition of every signal and the blocked mask, the environment, the
 * open fds with their targets and flags, the interval timer, rlimits, nice,
 * process name, dumpable and no_new_privs flags, thread count, and whether
 * the module is still mapped: a thread-local destructor or a thread would
 * keep it loaded after dlclose), then run
 * many pam_start/pam_authenticate/pam_end cycles with hostile conversations
 * and many dlopen/dlclose cycles of the module itself, snapshot again and
 * print every difference.
 *
 * usage: harness SERVICE USER RIGHT_CODE WRONG_CODE STRICT_SERVICE STRICT_USER
 *                MODULE_SO ITERATIONS DLOPEN_CYCLES UMASK_OCTAL [sabotage]
 *
 * With "sabotage" the harness disturbs its own process after the logins
 * (leaks an fd, sets an environment variable, changes the umask and cwd,
 * installs a SIGALRM handler, keeps the module loaded and, as root, changes
 * its saved uid), to show that the comparison notices each one.
 *
 * Output (stdout), one fact per line:
 *   kind NAME calls=N codes=C[,C...] prompts=P infos=I errors=E
 *   umask-around-success before=OOOO after=OOOO
 *   entry setcred=C acct_mgmt=C open_session=C close_session=C chauthtok=C
 *   dlopen cycles=N missing=M failures=F
 *   sabotage uid=yes|no                         (with "sabotage" only)
 *   changed GROUP: -before line / +after line    (one per difference)
 *   hygiene unchanged | hygiene CHANGED
 * Exit status: 0 if nothing changed, 1 if something did, 2 on usage or setup
 * errors.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <security/pam_appl.h>

extern char **environ;

/* The module's file name, for the "mapped" lines. */
static const char *g_module_name = "";

/* ---- snapshots: a list of "group detail" lines ---- */

struct lines {
    char **v;
    size_t n, cap;
};

static void add(struct lines *l, const char *fmt, ...)
{
    va_list ap;
    char *s = NULL;
    va_start(ap, fmt);
    if (vasprintf(&s, fmt, ap) < 0) {
        perror("vasprintf");
        exit(2);
    }
    va_end(ap);
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 256;
        l->v = realloc(l->v, l->cap * sizeof *l->v);
        if (!l->v) {
            perror("realloc");
            exit(2);
        }
    }
    l->v[l->n++] = s;
}

/* The value of "Key:" in /proc/self/status, or "?" */
static void status_field(const char *key, char *out, size_t len)
{
    char line[512];
    size_t klen = strlen(key);
    FILE *f = fopen("/proc/self/status", "re");
    snprintf(out, len, "?");
    if (!f)
        return;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, key, klen) == 0 && line[klen] == ':') {
            char *v = line + klen + 1;
            while (*v == ' ' || *v == '\t')
                v++;
            v[strcspn(v, "\n")] = 0;
            snprintf(out, len, "%s", v);
            break;
        }
    }
    fclose(f);
}

static int contains(const struct lines *l, const char *s);

static void snapshot(struct lines *l)
{
    char buf[PATH_MAX + 64];

    status_field("Umask", buf, sizeof buf);
    add(l, "umask %s", buf);
    status_field("Threads", buf, sizeof buf);
    add(l, "threads %s", buf);

    if (getcwd(buf, sizeof buf))
        add(l, "cwd %s", buf);
    else
        add(l, "cwd error %d", errno);

    uid_t ru, eu, su;
    gid_t rg, eg, sg;
    getresuid(&ru, &eu, &su);
    getresgid(&rg, &eg, &sg);
    add(l, "uid %u %u %u", ru, eu, su);
    add(l, "gid %u %u %u", rg, eg, sg);
    gid_t groups[NGROUPS_MAX];
    int ng = getgroups(NGROUPS_MAX, groups);
    for (int i = 0; i < ng; i++)
        add(l, "groups %u", groups[i]);

    for (int sig = 1; sig < NSIG; sig++) {
        struct sigaction sa;
        if (sigaction(sig, NULL, &sa) != 0)
            continue;
        char mask[NSIG + 1];
        for (int s = 1; s < NSIG; s++)
            mask[s - 1] = sigismember(&sa.sa_mask, s) == 1 ? '1' : '0';
        mask[NSIG - 1] = 0;
        void *handler = (sa.sa_flags & SA_SIGINFO) ? (void *)sa.sa_sigaction
                                                   : (void *)sa.sa_handler;
        add(l, "signal %d handler=%p flags=%#x mask=%s", sig, handler,
            (unsigned)sa.sa_flags, mask);
    }
    sigset_t blocked;
    sigprocmask(SIG_BLOCK, NULL, &blocked);
    {
        char mask[NSIG + 1];
        for (int s = 1; s < NSIG; s++)
            mask[s - 1] = sigismember(&blocked, s) == 1 ? '1' : '0';
        mask[NSIG - 1] = 0;
        add(l, "sigmask %s", mask);
    }

    for (char **e = environ; e && *e; e++)
        add(l, "env %s", *e);

    DIR *d = opendir("/proc/self/fd");
    if (!d) {
        perror("opendir /proc/self/fd");
        exit(2);
    }
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        int fd = atoi(de->d_name);
        if (fd == dirfd(d))
            continue;
        char path[64], target[PATH_MAX];
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        ssize_t n = readlink(path, target, sizeof target - 1);
        target[n > 0 ? n : 0] = 0;
        add(l, "fd %d -> %s fdflags=%#x flflags=%#x", fd, target,
            (unsigned)fcntl(fd, F_GETFD), (unsigned)fcntl(fd, F_GETFL));
    }
    closedir(d);

    /* Mappings of the module: none before the first pam_start, and none
     * after pam_end/dlclose unless something pins the module in memory. */
    FILE *maps = fopen("/proc/self/maps", "re");
    if (!maps) {
        perror("fopen /proc/self/maps");
        exit(2);
    }
    char line[PATH_MAX + 256];
    while (fgets(line, sizeof line, maps)) {
        char *file = strchr(line, '/');
        if (!file)
            continue;
        file[strcspn(file, "\n")] = 0;
        const char *base = strrchr(file, '/') + 1;
        if (strcmp(base, g_module_name) == 0) {
            char entry[PATH_MAX + 16];
            snprintf(entry, sizeof entry, "mapped %s", file);
            if (!contains(l, entry))
                add(l, "%s", entry);
        }
    }
    fclose(maps);

    struct itimerval it;
    getitimer(ITIMER_REAL, &it);
    add(l, "itimer real interval=%ld.%06ld value-set=%d", (long)it.it_interval.tv_sec,
        (long)it.it_interval.tv_usec, it.it_value.tv_sec || it.it_value.tv_usec);

    for (int r = 0; r < RLIM_NLIMITS; r++) {
        struct rlimit rl;
        if (getrlimit(r, &rl) == 0)
            add(l, "rlimit %d %llu %llu", r, (unsigned long long)rl.rlim_cur,
                (unsigned long long)rl.rlim_max);
    }

    errno = 0;
    int nice = getpriority(PRIO_PROCESS, 0);
    add(l, "nice %d", nice);
    char name[17] = {0};
    prctl(PR_GET_NAME, name, 0, 0, 0);
    add(l, "name %s", name);
    add(l, "dumpable %d", prctl(PR_GET_DUMPABLE, 0, 0, 0, 0));
    add(l, "no_new_privs %d", prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0));
}

static int contains(const struct lines *l, const char *s)
{
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->v[i], s) == 0)
            return 1;
    return 0;
}

/* Prints every line in only one snapshot; returns how many. */
static int diff(const struct lines *before, const struct lines *after)
{
    int changes = 0;
    for (size_t i = 0; i < before->n; i++)
        if (!contains(after, before->v[i])) {
            printf("changed %.*s: -%s\n", (int)strcspn(before->v[i], " "), before->v[i],
                   before->v[i]);
            changes++;
        }
    for (size_t i = 0; i < after->n; i++)
        if (!contains(before, after->v[i])) {
            printf("changed %.*s: +%s\n", (int)strcspn(after->v[i], " "), after->v[i],
                   after->v[i]);
            changes++;
        }
    return changes;
}

static mode_t current_umask(void)
{
    char buf[32];
    status_field("Umask", buf, sizeof buf);
    return (mode_t)strtol(buf, NULL, 8);
}

/* ---- conversations ---- */

enum kind {
    K_SUCCESS,
    K_WRONG,
    K_SILENT_WRONG,
    K_BACKUP_LIKE,
    K_MEGABYTE,
    K_NULL_ANSWER,
    K_CONV_ERR,
    K_NO_CONV,
    K_LOCKED_LOUD,
    K_LOCKED_SILENT,
    K_COUNT
};

static const char *kind_name[K_COUNT] = {
    "success",       "wrong",     "silent-wrong",   "backup-like",   "megabyte",
    "null-answer",   "conv-err",  "no-conv",        "locked-loud",   "locked-silent",
};

struct tally {
    int calls;
    int codes[64]; /* distinct PAM codes seen, in order */
    int ncodes;
    int prompts, infos, errors;
};

static struct tally tallies[K_COUNT];

struct script {
    enum kind kind;
    const char *right;
    const char *wrong;
    struct tally *t;
};

static int conv(int n, const struct pam_message **msg, struct pam_response **resp,
                void *appdata)
{
    struct script *s = appdata;
    if (s->kind == K_CONV_ERR) {
        s->t->prompts++;
        return PAM_CONV_ERR;
    }
    struct pam_response *r = calloc((size_t)n, sizeof *r);
    if (!r)
        return PAM_BUF_ERR;
    for (int i = 0; i < n; i++) {
        switch (msg[i]->msg_style) {
        case PAM_PROMPT_ECHO_OFF:
        case PAM_PROMPT_ECHO_ON:
            s->t->prompts++;
            switch (s->kind) {
            case K_SUCCESS:
                r[i].resp = strdup(s->right);
                break;
            case K_BACKUP_LIKE:
                r[i].resp = strdup("1234-5678-9012-3456");
                break;
            case K_MEGABYTE: {
                size_t len = 1u << 20;
                r[i].resp = malloc(len + 1);
                if (r[i].resp) {
                    memset(r[i].resp, '1', len);
                    r[i].resp[len] = 0;
                }
                break;
            }
            case K_NULL_ANSWER:
                r[i].resp = NULL;
                break;
            default:
                r[i].resp = strdup(s->wrong);
                break;
            }
            break;
        case PAM_ERROR_MSG:
            s->t->errors++;
            break;
        case PAM_TEXT_INFO:
            s->t->infos++;
            break;
        default:
            break;
        }
    }
    *resp = r;
    return PAM_SUCCESS;
}

static void record(struct tally *t, int code)
{
    t->calls++;
    for (int i = 0; i < t->ncodes; i++)
        if (t->codes[i] == code)
            return;
    if (t->ncodes < 64)
        t->codes[t->ncodes++] = code;
}

static void on_alarm(int sig)
{
    (void)sig;
}

static const char *g_service, *g_user, *g_strict_service, *g_strict_user;
static const char *g_right, *g_wrong;

/* One pam_start/pam_authenticate/pam_end cycle; returns the code. */
static int login(enum kind k)
{
    struct script s = {k, g_right, g_wrong, &tallies[k]};
    struct pam_conv pc = {conv, &s};
    if (k == K_NO_CONV)
        pc.conv = NULL;
    const char *service = g_service, *user = g_user;
    if (k == K_LOCKED_LOUD || k == K_LOCKED_SILENT) {
        service = g_strict_service;
        user = g_strict_user;
    }
    pam_handle_t *pamh = NULL;
    int rc = pam_start(service, user, &pc, &pamh);
    if (rc != PAM_SUCCESS) {
        printf("pam_start %s failed: %d\n", kind_name[k], rc);
        return 1000 + rc;
    }
    int flags = (k == K_SILENT_WRONG || k == K_LOCKED_SILENT) ? PAM_SILENT : 0;
    rc = pam_authenticate(pamh, flags);
    pam_end(pamh, rc);
    return rc;
}

static void print_tally(enum kind k)
{
    struct tally *t = &tallies[k];
    printf("kind %s calls=%d codes=", kind_name[k], t->calls);
    for (int i = 0; i < t->ncodes; i++)
        printf("%s%d", i ? "," : "", t->codes[i]);
    printf(" prompts=%d infos=%d errors=%d\n", t->prompts, t->infos, t->errors);
}

int main(int argc, char **argv)
{
    if (argc != 11 && !(argc == 12 && strcmp(argv[11], "sabotage") == 0)) {
        fprintf(stderr, "usage: %s SERVICE USER RIGHT_CODE WRONG_CODE STRICT_SERVICE "
                        "STRICT_USER MODULE_SO ITERATIONS DLOPEN_CYCLES UMASK_OCTAL [sabotage]\n",
                argv[0]);
        return 2;
    }
    g_service = argv[1];
    g_user = argv[2];
    g_right = argv[3];
    g_wrong = argv[4];
    g_strict_service = argv[5];
    g_strict_user = argv[6];
    const char *module = argv[7];
    g_module_name = strrchr(module, '/') ? strrchr(module, '/') + 1 : module;
    int iterations = atoi(argv[8]);
    int cycles = atoi(argv[9]);
    umask((mode_t)strtol(argv[10], NULL, 8));
    setvbuf(stdout, NULL, _IOLBF, 0);

    struct lines before = {0}, after = {0};
    snapshot(&before);

    /* A right code first: the module writes the state file. */
    mode_t mask_before = current_umask();
    record(&tallies[K_SUCCESS], login(K_SUCCESS));
    mode_t mask_after = current_umask();
    printf("umask-around-success before=%04o after=%04o\n", (unsigned)mask_before,
           (unsigned)mask_after);

    /* No conversation function at all: first in a child (a crash would
     * otherwise end the run), then in this process if the child survived. */
    int no_conv_safe = 0;
    pid_t pid = fork();
    if (pid == 0) {
        int rc = login(K_NO_CONV);
        _exit(rc == PAM_SUCCESS ? 100 : (rc > 99 ? 99 : rc));
    } else if (pid > 0) {
        int st = 0;
        waitpid(pid, &st, 0);
        if (WIFSIGNALED(st))
            printf("no-conv child killed by signal %d\n", WTERMSIG(st));
        else
            no_conv_safe = WEXITSTATUS(st) != 100;
    }

    enum kind loop[] = {K_WRONG,      K_SILENT_WRONG, K_BACKUP_LIKE,  K_MEGABYTE,
                        K_NULL_ANSWER, K_CONV_ERR,    K_NO_CONV,      K_LOCKED_LOUD,
                        K_LOCKED_SILENT};
    size_t nloop = sizeof loop / sizeof loop[0];
    for (int i = 0; i < iterations; i++) {
        enum kind k = loop[(size_t)i % nloop];
        if (k == K_NO_CONV && !no_conv_safe)
            continue;
        record(&tallies[k], login(k));
    }

    /* The other five entry points, once, on one handle. */
    {
        struct script s = {K_WRONG, g_right, g_wrong, &tallies[K_WRONG]};
        struct pam_conv pc = {conv, &s};
        pam_handle_t *pamh = NULL;
        if (pam_start(g_service, g_user, &pc, &pamh) == PAM_SUCCESS) {
            int sc = pam_setcred(pamh, PAM_ESTABLISH_CRED);
            int am = pam_acct_mgmt(pamh, 0);
            int os = pam_open_session(pamh, 0);
            int cs = pam_close_session(pamh, 0);
            int ct = pam_chauthtok(pamh, PAM_CHANGE_EXPIRED_AUTHTOK);
            printf("entry setcred=%d acct_mgmt=%d open_session=%d close_session=%d "
                   "chauthtok=%d\n",
                   sc, am, os, cs, ct);
            pam_end(pamh, PAM_SUCCESS);
        }
    }

    /* dlopen/dlclose of the module itself. */
    static const char *entries[] = {"pam_sm_authenticate", "pam_sm_setcred",
                                    "pam_sm_acct_mgmt",    "pam_sm_open_session",
                                    "pam_sm_close_session", "pam_sm_chauthtok"};
    int missing = 0, failures = 0;
    for (int i = 0; i < cycles; i++) {
        void *h = dlopen(module, RTLD_NOW | RTLD_LOCAL);
        if (!h) {
            if (failures++ == 0)
                printf("dlopen failed: %s\n", dlerror());
            continue;
        }
        for (size_t e = 0; e < sizeof entries / sizeof entries[0]; e++)
            if (!dlsym(h, entries[e])) {
                if (missing++ == 0)
                    printf("dlsym %s failed\n", entries[e]);
            }
        if (dlclose(h) != 0)
            failures++;
    }
    printf("dlopen cycles=%d missing=%d failures=%d\n", cycles, missing, failures);

    for (int k = 0; k < K_COUNT; k++)
        print_tally((enum kind)k);

    if (argc == 12) {
        if (open("/dev/null", O_RDONLY) < 0 || setenv("HYGIENE_SABOTAGE", "1", 1) != 0 ||
            chdir("/") != 0 || signal(SIGALRM, on_alarm) == SIG_ERR) {
            perror("sabotage");
            return 2;
        }
        umask(077);
        /* Keeps a second reference: the module stays mapped. */
        if (!dlopen(module, RTLD_NOW | RTLD_LOCAL)) {
            fprintf(stderr, "sabotage dlopen: %s\n", dlerror());
            return 2;
        }
        /* Only root can change its saved uid (and stays root). */
        int uid_changed = geteuid() == 0 && setresuid((uid_t)-1, (uid_t)-1, 65534) == 0;
        printf("sabotage uid=%s\n", uid_changed ? "yes" : "no");
    }

    snapshot(&after);
    int changes = diff(&before, &after);
    printf("hygiene %s\n", changes ? "CHANGED" : "unchanged");
    return changes ? 1 : 0;
}
