/* The algorithm's side of tests/infra/test_algorithm_capabilities.py, compiled with gcc -static and
 * run as a container's process by real runc. Every mode prints one line and exits 0 when what it
 * tried worked, 1 when it was refused (the line says how).
 *
 *   escalate                  setgid(0); setuid(0); print the ids (a file-capped copy of this binary
 *                             is the hostile ENTRYPOINT / HEALTHCHECK)
 *   caps                      print CapInh/CapPrm/CapEff/CapBnd/CapAmb, NoNewPrivs and Groups of itself
 *   connect HOST PORT         TCP connect, read the answer
 *   serve-tcp PORT            listen on 127.0.0.1:PORT, answer "ok" to every client (until killed)
 *   serve-abstract NAME       listen on the abstract Unix socket "\0NAME", answer "ok"
 *   connect-abstract NAME     connect to "\0NAME", read the answer
 *   self-loopback PORT        listen on 127.0.0.1:PORT and connect to it from the same process
 *   netdevs                   print the network interfaces this process sees (/proc/net/dev)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static int refused(const char *what) {
    printf("refused: %s: %s\n", what, strerror(errno));
    return 1;
}

static int escalate(void) {
    int gid_rc = setgid(0);
    int gid_errno = gid_rc ? errno : 0;
    int uid_rc = setuid(0);
    int uid_errno = uid_rc ? errno : 0;
    printf("setgid=%s setuid=%s uid=%d euid=%d gid=%d\n", gid_rc ? strerror(gid_errno) : "ok",
           uid_rc ? strerror(uid_errno) : "ok", (int)getuid(), (int)geteuid(), (int)getgid());
    return (getuid() == 0 || geteuid() == 0) ? 0 : 1;
}

static int caps(void) {
    FILE *status = fopen("/proc/self/status", "r");
    char line[256];
    if (!status) return refused("open /proc/self/status");
    while (fgets(line, sizeof line, status)) {
        if (!strncmp(line, "Cap", 3) || !strncmp(line, "NoNewPrivs", 10) || !strncmp(line, "Groups", 6)) {
            line[strcspn(line, "\n")] = ' ';
            fputs(line, stdout);
        }
    }
    fclose(status);
    putchar('\n');
    return 0;
}

/* Wait up to two seconds for a connect in progress or an answer. */
static int await(int fd, short events) {
    struct pollfd p = {.fd = fd, .events = events};
    int n = poll(&p, 1, 2000);
    if (n == 0) { errno = ETIMEDOUT; return -1; }
    return n < 0 ? -1 : 0;
}

static int talk(int fd, const struct sockaddr *address, socklen_t length, const char *what) {
    char answer[16] = {0};
    int error = 0;
    socklen_t size = sizeof error;
    fcntl(fd, F_SETFL, O_NONBLOCK);
    if (connect(fd, address, length) < 0 && errno != EINPROGRESS) return refused(what);
    if (await(fd, POLLOUT) < 0) return refused(what);
    getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &size);
    if (error) { errno = error; return refused(what); }
    if (await(fd, POLLIN) < 0 || read(fd, answer, sizeof answer - 1) <= 0) return refused(what);
    printf("reached: %s", answer);
    return strncmp(answer, "ok", 2) ? 1 : 0;
}

static int tcp_connect(const char *host, int port) {
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons(port)};
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return refused("socket");
    inet_pton(AF_INET, host, &address.sin_addr);
    return talk(fd, (struct sockaddr *)&address, sizeof address, "connect");
}

static socklen_t abstract_address(struct sockaddr_un *address, const char *name) {
    memset(address, 0, sizeof *address);
    address->sun_family = AF_UNIX;
    strncpy(address->sun_path + 1, name, sizeof address->sun_path - 2);
    return offsetof(struct sockaddr_un, sun_path) + 1 + strlen(name);
}

static int serve(int fd) {
    if (listen(fd, 16) < 0) return refused("listen");
    printf("ready\n");
    fflush(stdout);
    for (;;) {
        int client = accept(fd, NULL, NULL);
        if (client >= 0) {
            (void)!write(client, "ok\n", 3);
            close(client);
        }
    }
}

static int serve_tcp(int port) {
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons(port)};
    int one = 1, fd = socket(AF_INET, SOCK_STREAM, 0);
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&address, sizeof address) < 0) return refused("bind");
    return serve(fd);
}

static int serve_abstract(const char *name) {
    struct sockaddr_un address;
    socklen_t length = abstract_address(&address, name);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (bind(fd, (struct sockaddr *)&address, length) < 0) return refused("bind");
    return serve(fd);
}

static int connect_abstract(const char *name) {
    struct sockaddr_un address;
    socklen_t length = abstract_address(&address, name);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    return talk(fd, (struct sockaddr *)&address, length, "connect");
}

static int self_loopback(int port) {
    pid_t child;
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons(port)};
    int one = 1, fd = socket(AF_INET, SOCK_STREAM, 0);
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&address, sizeof address) < 0) return refused("bind");
    if (listen(fd, 4) < 0) return refused("listen");
    child = fork();
    if (child == 0) {
        int client = accept(fd, NULL, NULL);
        (void)!write(client, "ok\n", 3);
        _exit(0);
    }
    close(fd);
    return tcp_connect("127.0.0.1", port);
}

static int netdevs(void) {
    FILE *devices = fopen("/proc/net/dev", "r");
    char line[512];
    int number = 0;
    if (!devices) return refused("open /proc/net/dev");
    printf("interfaces:");
    while (fgets(line, sizeof line, devices)) {
        char *colon = strchr(line, ':');
        if (++number <= 2 || !colon) continue; /* two header lines */
        *colon = 0;
        printf(" %s", line + strspn(line, " "));
    }
    putchar('\n');
    fclose(devices);
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc >= 2 && !strcmp(argv[1], "escalate")) return escalate();
    if (argc >= 2 && !strcmp(argv[1], "caps")) return caps();
    if (argc >= 2 && !strcmp(argv[1], "netdevs")) return netdevs();
    if (argc >= 4 && !strcmp(argv[1], "connect")) return tcp_connect(argv[2], atoi(argv[3]));
    if (argc >= 3 && !strcmp(argv[1], "serve-tcp")) return serve_tcp(atoi(argv[2]));
    if (argc >= 3 && !strcmp(argv[1], "serve-abstract")) return serve_abstract(argv[2]);
    if (argc >= 3 && !strcmp(argv[1], "connect-abstract")) return connect_abstract(argv[2]);
    if (argc >= 3 && !strcmp(argv[1], "self-loopback")) return self_loopback(atoi(argv[2]));
    fprintf(stderr, "usage: see the comment at the top of oci_probe.c\n");
    return 2;
}
