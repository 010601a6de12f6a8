// The floor under any HTTP/1.1 keep-alive proxy in the shared harness (benches/ab.sh FLOOR=1):
// every client connection gets its own upstream connection when it is accepted, and bytes are
// copied both ways with no HTTP at all (no parsing, no header rules, no pool, no timers). It
// makes the system calls a proxy cannot avoid, one read and one write per socket per request,
// on one epoll thread, so its req/s against nginx-proxy is the most any proxy could reach on
// this machine and this topology. A measuring tool only: it checks nothing and forwards
// anything.
//
//   cc -O2 -o nullproxy nullproxy.c && taskset -c 1 ./nullproxy 9030 9001
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_FD 65536
static int peer[MAX_FD];

static struct sockaddr_in loopback(int port) {
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
  inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  return a;
}

static void watch(int ep, int fd) {
  struct epoll_event e = {.events = EPOLLIN | EPOLLET, .data.fd = fd};
  epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e);
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: %s LISTEN_PORT UPSTREAM_PORT (both on 127.0.0.1)\n", argv[0]);
    return 2;
  }
  int one = 1;
  int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  setsockopt(ls, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);  // inherited by accepted sockets
  struct sockaddr_in a = loopback(atoi(argv[1]));
  if (bind(ls, (void *)&a, sizeof a) || listen(ls, 1024)) {
    perror("listen");
    return 1;
  }
  int ep = epoll_create1(0);
  struct epoll_event lev = {.events = EPOLLIN, .data.fd = ls};
  epoll_ctl(ep, EPOLL_CTL_ADD, ls, &lev);
  struct sockaddr_in up = loopback(atoi(argv[2]));
  struct epoll_event evs[512];
  static char buf[65536];
  for (;;) {
    int n = epoll_wait(ep, evs, 512, -1);
    for (int i = 0; i < n; i++) {
      int fd = evs[i].data.fd;
      if (fd == ls) {
        int c;
        while ((c = accept4(ls, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
          int u = socket(AF_INET, SOCK_STREAM, 0);
          if (c >= MAX_FD || u < 0 || u >= MAX_FD || connect(u, (void *)&up, sizeof up)) {
            close(c);
            if (u >= 0) close(u);
            continue;
          }
          setsockopt(u, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          fcntl(u, F_SETFL, O_NONBLOCK);
          peer[c] = u;
          peer[u] = c;
          watch(ep, c);
          watch(ep, u);
        }
        continue;
      }
      // Edge-triggered, one read per readiness: the harness's requests and answers are small
      // (one short read empties the socket), which is the case this floor measures.
      ssize_t r = read(fd, buf, sizeof buf);
      if (r == 0 || (r < 0 && errno != EAGAIN)) {
        close(peer[fd]);
        close(fd);
        continue;
      }
      if (r > 0 && write(peer[fd], buf, r) != r) {
        close(peer[fd]);
        close(fd);
      }
    }
  }
}
