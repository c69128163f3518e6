/*
 * Measures the round trip of a 64-byte message between two processes over
 * a Unix socketpair: the floor under any request to a cell on this
 * machine, with no TLS, OpenSSL or keycell code involved.
 *
 * Usage: keycell-ipc-floor [COUNT]   (default 20000 round trips)
 */
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_seconds(void) {
  struct timespec time;
  clock_gettime(CLOCK_MONOTONIC, &time);
  return (double)time.tv_sec + (double)time.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
  int count = argc > 1 ? atoi(argv[1]) : 20000;
  if (count <= 0) {
    fprintf(stderr, "usage: %s [COUNT]\n", argv[0]);
    return 2;
  }
  int pair[2];
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, pair) != 0) {
    perror("socketpair");
    return 1;
  }
  char message[64] = {0};
  pid_t echo = fork();
  if (echo == 0) {
    close(pair[0]);
    while (read(pair[1], message, sizeof(message)) > 0) {
      if (write(pair[1], message, sizeof(message)) < 0) {
        break;
      }
    }
    _exit(0);
  }
  close(pair[1]);

  double start = now_seconds();
  for (int i = 0; i < count; i++) {
    struct pollfd readable = {pair[0], POLLIN, 0};
    if (write(pair[0], message, sizeof(message)) < 0 ||
        poll(&readable, 1, -1) != 1 ||
        read(pair[0], message, sizeof(message)) <= 0) {
      perror("round trip");
      return 1;
    }
  }
  double elapsed = now_seconds() - start;
  printf("%d round trips, %.1f us each\n", count, elapsed / count * 1e6);

  close(pair[0]);
  waitpid(echo, NULL, 0);
  return 0;
}
