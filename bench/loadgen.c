/*
 * loadgen: a closed-loop HTTP/1.1 keep-alive load generator for TCP *and Unix sockets*.
 *
 * wrk cannot connect to a Unix socket, and putting a proxy in front of one
 * (nginx, socat) would add the proxy's own cost to every request. This does
 * what `wrk -t1 -cN` does, on either kind of socket: one thread, N
 * connections, each sending the same GET and waiting for the whole response
 * (status line, headers, Content-Length body) before sending the next. It
 * counts responses and non-2xx answers and records each request's latency
 * (send to last byte) in 1 us buckets, then prints one JSON line.
 *
 * bench/throughput.py compiles it (cc -O2) and runs it against the agent and
 * against nginx on both kinds of socket, so the Unix socket figures are a ratio
 * between two servers measured by the same client, and its TCP figures can be
 * checked against wrk's on the same servers in the same run.
 *
 * usage: loadgen (-u SOCKET_PATH | -p PORT) -c CONNECTIONS -d SECONDS [-H "Name: value"] PATH
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS 1024
#define BUF_SIZE 65536
#define BUCKETS 1000000 /* 1 us each, up to 1 s; slower requests land in the last one */

struct conn {
    int fd;
    size_t have;       /* bytes of the current response read so far */
    long need;         /* total bytes of the current response, -1 until its headers are in */
    int status;
    uint64_t sent_ns;
    char buf[BUF_SIZE];
};

static uint32_t histogram[BUCKETS];
static struct conn conns[MAX_CONNS];
static char request[8192];
static size_t request_len;
static const char *unix_path;
static int tcp_port;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int open_socket(void) {
    int fd;
    if (unix_path) {
        struct sockaddr_un addr = {.sun_family = AF_UNIX};
        strncpy(addr.sun_path, unix_path, sizeof(addr.sun_path) - 1);
        fd = socket(AF_UNIX, SOCK_STREAM, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) return -1;
    } else {
        struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)tcp_port)};
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        int one = 1;
        fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) return -1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    return fd;
}

static int send_request(struct conn *c) {
    c->have = 0;
    c->need = -1;
    c->sent_ns = now_ns();
    size_t off = 0;
    while (off < request_len) { /* a few hundred bytes: the socket buffer takes them at once */
        ssize_t n = write(c->fd, request + off, request_len - off);
        if (n <= 0) return -1;
        off += (size_t)n;
    }
    return 0;
}

/* Once the headers are in: the status and the whole response's length (headers + Content-Length). */
static int parse_head(struct conn *c) {
    char *end = memmem(c->buf, c->have, "\r\n\r\n", 4);
    if (!end) return c->have < BUF_SIZE ? 0 : -1;
    if (c->have < 12 || memcmp(c->buf, "HTTP/1.", 7) != 0) return -1;
    c->status = atoi(c->buf + 9);
    long length = 0;
    for (char *line = memchr(c->buf, '\n', (size_t)(end - c->buf)); line && line < end;
         line = memchr(line + 1, '\n', (size_t)(end - line))) {
        if (strncasecmp(line + 1, "content-length:", 15) == 0) length = atol(line + 16);
    }
    c->need = (long)(end + 4 - c->buf) + length;
    if (c->need > BUF_SIZE) return -1;
    return 0;
}

int main(int argc, char **argv) {
    int connections = 1, seconds = 10, opt;
    const char *header = NULL;
    while ((opt = getopt(argc, argv, "u:p:c:d:H:")) != -1) {
        switch (opt) {
        case 'u': unix_path = optarg; break;
        case 'p': tcp_port = atoi(optarg); break;
        case 'c': connections = atoi(optarg); break;
        case 'd': seconds = atoi(optarg); break;
        case 'H': header = optarg; break;
        default: goto usage;
        }
    }
    if (optind != argc - 1 || (!unix_path && !tcp_port) || connections < 1 || connections > MAX_CONNS) {
    usage:
        fprintf(stderr, "usage: loadgen (-u SOCKET | -p PORT) -c CONNS -d SECONDS [-H 'Name: value'] PATH\n");
        return 2;
    }
    char host[64] = "localhost"; /* what curl sends on a Unix socket; on TCP, what wrk sends */
    if (!unix_path) snprintf(host, sizeof(host), "127.0.0.1:%d", tcp_port);
    request_len = (size_t)snprintf(request, sizeof(request), "GET %s HTTP/1.1\r\nHost: %s\r\n%s%s\r\n", argv[optind],
                                   host, header ? header : "", header ? "\r\n" : "");
    int ep = epoll_create1(0);
    for (int i = 0; i < connections; i++) {
        conns[i].fd = open_socket();
        if (conns[i].fd < 0) { perror("connect"); return 1; }
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &conns[i]};
        epoll_ctl(ep, EPOLL_CTL_ADD, conns[i].fd, &ev);
    }
    uint64_t start = now_ns(), stop = start + (uint64_t)seconds * 1000000000u;
    uint64_t done = 0, non2xx = 0, errors = 0;
    for (int i = 0; i < connections; i++)
        if (send_request(&conns[i]) < 0) { perror("write"); return 1; }
    struct epoll_event events[MAX_CONNS];
    int open = connections;
    while (open > 0) {
        int n = epoll_wait(ep, events, MAX_CONNS, 100);
        uint64_t t = now_ns();
        for (int i = 0; i < n; i++) {
            struct conn *c = events[i].data.ptr;
            ssize_t got = read(c->fd, c->buf + c->have, BUF_SIZE - c->have);
            int bad = got <= 0; /* closed by the server, or an error */
            if (!bad) {
                c->have += (size_t)got;
                if (c->need < 0) bad = parse_head(c) < 0;
            }
            if (!bad && (c->need < 0 || c->have < (size_t)c->need)) continue; /* more to come */
            if (bad || c->have > (size_t)c->need) { /* a broken answer, or bytes nobody asked for */
                errors++;
                close(c->fd);
                open--;
                continue;
            }
            uint64_t us = (t - c->sent_ns) / 1000;
            histogram[us < BUCKETS ? us : BUCKETS - 1]++;
            done++;
            if (c->status < 200 || c->status > 299) non2xx++;
            if (t >= stop) { close(c->fd); open--; continue; }
            if (send_request(c) < 0) { errors++; close(c->fd); open--; }
        }
        if (n == 0 && now_ns() > stop + 5000000000u) break; /* a server that stopped answering */
    }
    double elapsed = (double)(now_ns() - start) / 1e9;
    uint64_t p50 = 0, p99 = 0, seen = 0;
    for (uint64_t us = 0; us < BUCKETS; us++) {
        seen += histogram[us];
        if (!p50 && seen * 100 >= done * 50) p50 = us + 1;
        if (!p99 && seen * 100 >= done * 99) { p99 = us + 1; break; }
    }
    printf("{\"requests\": %lu, \"seconds\": %.3f, \"rps\": %.1f, \"p50_ms\": %.3f, \"p99_ms\": %.3f, "
           "\"non_2xx\": %lu, \"errors\": %lu}\n",
           (unsigned long)done, elapsed, done / elapsed, p50 / 1000.0, p99 / 1000.0, (unsigned long)non2xx,
           (unsigned long)errors);
    return 0;
}
