"""The raw read's non-Python ceiling: the same ordered-style push consumer read by a small C
program (the NATS protocol parsed by hand on a plain TCP connection, flow control answered,
stored messages counted, nothing decoded). Compiled with the machine's ``cc`` on first use.

An extra row, not a limit the ratios are taken against: every reader of netledger is Python,
and its raw limit is the fastest Python reader (bench/history_raw.py). This row says how much
of the log's read rate the language leaves on the table (on this machine, 40,000 events:
~470-690 k events/s against ~110-130 k for the Python reader).
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import subprocess
import tempfile
from pathlib import Path

from netledger.journal.stream import Connection

SOURCE = r"""
#define _GNU_SOURCE
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* argv: host port stream subject start_seq count. Prints the seconds from the consumer's create
   request to the count-th stored message, and the count. */
static int fd;
static char *buf;
static size_t cap = 1 << 24, len = 0, pos = 0;

static void die(const char *m) { fprintf(stderr, "rawread: %s\n", m); exit(2); }

static void put(const char *s, size_t n) {
  while (n) {
    ssize_t w = write(fd, s, n);
    if (w <= 0) die("write");
    s += w; n -= (size_t)w;
  }
}

static void fill(void) {
  if (pos > 0) { memmove(buf, buf + pos, len - pos); len -= pos; pos = 0; }
  if (len == cap) die("buffer full");
  ssize_t r = read(fd, buf + len, cap - len);
  if (r <= 0) die("read");
  len += (size_t)r;
}

static char *line(size_t *end) {
  for (;;) {
    char *p = memmem(buf + pos, len - pos, "\r\n", 2);
    if (p) { *p = 0; *end = (size_t)(p - buf) + 2; return buf + pos; }
    fill();
  }
}

static double now(void) {
  struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
  if (argc != 7) die("usage: host port stream subject start_seq count");
  long start = atol(argv[5]), want = atol(argv[6]), got = 0;
  struct addrinfo hints = {0}, *ai;
  hints.ai_socktype = SOCK_STREAM;
  if (getaddrinfo(argv[1], argv[2], &hints, &ai)) die("resolve");
  fd = socket(ai->ai_family, SOCK_STREAM, 0);
  if (connect(fd, ai->ai_addr, ai->ai_addrlen)) die("connect");
  buf = malloc(cap);
  size_t end;
  line(&end); pos = end; /* INFO */
  const char *hello = "CONNECT {\"verbose\":false,\"pedantic\":false,\"headers\":true,"
                      "\"no_responders\":true,\"protocol\":1}\r\nSUB _rawc.d 1\r\n"
                      "SUB _rawc.r 2\r\nPING\r\n";
  put(hello, strlen(hello));
  for (;;) { char *l = line(&end); pos = end; if (!strcmp(l, "PONG")) break; }
  char body[1024], req[1400], policy[96];
  if (start <= 1) snprintf(policy, sizeof policy, "\"deliver_policy\":\"all\"");
  else snprintf(policy, sizeof policy,
                "\"deliver_policy\":\"by_start_sequence\",\"opt_start_seq\":%ld", start);
  int bl = snprintf(body, sizeof body,
    "{\"stream_name\":\"%s\",\"config\":{\"deliver_subject\":\"_rawc.d\",%s,"
    "\"ack_policy\":\"none\",\"max_deliver\":1,\"replay_policy\":\"instant\","
    "\"flow_control\":true,\"idle_heartbeat\":5000000000,\"mem_storage\":true,"
    "\"num_replicas\":1,\"inactive_threshold\":5000000000,\"filter_subject\":\"%s\"}}",
    argv[3], policy, argv[4]);
  int rl = snprintf(req, sizeof req, "PUB $JS.API.CONSUMER.CREATE.%s _rawc.r %d\r\n%s\r\n",
                    argv[3], bl, body);
  double t0 = now();
  put(req, (size_t)rl);
  while (got < want) {
    char *l = line(&end);
    if (!strncmp(l, "HMSG ", 5) || !strncmp(l, "MSG ", 4)) {
      int h = l[0] == 'H';
      char *tok[7]; int n = 0;
      for (char *s = strtok(l, " "); s && n < 7; s = strtok(NULL, " ")) tok[n++] = s;
      long total = atol(tok[n - 1]), hsize = h ? atol(tok[n - 2]) : 0;
      int sid = atoi(tok[2]);
      char reply[256] = "";
      if (n == (h ? 6 : 5)) snprintf(reply, sizeof reply, "%s", tok[3]);
      pos = end;
      while (len - pos < (size_t)total + 2) fill();
      const char *payload = buf + pos;
      if (sid == 1) {
        /* a status (heartbeat, flow control) has its code on the first header line */
        int status = h && hsize >= 12 && !memcmp(payload, "NATS/1.0 1", 10);
        if (!status) got++;
        else if (reply[0]) {
          char fc[300]; int fl = snprintf(fc, sizeof fc, "PUB %s 0\r\n\r\n", reply);
          put(fc, (size_t)fl);
        }
      } else if (sid == 2 && memmem(payload, (size_t)total, "\"error\"", 7)) {
        fprintf(stderr, "rawread: %.*s\n", (int)total, payload); return 3;
      }
      pos += (size_t)total + 2;
    } else {
      pos = end;
      if (!strcmp(l, "PING")) put("PONG\r\n", 6);
      else if (!strncmp(l, "-ERR", 4)) { fprintf(stderr, "rawread: %s\n", l); return 3; }
    }
  }
  printf("%.6f %ld\n", now() - t0, got);
  return 0;
}
"""


def binary() -> Path | None:
    """The compiled reader (built once per source version), or None without a C compiler."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None
    tag = hashlib.sha256(SOURCE.encode()).hexdigest()[:12]
    d = Path(tempfile.gettempdir()) / f"nl-bench-rawc-{tag}"
    exe = d / "rawread"
    if exe.exists():
        return exe
    d.mkdir(exist_ok=True)
    (d / "rawread.c").write_text(SOURCE)
    p = subprocess.run(
        [cc, "-O2", "-o", str(d / "rawread.tmp"), str(d / "rawread.c")],
        capture_output=True,
        text=True,
    )
    if p.returncode != 0:
        print(f"   the C reader did not build: {p.stderr[-500:]}", flush=True)
        return None
    (d / "rawread.tmp").rename(exe)
    return exe


async def c_read(conn: Connection, subject: str, start_seq: int, count: int) -> float | None:
    """Seconds for the C reader to receive ``count`` stored messages of ``subject`` from
    ``start_seq`` on ``conn``'s server (a process of its own; its start is not timed), or None
    when it cannot run here."""
    exe = await asyncio.to_thread(binary)
    url = conn.nc.connected_url
    if exe is None or url is None:
        return None
    argv = [str(exe), url.hostname or "127.0.0.1", str(url.port or 4222), conn.stream]
    argv += [subject, str(start_seq), str(count)]
    p = await asyncio.to_thread(subprocess.run, argv, capture_output=True, text=True, timeout=900)
    if p.returncode != 0:
        print(f"   the C reader failed: {p.stderr[-500:]}", flush=True)
        return None
    seconds, got = p.stdout.split()
    return float(seconds) if int(got) == count else None
