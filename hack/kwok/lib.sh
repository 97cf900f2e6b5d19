# shellcheck shell=bash
# Settings of a KWOK control plane (hack/kwok/up, down, env). Sourced, not executed.
#
# A plane of its own, apart from the shared test cluster (hack/cluster: ports 6443/2379): its own
# etcd, kube-apiserver and kube-scheduler (binaries from hack/cluster/build), kwok (hack/kwok/build)
# and fake nodes, with its state under ~/.cache/kudig/$KWOK_NAME. Two planes can run side by side
# with different KWOK_NAME and KWOK_PORT_BASE (the scale smoke test uses its own).
# shellcheck source=../cluster/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../cluster/lib.sh"

KWOK_NAME="${KWOK_NAME:-kwok}"
KWOK_PORT_BASE="${KWOK_PORT_BASE:-26400}"
KWOK_DIR="$KUDIG_CACHE/$KWOK_NAME"
KWOK_API_PORT=$((KWOK_PORT_BASE + 43))
KWOK_ETCD_PORT=$((KWOK_PORT_BASE + 79))
KWOK_ETCD_PEER_PORT=$((KWOK_PORT_BASE + 80))
KWOK_SCHED_PORT=$((KWOK_PORT_BASE + 59))
KWOK_SERVER_PORT=$((KWOK_PORT_BASE + 47))
KWOK_NODES="${KWOK_NODES:-10}"
KWOK_NODE_PODS="${KWOK_NODE_PODS:-5000}"
KWOK_TASK_DELAY_MS="${KWOK_TASK_DELAY_MS:-200}"
KWOK_SCHED_QPS="${KWOK_SCHED_QPS:-500}"
KWOK_COMPONENTS=(etcd kube-apiserver kube-scheduler kwok)
KWOK_LOGS="$KWOK_DIR/logs"
KWOK_PIDS="$KWOK_DIR/pids"
KWOK_PKI="$KWOK_DIR/pki"
# kubeconfigs: admin (the harness: system:masters), controller (kudig's controller: an ordinary
# user, so API Priority and Fairness applies to it as to a real deployment), kwok, scheduler
KWOK_KUBECONFIG="$KWOK_DIR/kubeconfig"
KWOK_CONTROLLER_KUBECONFIG="$KWOK_DIR/controller.kubeconfig"

kwok_pid_alive() {
  local f="$KWOK_PIDS/$1.pid" pid exe running
  [[ -f "$f" ]] || return 1
  pid="$(cat "$f")"
  kill -0 "$pid" 2>/dev/null || return 1
  exe="$(cat "$KWOK_PIDS/$1.exe" 2>/dev/null || true)"
  running="$(readlink "/proc/$pid/exe" 2>/dev/null || true)"
  [[ -z "$exe" || "${running% (deleted)}" == "$exe" ]]
}

kwok_kc() { "$BIN_DIR/kubectl" --kubeconfig "$KWOK_KUBECONFIG" "$@"; }

# kwok_ready COMPONENT: does it answer? (etcd, kube-apiserver, kube-scheduler: their health
# endpoints; kwok: its process, since its fake nodes stay Ready while it is away)
kwok_ready() {
  case "$1" in
    etcd) curl -fsS "http://127.0.0.1:$KWOK_ETCD_PORT/health" ;;
    kube-apiserver) kwok_kc get --raw /readyz ;;
    kube-scheduler) curl -fsSk "https://127.0.0.1:$KWOK_SCHED_PORT/healthz" ;;
    kwok) kwok_pid_alive kwok ;;
    *) return 2 ;;
  esac
}

wait_until() {  # wait_until COMPONENT TIMEOUT_S WHAT COMMAND...
  local comp="$1" timeout="$2" what="$3"; shift 3
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    if [[ -f "$KWOK_PIDS/$comp.pid" ]] && ! kwok_pid_alive "$comp"; then
      fail "$comp" "$KWOK_LOGS/$comp.log" "the process exited while waiting for: $what"
    fi
    (( SECONDS < deadline )) || fail "$comp" "$KWOK_LOGS/$comp.log" "not ready after ${timeout}s: $what"
    sleep 0.3
  done
}

# kwok_start NAME BINARY ARGS...: a background process in its own session, pid recorded, and its
# command line too (NAME.args, NUL-separated), so hack/kwok/restart starts it again as it was
kwok_start() {
  local name="$1"; shift
  log "starting $name"
  readlink -f "$(command -v "$1")" >"$KWOK_PIDS/$name.exe"
  printf '%s\0' "$@" >"$KWOK_PIDS/$name.args"
  (
    for fd in /proc/self/fd/*; do  # no inherited lock or pipe outlives this script in the daemon
      fd="${fd##*/}"; (( fd > 2 )) && eval "exec $fd>&-" 2>/dev/null
    done
    exec setsid nohup "$@" >>"$KWOK_LOGS/$name.log" 2>&1 </dev/null
  ) &
  echo $! >"$KWOK_PIDS/$name.pid"
  await_exec $! "$(cat "$KWOK_PIDS/$name.exe")"
}

# kwok_stop NAME [SIGNAL]: SIGNAL (TERM), wait, KILL after 10 s; by recorded pid only, never by name
kwok_stop() {
  local name="$1" sig="${2:-TERM}" f="$KWOK_PIDS/$1.pid" pid i
  [[ -f "$f" ]] || return 0
  pid="$(cat "$f")"
  if kill -0 "$pid" 2>/dev/null && ! kwok_pid_alive "$name"; then
    log "$name: pid $pid now belongs to another program; not touching it"
  elif kill -0 "$pid" 2>/dev/null; then
    log "stopping $name (pid $pid, SIG$sig)"
    kill "-$sig" "$pid" 2>/dev/null || true
    for (( i = 0; i < 100; i++ )); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      log "$name did not stop in 10s; killing it"
      kill -KILL "$pid" 2>/dev/null || true
      for (( i = 0; i < 50; i++ )); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
  fi
  rm -f "$f" "$KWOK_PIDS/$name.exe"
}
