/*
 * pequeroku-channel: the guest's end of the node agent's persistent channel.
 *
 * Built static by scripts/build-guest-image.sh and kept running by the guest's init. It serves
 * the virtio-serial port "org.pequeroku.channel", whose host end is a unix socket only this
 * VM's QEMU serves, so the agent reaches the guest with no network, key or handshake; a VM
 * restored from a saved state finds this process (and its spare shells) running already.
 * C, one thread, one poll loop: under TCG every instruction is emulated and, after a restore,
 * every code path is translated again, so the less code a call runs the faster it answers.
 *
 * Frames, both ways: a header line "<id> <kind> <length>\n", then <length> bytes.
 * Requests (kind = op):
 *   ping                      -> ok <instance id>
 *   exec "<timeout ms> <limit>\n<command>"
 *       the command as the user's login shell runs it in the workspace (profiles read, then
 *       eval), in a spare shell started ahead of time when one waits; answers: out/err chunks
 *       (at most <limit> bytes of each stream), then exit "<code> <timed out 0|1>". After the
 *       timeout its process group gets SIGTERM, SIGKILL 2 s later (exit 124).
 *   adopt "<template id>\n<instance id>\n<host public key>\n<authorized key>\n<machine id>\n
 *          <boot id>\n<unix time>\n<random hex>\n<grow 0|1>\n<host private key>"
 *       a guest restored from a golden snapshot takes this VM's identity -> ok <instance id>,
 *       or mismatch <the id it holds> (it does not hold the template's id)
 *   time "<unix time>"        -> ok <instance id> (the clock set: it stood still while suspended)
 * Any request may be answered "error <message>". Requests run concurrently.
 * While the host end is not connected, reads return end-of-file at once: the port is then
 * tried again every 20 ms (a connected host wakes no one).
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PORT_NAME "org.pequeroku.channel"
#define INSTANCE_ID "/run/pequeroku/instance_id"
#define MAX_REQUEST (1024 * 1024)
#define MAX_JOBS 64
#define SPARES 1 /* more would start before the last command's changes */
#define SPARE_DELAY_MS 200
#define KILL_GRACE_MS 2000
#define DISCONNECTED_MS 20
#define CHUNK 65536

/* A login shell in the workspace, as `bash -l` would start: the profiles, then the command
 * (read from stdin up to a NUL) through eval. A spare reads the profiles ahead of the command
 * (PRELOADED); a shell started for a command that found no valid spare reads them after it
 * (FRESH). */
#define IN_WORKSPACE "cd \"$PEQUEROKU_WORKSPACE\" || exit 1\nunset PEQUEROKU_WORKSPACE\n"
#define PROFILES                                                                                \
    "[ -r /etc/profile ] && . /etc/profile\n"                                                   \
    "if [ -r ~/.bash_profile ]; then . ~/.bash_profile\n"                                       \
    "elif [ -r ~/.bash_login ]; then . ~/.bash_login\n"                                         \
    "elif [ -r ~/.profile ]; then . ~/.profile; fi\n"
#define READ_COMMAND "IFS= read -r -d '' __pequeroku_cmd || exit 1\n"
#define RUN_COMMAND "eval \"unset __pequeroku_cmd; $__pequeroku_cmd\"\n"
static const char PRELOADED[] = IN_WORKSPACE PROFILES READ_COMMAND RUN_COMMAND;
static const char FRESH[] = READ_COMMAND IN_WORKSPACE PROFILES RUN_COMMAND;
/* What the profiles read: a spare started before one of them changed is not used. */
static const char *PROFILE_FILES[] = {
    "/etc/profile", "/etc/profile.d", "/etc/bash.bashrc", "/etc/environment", ".bash_profile",
    ".bash_login", ".profile", ".bashrc", NULL,
};

static char workspace_env[4200] = "PEQUEROKU_WORKSPACE=/app";
static char home_env[4200] = "HOME=/root";
/* What sshd gives a session of root (the other way into this guest), before the profiles. */
static char *session_env[] = {
    home_env, "USER=root", "LOGNAME=root", "SHELL=/bin/bash", "MAIL=/var/mail/root",
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", workspace_env, NULL,
};

struct shell {
    pid_t pid;
    int in, out, err;
    long long started; /* wall clock, ns: compared with the profiles' change times */
};

struct job {
    int used;
    unsigned long long id;
    struct shell sh;
    size_t limit, sent_out, sent_err;
    long long deadline;
    int signals_sent, exited, status, timed_out;
};

static int port = -1;
static struct job jobs[MAX_JOBS];
static struct shell spares[SPARES];
static int n_spares;
static long long refill_at = -1;
static long long last_exec_end; /* wall clock, ns */

static long long wall_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static long long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void write_all(int fd, const char *data, size_t len) {
    while (len > 0) {
        ssize_t n = write(fd, data, len);
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN) continue;
            return; /* the port went away: nobody is left to answer */
        }
        data += n;
        len -= (size_t)n;
    }
}

static void send_frame(unsigned long long id, const char *kind, const char *data, size_t len) {
    char header[96];
    int n = snprintf(header, sizeof header, "%llu %s %zu\n", id, kind, len);
    /* One write per frame when it fits: a frame never interleaves with another. */
    if (len <= CHUNK) {
        static char frame[CHUNK + 96];
        memcpy(frame, header, (size_t)n);
        if (len) memcpy(frame + n, data, len);
        write_all(port, frame, (size_t)n + len);
        return;
    }
    write_all(port, header, (size_t)n);
    write_all(port, data, len);
}

static void send_text(unsigned long long id, const char *kind, const char *fmt, ...) {
    char text[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    if (n < 0) n = 0;
    if ((size_t)n >= sizeof text) n = sizeof text - 1;
    send_frame(id, kind, text, (size_t)n);
}

static ssize_t read_file(const char *path, char *buf, size_t size) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    size_t got = 0;
    while (got < size - 1) {
        ssize_t n = read(fd, buf + got, size - 1 - got);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        got += (size_t)n;
    }
    close(fd);
    buf[got] = 0;
    return (ssize_t)got;
}

static void strip(char *s) {
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1])) s[--n] = 0;
}

static int write_file(const char *path, const char *data, size_t len, mode_t mode) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, mode);
    if (fd < 0) return -1;
    write_all(fd, data, len);
    fchmod(fd, mode);
    return close(fd);
}

static int write_line(const char *path, const char *text, mode_t mode) {
    char buf[8192];
    int n = snprintf(buf, sizeof buf, "%s\n", text);
    if (n < 0 || (size_t)n >= sizeof buf) return -1;
    return write_file(path, buf, (size_t)n, mode);
}

/* A child starts with the signal mask and dispositions a shell would get (an ignored signal
 * stays ignored across exec). */
static void reset_signals(void) {
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    signal(SIGPIPE, SIG_DFL);
}

/* A login shell waiting for its command on stdin (up to a NUL), in a session of its own. */
static int start_shell(struct shell *sh, const char *script) {
    int in[2], out[2], err[2];
    if (pipe2(in, O_CLOEXEC) < 0) return -1;
    if (pipe2(out, O_CLOEXEC) < 0) {
        close(in[0]), close(in[1]);
        return -1;
    }
    if (pipe2(err, O_CLOEXEC) < 0) {
        close(in[0]), close(in[1]), close(out[0]), close(out[1]);
        return -1;
    }
    pid_t pid = fork();
    if (pid == 0) {
        reset_signals();
        setsid();
        dup2(in[0], 0), dup2(out[1], 1), dup2(err[1], 2);
        if (chdir("/") < 0) _exit(127);
        char *argv[] = {"bash", "-c", (char *)script, NULL};
        execve("/bin/bash", argv, session_env);
        _exit(127);
    }
    close(in[0]), close(out[1]), close(err[1]);
    if (pid < 0) {
        close(in[1]), close(out[0]), close(err[0]);
        return -1;
    }
    sh->pid = pid, sh->in = in[1], sh->out = out[0], sh->err = err[0];
    sh->started = wall_ns();
    return 0;
}

static void close_shell(struct shell *sh) {
    if (sh->in >= 0) close(sh->in);
    if (sh->out >= 0) close(sh->out);
    if (sh->err >= 0) close(sh->err);
    sh->in = sh->out = sh->err = -1;
}

static void refill_spares(void) {
    while (n_spares < SPARES && start_shell(&spares[n_spares], PRELOADED) == 0) n_spares++;
}

static void drop_spare(int i) {
    kill(-spares[i].pid, SIGKILL); /* reaped with the others */
    close_shell(&spares[i]);
    memmove(&spares[i], &spares[i + 1], sizeof(struct shell) * (size_t)(n_spares - i - 1));
    n_spares--;
}

/* The newest change to what the profiles read (0 if none can be seen). */
static long long profiles_changed(void) {
    long long newest = 0;
    const char *home = home_env + strlen("HOME=");
    for (int i = 0; PROFILE_FILES[i]; i++) {
        char path[4400];
        const char *name = PROFILE_FILES[i];
        if (name[0] == '/') snprintf(path, sizeof path, "%s", name);
        else snprintf(path, sizeof path, "%s/%s", home, name);
        struct stat st;
        if (stat(path, &st) < 0) continue;
        long long m = (long long)st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec;
        long long c = (long long)st.st_ctim.tv_sec * 1000000000LL + st.st_ctim.tv_nsec;
        if (m > newest) newest = m;
        if (c > newest) newest = c;
    }
    return newest;
}

/* A spare is what a shell started now would be as long as it started after the last command
 * ended (whatever that command changed, it saw) and after the profiles last changed. */
static int take_spare(struct shell *sh) {
    long long changed = profiles_changed();
    while (n_spares > 0) {
        if (spares[0].started > last_exec_end && spares[0].started > changed) {
            *sh = spares[0];
            memmove(&spares[0], &spares[1], sizeof(struct shell) * (size_t)(--n_spares));
            return 0;
        }
        drop_spare(0);
    }
    return -1;
}

static void do_exec(unsigned long long id, char *payload, size_t len) {
    char *nl = memchr(payload, '\n', len);
    long long timeout_ms;
    size_t limit;
    if (!nl || sscanf(payload, "%lld %zu", &timeout_ms, &limit) != 2) {
        send_text(id, "error", "bad exec request");
        return;
    }
    char *cmd = nl + 1;
    size_t cmd_len = strnlen(cmd, len - (size_t)(cmd - payload)); /* a NUL ends the command */
    struct job *job = NULL;
    for (int i = 0; i < MAX_JOBS; i++)
        if (!jobs[i].used) {
            job = &jobs[i];
            break;
        }
    if (!job) {
        send_text(id, "error", "too many commands at once");
        return;
    }
    memset(job, 0, sizeof *job);
    if (take_spare(&job->sh) < 0 && start_shell(&job->sh, FRESH) < 0) {
        send_text(id, "error", "cannot start a shell: %s", strerror(errno));
        return;
    }
    job->used = 1, job->id = id, job->limit = limit;
    job->deadline = now_ms() + timeout_ms;
    write_all(job->sh.in, cmd, cmd_len);
    write_all(job->sh.in, "", 1);
    close(job->sh.in);
    job->sh.in = -1;
}

static void finish(struct job *job) {
    int code;
    if (job->timed_out) code = 124;
    else if (WIFEXITED(job->status)) code = WEXITSTATUS(job->status);
    else if (WIFSIGNALED(job->status)) code = 128 + WTERMSIG(job->status);
    else code = -1;
    send_text(job->id, "exit", "%d %d", code, job->timed_out);
    close_shell(&job->sh);
    job->used = 0;
    last_exec_end = wall_ns();
    while (n_spares > 0) drop_spare(0); /* they started before this command's changes */
    refill_at = now_ms() + SPARE_DELAY_MS;
}

static void grow_root(void) {
    pid_t pid = fork();
    if (pid == 0) {
        reset_signals();
        setsid();
        int null = open("/dev/null", O_RDWR);
        dup2(null, 0), dup2(null, 1), dup2(null, 2);
        setpriority(PRIO_PROCESS, 0, 19);
        char *argv[] = {"resize2fs", "/dev/vda", NULL};
        execve("/sbin/resize2fs", argv, session_env);
        _exit(127);
    }
}

static char *next_line(char **cursor) {
    char *line = *cursor, *nl = strchr(line, '\n');
    if (nl) *nl = 0, *cursor = nl + 1;
    else *cursor = line + strlen(line);
    return line;
}

static int set_clock(const char *text) {
    double seconds = strtod(text, NULL);
    struct timespec ts = {(time_t)seconds, (long)((seconds - (double)(time_t)seconds) * 1e9)};
    return seconds > 0 ? clock_settime(CLOCK_REALTIME, &ts) : -1;
}

/* The private host key is the payload's tail (several lines); the rest one line each. */
static void do_adopt(unsigned long long id, char *payload) {
    char *cursor = payload;
    char *template_id = next_line(&cursor), *instance_id = next_line(&cursor);
    char *public_key = next_line(&cursor), *authorized = next_line(&cursor);
    char *machine_id = next_line(&cursor), *boot_id = next_line(&cursor);
    char *now = next_line(&cursor), *entropy = next_line(&cursor), *grow = next_line(&cursor);
    char *host_key = cursor, seen[256];
    if (read_file(INSTANCE_ID, seen, sizeof seen) < 0) seen[0] = 0;
    strip(seen);
    if (strcmp(seen, template_id) != 0) {
        send_text(id, "mismatch", "%s", seen);
        return;
    }
    int fd = open("/dev/urandom", O_WRONLY | O_CLOEXEC);
    if (fd >= 0) write_all(fd, entropy, strlen(entropy)), close(fd);
    set_clock(now);
    if (write_file("/etc/ssh/ssh_host_ed25519_key", host_key, strlen(host_key), 0600) < 0 ||
        write_line("/etc/ssh/ssh_host_ed25519_key.pub", public_key, 0644) < 0 ||
        write_line("/root/.ssh/authorized_keys", authorized, 0600) < 0 ||
        write_line("/etc/machine-id", machine_id, 0444) < 0 ||
        write_line("/run/pequeroku/boot_id", boot_id, 0444) < 0) {
        send_text(id, "error", "identity files: %s", strerror(errno));
        return;
    }
    if (mount("/run/pequeroku/boot_id", "/proc/sys/kernel/random/boot_id", NULL, MS_BIND,
              NULL) < 0) {
        send_text(id, "error", "boot id: %s", strerror(errno));
        return;
    }
    sethostname("pequeroku", 9);
    write_file(INSTANCE_ID, instance_id, strlen(instance_id), 0644);
    if (strcmp(grow, "1") == 0) grow_root();
    send_text(id, "ok", "%s", instance_id);
}

static void handle(unsigned long long id, const char *op, char *payload, size_t len) {
    if (strcmp(op, "ping") == 0) {
        char seen[256];
        if (read_file(INSTANCE_ID, seen, sizeof seen) < 0) seen[0] = 0;
        strip(seen);
        send_text(id, "ok", "%s", seen);
    } else if (strcmp(op, "exec") == 0) {
        do_exec(id, payload, len);
    } else if (strcmp(op, "adopt") == 0) {
        do_adopt(id, payload);
    } else if (strcmp(op, "time") == 0) {
        char seen[256];
        if (read_file(INSTANCE_ID, seen, sizeof seen) < 0) seen[0] = 0;
        strip(seen);
        if (set_clock(payload) < 0) send_text(id, "error", "time: %s", strerror(errno));
        else send_text(id, "ok", "%s", seen);
    } else {
        send_text(id, "error", "unknown op");
    }
}

static char *inbox;
static size_t inbox_len;

/* Every complete request in the inbox; a line that is not a header is skipped (what an earlier
 * host left half written). */
static void take_requests(void) {
    size_t at = 0;
    while (at < inbox_len) {
        char *start = inbox + at, *nl = memchr(start, '\n', inbox_len - at);
        if (!nl) {
            if (inbox_len - at > 128) at = inbox_len; /* no header is that long */
            break;
        }
        unsigned long long id;
        char op[16];
        size_t len;
        *nl = 0;
        int ok = sscanf(start, "%llu %15s %zu", &id, op, &len) == 3 && len <= MAX_REQUEST;
        *nl = '\n';
        size_t header = (size_t)(nl - start) + 1;
        if (!ok) {
            at += header;
            continue;
        }
        if (inbox_len - at - header < len) break; /* the payload is still coming */
        char *payload = malloc(len + 1);
        if (!payload) break;
        memcpy(payload, start + header, len);
        payload[len] = 0;
        at += header + len;
        handle(id, op, payload, len);
        free(payload);
    }
    memmove(inbox, inbox + at, inbox_len - at);
    inbox_len -= at;
}

static void reap(void) {
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        for (int i = 0; i < MAX_JOBS; i++)
            if (jobs[i].used && jobs[i].sh.pid == pid) jobs[i].exited = 1, jobs[i].status = status;
        for (int i = 0; i < n_spares; i++)
            if (spares[i].pid == pid) {
                drop_spare(i);
                break;
            }
    }
}

static void pump(struct job *job, int *fd, size_t *sent, const char *kind) {
    static char buf[CHUNK];
    ssize_t n = read(*fd, buf, sizeof buf);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) return;
    if (n <= 0) {
        close(*fd);
        *fd = -1;
        return;
    }
    if (*sent < job->limit) {
        size_t keep = (size_t)n < job->limit - *sent ? (size_t)n : job->limit - *sent;
        send_frame(job->id, kind, buf, keep);
        *sent += keep;
    }
}

/* Time is up while the command runs or something still holds its output: its process group
 * gets SIGTERM, then SIGKILL; after that, what still holds the output (a process that left the
 * session) is not waited for. */
static void check_deadlines(long long now) {
    for (int i = 0; i < MAX_JOBS; i++) {
        struct job *job = &jobs[i];
        if (!job->used || now < job->deadline) continue;
        job->timed_out = 1;
        if (job->signals_sent < 2) {
            kill(-job->sh.pid, job->signals_sent == 0 ? SIGTERM : SIGKILL);
            job->signals_sent++;
            job->deadline = now + KILL_GRACE_MS;
        } else {
            finish(job);
        }
    }
}

static int find_port(char *path, size_t size) {
    DIR *dir = opendir("/sys/class/virtio-ports");
    if (!dir) return -1;
    struct dirent *entry;
    int found = -1;
    while ((entry = readdir(dir))) {
        char name_path[512], name[128];
        if (entry->d_name[0] == '.') continue;
        snprintf(name_path, sizeof name_path, "/sys/class/virtio-ports/%s/name", entry->d_name);
        if (read_file(name_path, name, sizeof name) < 0) continue;
        strip(name);
        if (strcmp(name, PORT_NAME) == 0) {
            snprintf(path, size, "/dev/%s", entry->d_name);
            found = 0;
            break;
        }
    }
    closedir(dir);
    return found;
}

int main(int argc, char **argv) {
    /* Tests on a host: --fd N (one end of a socket pair), --workspace DIR, --home DIR. */
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--fd") == 0) port = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--workspace") == 0)
            snprintf(workspace_env, sizeof workspace_env, "PEQUEROKU_WORKSPACE=%s", argv[i + 1]);
        else if (strcmp(argv[i], "--home") == 0)
            snprintf(home_env, sizeof home_env, "HOME=%s", argv[i + 1]);
    }
    if (port < 0) {
        char path[300];
        for (int tries = 0; tries < 200 && port < 0; tries++) {
            if (find_port(path, sizeof path) == 0) port = open(path, O_RDWR | O_CLOEXEC);
            if (port < 0) usleep(50000);
        }
        if (port < 0) {
            fprintf(stderr, "pequeroku-channel: no port %s\n", PORT_NAME);
            sleep(60); /* init respawns it: not in a tight loop */
            return 1;
        }
    }
    int flags = fcntl(port, F_GETFL);
    fcntl(port, F_SETFL, flags & ~O_NONBLOCK);
    /* Init may start this at a low priority (a cold boot's sshd first); commands run at 0. */
    setpriority(PRIO_PROCESS, 0, 0);
    signal(SIGPIPE, SIG_IGN);
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    sigprocmask(SIG_BLOCK, &chld, NULL);
    int sigfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
    inbox = malloc(MAX_REQUEST + 256);
    if (!inbox || sigfd < 0) return 1;
    for (int i = 0; i < MAX_JOBS; i++) jobs[i].sh.in = jobs[i].sh.out = jobs[i].sh.err = -1;
    long long retry_port_at = 0; /* spares are started after the first command, not at boot */

    for (;;) {
        struct pollfd fds[2 + 2 * MAX_JOBS];
        struct job *owner[2 + 2 * MAX_JOBS];
        int n = 0;
        long long now = now_ms();
        int port_polled = now >= retry_port_at;
        if (port_polled) fds[n] = (struct pollfd){port, POLLIN, 0}, owner[n++] = NULL;
        fds[n] = (struct pollfd){sigfd, POLLIN, 0}, owner[n++] = NULL;
        long long wake = -1;
        for (int i = 0; i < MAX_JOBS; i++) {
            struct job *job = &jobs[i];
            if (!job->used) continue;
            if (job->sh.out >= 0) fds[n] = (struct pollfd){job->sh.out, POLLIN, 0}, owner[n++] = job;
            if (job->sh.err >= 0) fds[n] = (struct pollfd){job->sh.err, POLLIN, 0}, owner[n++] = job;
            if (wake < 0 || job->deadline < wake) wake = job->deadline;
        }
        if (refill_at >= 0 && (wake < 0 || refill_at < wake)) wake = refill_at;
        if (!port_polled && (wake < 0 || retry_port_at < wake)) wake = retry_port_at;
        int timeout = wake < 0 ? -1 : (int)(wake > now ? wake - now : 0);
        if (poll(fds, (nfds_t)n, timeout) < 0 && errno != EINTR) return 1;

        for (int i = 0; i < n; i++) {
            if (!fds[i].revents) continue;
            if (owner[i]) {
                struct job *job = owner[i];
                if (fds[i].fd == job->sh.out) pump(job, &job->sh.out, &job->sent_out, "out");
                else if (fds[i].fd == job->sh.err) pump(job, &job->sh.err, &job->sent_err, "err");
            } else if (fds[i].fd == sigfd) {
                struct signalfd_siginfo info;
                while (read(sigfd, &info, sizeof info) > 0) {
                }
                reap();
            } else if (fds[i].fd == port) {
                ssize_t got = read(port, inbox + inbox_len, MAX_REQUEST + 256 - inbox_len);
                if (got > 0) {
                    inbox_len += (size_t)got;
                    take_requests();
                    if (inbox_len >= MAX_REQUEST + 256) inbox_len = 0;
                } else if (got == 0 || errno != EINTR) {
                    inbox_len = 0; /* no host: a half request must not start the next one's */
                    retry_port_at = now_ms() + DISCONNECTED_MS;
                }
            }
        }
        reap();
        now = now_ms();
        for (int i = 0; i < MAX_JOBS; i++) {
            struct job *job = &jobs[i];
            if (job->used && job->exited && job->sh.out < 0 && job->sh.err < 0) finish(job);
        }
        check_deadlines(now);
        if (refill_at >= 0 && now >= refill_at) {
            refill_at = -1;
            refill_spares();
        }
    }
}
