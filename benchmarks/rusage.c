/* rusage OUT COMMAND...: run COMMAND and write "ELAPSED USER SYS MAXRSS" to OUT.
 *
 * ELAPSED, USER and SYS are seconds with microseconds (GNU time prints hundredths, coarse against a sparse copy's
 * 0.2 s of CPU); MAXRSS is the peak resident set in KiB, from wait4(2). Linux folds the memory of the process that
 * calls exec into the child's peak, so this program is small C, as GNU time is (a Python wrapper would add its own
 * 13 MB). The command's standard streams are its own; the exit status is the command's, 128 + N after signal N. */
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>

extern char **environ;

static double seconds (struct timeval tv) { return tv.tv_sec + tv.tv_usec / 1e6; }

int main (int argc, char *argv[])
{
  if (argc < 3) {
    fprintf (stderr, "usage: rusage OUT COMMAND...\n");
    return 2;
  }
  struct timespec t0, t1;
  clock_gettime (CLOCK_MONOTONIC, &t0);
  pid_t pid;
  int err = posix_spawnp (&pid, argv[2], NULL, NULL, &argv[2], environ);
  if (err != 0) {
    fprintf (stderr, "rusage: %s: %s\n", argv[2], strerror (err));
    return 127;
  }
  int status;
  struct rusage ru;
  if (wait4 (pid, &status, 0, &ru) < 0) {
    perror ("rusage: wait4");
    return 1;
  }
  clock_gettime (CLOCK_MONOTONIC, &t1);
  FILE *out = fopen (argv[1], "w");
  if (out == NULL) {
    perror (argv[1]);
    return 1;
  }
  fprintf (out, "%.6f %.6f %.6f %ld\n", (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9,
           seconds (ru.ru_utime), seconds (ru.ru_stime), ru.ru_maxrss);
  if (fclose (out) != 0) {
    perror (argv[1]);
    return 1;
  }
  return WIFEXITED (status) ? WEXITSTATUS (status) : 128 + WTERMSIG (status);
}
