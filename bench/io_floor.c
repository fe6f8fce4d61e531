/*
 * io_floor: the durable update a successful login makes, and nothing else,
 * timed on the same disk, in the same directory as the module's state: the
 * floor under any module that keeps replay state durably.
 *
 * One iteration:
 *   open the directory (O_DIRECTORY), open the state file, fstat, read it,
 *   create a temp file beside it (O_CREAT|O_EXCL|O_NOFOLLOW, 0600), write the
 *   same bytes, fsync it, rename it over the state file, fsync the directory
 *   (unless -D), close everything.
 *
 * With -D the directory is not fsynced: google-authenticator's and
 * pam_oath's update (write, fsync, rename).
 *
 * With -X, ours (UserFiles::write_state, TrustedDir::write_copy): the
 * state's other copy, made once before timing, is read too, then written
 * over (O_WRONLY, no O_TRUNC; ftruncate to the length), fdatasynced and
 * swapped with the state file by renameat2(RENAME_EXCHANGE); the directory
 * is not fsynced (the copies carry a generation and a checksum instead).
 *
 * The state file (-f NAME in -d DIR) is created from -s SRC first; it is the
 * program's own file, never a module's. Times come from the raw
 * clock_gettime syscall (libfaketime cannot touch them).
 *
 * Output: one line of key=value pairs; with -o FILE, one line per timed
 * iteration (wall_ns) appended.
 *
 * Build: cc -O2 -Wall -o io_floor io_floor.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/fs.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what, const char *arg)
{
    fprintf(stderr, "io_floor: %s %s: %s\n", what, arg, strerror(errno));
    exit(3);
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    if (syscall(SYS_clock_gettime, CLOCK_MONOTONIC, &ts) != 0)
        die("clock_gettime", "");
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void write_all(int fd, const char *buf, size_t len, const char *what)
{
    while (len > 0) {
        ssize_t w = write(fd, buf, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            die("write", what);
        buf += w;
        len -= (size_t)w;
    }
}

/* Opens `name` in `dfd`, fstats and reads it (at most `cap` bytes) as a
 * login reads a state file; returns the length read. */
static ssize_t read_at(int dfd, const char *name, char *buf, size_t cap)
{
    int fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        die("open", name);
    struct stat st;
    if (fstat(fd, &st) != 0)
        die("fstat", name);
    ssize_t n = read(fd, buf, cap);
    if (n < 0)
        die("read", name);
    close(fd);
    return n;
}

/* Creates (or truncates) `path` with `len` bytes of `buf`, fsynced: the
 * files the timed updates start from. */
static void put_file(const char *path, const char *buf, size_t len)
{
    int out = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (out < 0)
        die("create", path);
    write_all(out, buf, len, path);
    if (fsync(out) != 0)
        die("fsync", path);
    close(out);
}

/* One durable update; the bytes read are written back. */
static void update(const char *dir, const char *name, const char *tmp, int dir_fsync, int spare)
{
    char buf[65536];
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        die("open", dir);
    ssize_t n = read_at(dfd, name, buf, sizeof buf);
    if (spare) {
        char other[65536];
        read_at(dfd, tmp, other, sizeof other);
    }
    int flags = O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC | (spare ? 0 : O_EXCL);
    int tfd = openat(dfd, tmp, flags, 0600);
    if (tfd < 0)
        die("create", tmp);
    write_all(tfd, buf, (size_t)n, tmp);
    if (spare && ftruncate(tfd, n) != 0)
        die("ftruncate", tmp);
    if ((spare ? fdatasync(tfd) : fsync(tfd)) != 0)
        die("fsync", tmp);
    close(tfd);
    if (spare) {
        if (syscall(SYS_renameat2, dfd, tmp, dfd, name, RENAME_EXCHANGE) != 0)
            die("renameat2", tmp);
    } else if (renameat(dfd, tmp, dfd, name) != 0)
        die("rename", tmp);
    if (dir_fsync && fsync(dfd) != 0)
        die("fsync", dir);
    close(dfd);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    const char *dir = NULL, *name = "io_floor.state", *src = NULL, *raw = NULL;
    int iters = 100, warmup = 5, dir_fsync = 1, spare = 0, opt;
    while ((opt = getopt(argc, argv, "d:f:s:n:w:o:DX")) != -1) {
        switch (opt) {
        case 'd': dir = optarg; break;
        case 'f': name = optarg; break;
        case 's': src = optarg; break;
        case 'n': iters = atoi(optarg); break;
        case 'w': warmup = atoi(optarg); break;
        case 'o': raw = optarg; break;
        case 'D': dir_fsync = 0; break;
        case 'X': spare = 1; dir_fsync = 0; break;
        default:
            fprintf(stderr, "usage: io_floor -d DIR -s SRC [-f NAME] [-n ITER] [-w WARMUP]"
                            " [-o FILE] [-D] [-X]\n"
                            "  -D  no fsync of the directory (google-authenticator's update)\n"
                            "  -X  read both copies, write over the spare, fdatasync, swap it in (ours)\n");
            return 3;
        }
    }
    if (!dir || !src || iters < 1 || warmup < 0 || strchr(name, '/'))
        return fprintf(stderr, "io_floor: -d DIR and -s SRC are needed (-h)\n"), 3;

    /* The file to update: a copy of SRC, durably in place before timing. */
    char buf[65536];
    int in = open(src, O_RDONLY | O_CLOEXEC);
    if (in < 0)
        die("open", src);
    ssize_t n = read(in, buf, sizeof buf);
    if (n < 0)
        die("read", src);
    close(in);
    char path[4096], tmp[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    snprintf(tmp, sizeof tmp, "%s.tmp-%d", name, (int)getpid());
    put_file(path, buf, (size_t)n);
    if (spare) {
        char spare_path[4096];
        snprintf(spare_path, sizeof spare_path, "%s/%s", dir, tmp);
        put_file(spare_path, buf, (size_t)n);
    }

    uint64_t *v = calloc((size_t)iters, sizeof *v);
    for (int i = 0; i < warmup + iters; i++) {
        uint64_t t0 = now_ns();
        update(dir, name, tmp, dir_fsync, spare);
        uint64_t t1 = now_ns();
        if (i >= warmup)
            v[i - warmup] = t1 - t0;
    }
    if (raw) {
        FILE *f = fopen(raw, "a");
        if (!f)
            die("open", raw);
        for (int i = 0; i < iters; i++)
            fprintf(f, "%llu\n", (unsigned long long)v[i]);
        fclose(f);
    }
    qsort(v, (size_t)iters, sizeof *v, cmp_u64);
    double median = iters % 2 ? v[iters / 2] / 1000.0 : (v[iters / 2 - 1] + v[iters / 2]) / 2000.0;
    printf("mode=floor iters=%d dir_fsync=%d spare=%d median_us=%.1f p95_us=%.1f\n", iters, dir_fsync,
           spare, median, v[(int)(0.95 * (iters - 1) + 0.5)] / 1000.0);
    unlink(path);
    if (spare) {
        char spare_path[4096];
        snprintf(spare_path, sizeof spare_path, "%s/%s", dir, tmp);
        unlink(spare_path);
    }
    return 0;
}
