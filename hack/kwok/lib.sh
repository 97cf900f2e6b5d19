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
