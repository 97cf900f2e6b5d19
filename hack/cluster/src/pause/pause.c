/* The pod sandbox ("pause") process for kudig's test cluster.
 *
 * Holds the pod's namespaces: waits forever, reaps any zombie children (it is PID 1 when the pod
 * shares its PID namespace), exits 0 on SIGINT/SIGTERM. Built with gcc -Os -static. */
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_term(int sig) { (void)sig; _exit(0); }

static void on_child(int sig) {
  (void)sig;
  int saved = errno;
  while (waitpid(-1, NULL, WNOHANG) > 0) {
  }
  errno = saved;
}

int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "-v") == 0) {
    static const char v[] = "kudig-pause 1\n";
    (void)!write(1, v, sizeof v - 1);
    return 0;
  }
  if (getpid() != 1) {
    static const char w[] = "pause: warning: not running as PID 1\n";
    (void)!write(2, w, sizeof w - 1);
  }
  struct sigaction term = {0}, child = {0};
  term.sa_handler = on_term;
  child.sa_handler = on_child;
  child.sa_flags = SA_NOCLDSTOP | SA_RESTART;
  if (sigaction(SIGINT, &term, NULL) < 0 || sigaction(SIGTERM, &term, NULL) < 0 ||
      sigaction(SIGCHLD, &child, NULL) < 0)
    return 1;
  for (;;) pause();
}
