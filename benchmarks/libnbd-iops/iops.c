/* The libnbd side of benchmarks/compare-iops.sh: the project's reference client (../shared/bench/iops.c),
 * kept here so the comparison runs from a clone alone.  nbd-iops (tools/nbd-iops) is its C# twin. */
/* iops.c - small-request benchmark client for an NBD server, using libnbd.
 *
 * Build:  gcc -O2 -Wall -o iops iops.c -lnbd
 *
 * Usage:
 *   iops URI read    QD SECONDS [BS]   random BS-byte reads,  QD in flight (aio)
 *   iops URI write   QD SECONDS [BS]   random BS-byte writes, QD in flight (aio)
 *   iops URI lat     SECONDS    [BS]   synchronous nbd_pread round trips (QD1)
 *   iops URI connect COUNT             connect + handshake + shutdown, COUNT times
 *
 * BS defaults to 4096.  Every loop is bounded both by time and by a count.
 * Output is ONE line of key=value pairs on stdout, so that a script can parse
 * it and so that another implementation (e.g. a C# port) can print the same
 * line and be compared side by side:
 *   read/write: mode= qd= bs= secs= ops= iops= mibps=
 *   lat:        mode=lat bs= secs= ops= iops= p50_us= p90_us= p99_us= mean_us= min_us=
 *   connect:    mode=connect count= secs= per_s= p50_us= p90_us= mean_us= min_us=
 * Exit status 0 on success, 1 on any NBD error.
 */
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <inttypes.h>
#include <time.h>
#include <libnbd.h>

#define MAX_QD 1024
#define MAX_OPS 200000000ULL     /* hard bound on any loop */
#define MAX_SAMPLES 4000000      /* bound on latency samples kept */

static double now (void)
{
  struct timespec ts;
  clock_gettime (CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ULL;
static uint64_t rng (void)             /* xorshift64* */
{
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return rng_state * 0x2545F4914F6CDD1DULL;
}

static void die (const char *what)
{
  fprintf (stderr, "iops: %s: %s\n", what, nbd_get_error ());
  exit (1);
}

static int cmp_double (const void *a, const void *b)
{
  double x = *(const double *) a, y = *(const double *) b;
  return x < y ? -1 : x > y;
}

static double pct (double *v, size_t n, double p)
{
  if (n == 0) return 0;
  size_t i = (size_t) (p * (n - 1) + 0.5);
  return v[i];
}

/* ---- async random I/O with QD in flight ---- */
struct slot { int idx; };
static int free_stack[MAX_QD];
static int free_top;
static uint64_t done_ops;
static int io_error;

static int complete_cb (void *user_data, int *error)
{
  struct slot *s = user_data;
  if (*error) io_error = *error;
  free_stack[free_top++] = s->idx;
  done_ops++;
  return 1;                     /* auto-retire the command */
}

static int run_aio (struct nbd_handle *h, int write, int qd, double secs,
                    size_t bs)
{
  int64_t size = nbd_get_size (h);
  if (size < 0) die ("nbd_get_size");
  uint64_t nblocks = (uint64_t) size / bs;
  if (nblocks == 0) { fprintf (stderr, "iops: export too small\n"); return 1; }

  char *bufs = aligned_alloc (4096, (size_t) qd * bs);
  struct slot *slots = calloc (qd, sizeof *slots);
  if (!bufs || !slots) { perror ("alloc"); return 1; }
  memset (bufs, 0xA5, (size_t) qd * bs);
  for (int i = 0; i < qd; i++) { slots[i].idx = i; free_stack[i] = i; }
  free_top = qd;

  uint64_t issued = 0;
  double t0 = now (), deadline = t0 + secs;
  for (;;) {
    while (free_top > 0) {
      int i = free_stack[--free_top];
      uint64_t off = (rng () % nblocks) * bs;
      nbd_completion_callback cb = { .callback = complete_cb,
                                     .user_data = &slots[i] };
      int64_t c = write
        ? nbd_aio_pwrite (h, bufs + (size_t) i * bs, bs, off, cb, 0)
        : nbd_aio_pread (h, bufs + (size_t) i * bs, bs, off, cb, 0);
      if (c == -1) die (write ? "nbd_aio_pwrite" : "nbd_aio_pread");
      issued++;
    }
    if (nbd_poll (h, -1) == -1) die ("nbd_poll");
    if (io_error) { fprintf (stderr, "iops: I/O error %d\n", io_error); return 1; }
    if (issued >= MAX_OPS || now () >= deadline) break;
  }
  /* drain what is still in flight (bounded: at most qd commands) */
  while (nbd_aio_in_flight (h) > 0)
    if (nbd_poll (h, -1) == -1) die ("nbd_poll");
  double el = now () - t0;
  printf ("mode=%s qd=%d bs=%zu secs=%.3f ops=%" PRIu64 " iops=%.0f mibps=%.1f\n",
          write ? "write" : "read", qd, bs, el, done_ops, done_ops / el,
          done_ops * (double) bs / el / 1048576.0);
  free (bufs);
  free (slots);
  return 0;
}

/* ---- synchronous QD1 latency ---- */
static int run_lat (struct nbd_handle *h, double secs, size_t bs)
{
  int64_t size = nbd_get_size (h);
  if (size < 0) die ("nbd_get_size");
  uint64_t nblocks = (uint64_t) size / bs;
  char *buf = aligned_alloc (4096, bs);
  double *lat = malloc (MAX_SAMPLES * sizeof *lat);
  if (!buf || !lat) { perror ("alloc"); return 1; }
  size_t n = 0;
  double t0 = now (), deadline = t0 + secs, t = t0;
  while (n < MAX_SAMPLES && t < deadline) {
    uint64_t off = (rng () % nblocks) * bs;
    double a = now ();
    if (nbd_pread (h, buf, bs, off, 0) == -1) die ("nbd_pread");
    t = now ();
    lat[n++] = (t - a) * 1e6;
  }
  double el = t - t0, sum = 0;
  for (size_t i = 0; i < n; i++) sum += lat[i];
  qsort (lat, n, sizeof *lat, cmp_double);
  printf ("mode=lat bs=%zu secs=%.3f ops=%zu iops=%.0f p50_us=%.1f p90_us=%.1f "
          "p99_us=%.1f mean_us=%.1f min_us=%.1f\n",
          bs, el, n, n / el, pct (lat, n, .50), pct (lat, n, .90),
          pct (lat, n, .99), sum / n, lat[0]);
  free (buf);
  free (lat);
  return 0;
}

/* ---- connect + handshake + disconnect ---- */
static int run_connect (const char *uri, long count)
{
  if (count < 1) count = 1;
  if (count > 1000000) count = 1000000;
  double *lat = malloc (count * sizeof *lat);
  if (!lat) { perror ("alloc"); return 1; }
  double t0 = now ();
  for (long i = 0; i < count; i++) {
    double a = now ();
    struct nbd_handle *h = nbd_create ();
    if (!h) die ("nbd_create");
    nbd_set_uri_allow_local_file (h, true);
    if (nbd_connect_uri (h, uri) == -1) die ("nbd_connect_uri");
    if (nbd_shutdown (h, 0) == -1) die ("nbd_shutdown");
    nbd_close (h);
    lat[i] = (now () - a) * 1e6;
  }
  double el = now () - t0, sum = 0;
  for (long i = 0; i < count; i++) sum += lat[i];
  qsort (lat, count, sizeof *lat, cmp_double);
  printf ("mode=connect count=%ld secs=%.3f per_s=%.0f p50_us=%.1f p90_us=%.1f "
          "mean_us=%.1f min_us=%.1f\n",
          count, el, count / el, pct (lat, count, .50), pct (lat, count, .90),
          sum / count, lat[0]);
  free (lat);
  return 0;
}

static void usage (void)
{
  fprintf (stderr,
           "usage: iops URI read|write QD SECONDS [BS]\n"
           "       iops URI lat SECONDS [BS]\n"
           "       iops URI connect COUNT\n");
  exit (2);
}

int main (int argc, char *argv[])
{
  if (argc < 4) usage ();
  const char *uri = argv[1], *mode = argv[2];

  if (strcmp (mode, "connect") == 0)
    return run_connect (uri, atol (argv[3]));

  struct nbd_handle *h = nbd_create ();
  if (!h) die ("nbd_create");
  nbd_set_uri_allow_local_file (h, true); /* as nbdinfo and nbdcopy: TLS files named in the URI */
  if (nbd_connect_uri (h, uri) == -1) die ("nbd_connect_uri");

  int r;
  if (strcmp (mode, "lat") == 0) {
    double secs = atof (argv[3]);
    size_t bs = argc > 4 ? (size_t) atol (argv[4]) : 4096;
    if (secs <= 0 || secs > 600 || bs == 0 || bs > 32 << 20) usage ();
    r = run_lat (h, secs, bs);
  }
  else if (strcmp (mode, "read") == 0 || strcmp (mode, "write") == 0) {
    if (argc < 5) usage ();
    int qd = atoi (argv[3]);
    double secs = atof (argv[4]);
    size_t bs = argc > 5 ? (size_t) atol (argv[5]) : 4096;
    if (qd < 1 || qd > MAX_QD || secs <= 0 || secs > 600 || bs == 0 ||
        bs > 32 << 20) usage ();
    r = run_aio (h, mode[0] == 'w', qd, secs, bs);
  }
  else
    usage ();

  nbd_shutdown (h, 0);
  nbd_close (h);
  return r;
}
