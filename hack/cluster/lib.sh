# shellcheck shell=bash
# Common settings and helpers for hack/cluster/*. Sourced, not executed.
#
# Everything built or downloaded lives under $KUDIG_CACHE (default ~/.cache/kudig), never in the repo.

KUDIG_CACHE="${KUDIG_CACHE:-$HOME/.cache/kudig}"
CLUSTER_SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# Pinned versions (see ../shared/reference/offline-cluster.md: 1.34 is the newest minor that runs on
# cgroup v1 + containerd 1.6 without opt-outs).
K8S_VERSION="${K8S_VERSION:-v1.34.4}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"

# Addresses. Pod and service ranges from the recipe; the node gets its own address on a dummy
# interface so that nothing depends on (or leaves through) the host's real network.
POD_CIDR="10.88.0.0/16"
SERVICE_CIDR="10.96.0.0/16"
API_SERVICE_IP="10.96.0.1"
NODE_NAME="${KUDIG_NODE_NAME:-kudig-node}"
NODE_IFACE="kudig0"
NODE_IP_WANTED="10.87.0.1"
API_PORT=6443
ETCD_PORT=2379

# Layout.
GO_CACHE_DIR="$KUDIG_CACHE/go"
BIN_DIR="$KUDIG_CACHE/bin/k8s-$K8S_VERSION"
ETCD_BIN="$KUDIG_CACHE/bin/etcd-$ETCD_VERSION/etcd"
CLUSTER_DIR="$KUDIG_CACHE/cluster"        # per-cluster state: pki, kubeconfigs, logs, pids, etcd data
PKI_DIR="$CLUSTER_DIR/pki"
LOG_DIR="$CLUSTER_DIR/logs"
PID_DIR="$CLUSTER_DIR/pids"
KUBECONFIG_PATH="$CLUSTER_DIR/kubeconfig"  # admin kubeconfig, the fixed path tests use
IMAGE_CACHE="$KUDIG_CACHE/images"
CONTAINERD_ROOT="$KUDIG_CACHE/containerd"   # image content + snapshots: kept across up/down
CONTAINERD_STATE="/run/kudig/containerd"
CONTAINERD_SOCK="$CONTAINERD_STATE/containerd.sock"
KUBELET_ROOT="/var/lib/kudig/kubelet"
CNI_CONF_DIR="/etc/kudig/cni/net.d"
CNI_BIN_DIR="/usr/lib/cni"

# Fully-qualified image names, imported into containerd's k8s.io namespace.
PAUSE_IMAGE="registry.k8s.io/pause:3.10"
BUSYBOX_IMAGE="docker.io/library/busybox:1.35"
PYTHON_IMAGE="localhost/kudig/python:3.11"

export GOTOOLCHAIN=local GOFLAGS=-mod=mod
export GOMODCACHE="$GO_CACHE_DIR/mod" GOCACHE="$GO_CACHE_DIR/build"

_ts() { date +%H:%M:%S; }
log() { printf '[%s] %s\n' "$(_ts)" "$*" >&2; }
die() { printf '[%s] ERROR: %s\n' "$(_ts)" "$*" >&2; exit 1; }

# fail COMPONENT LOGFILE MESSAGE: names the failing component and shows the end of its log.
fail() {
  local comp="$1" logf="$2"; shift 2
  printf '[%s] ERROR: %s failed: %s\n' "$(_ts)" "$comp" "$*" >&2
  if [[ -n "$logf" && -f "$logf" ]]; then
    printf '  log: %s (last lines below)\n' "$logf" >&2
    tail -n 25 "$logf" | sed 's/^/  | /' >&2
  fi
  exit 1
}

# Runs a long command in the background with its output in a log file, printing a progress line every
# $KUDIG_PROGRESS_EVERY seconds; fails naming the step and its log.
run_logged() {
  local step="$1" logf="$2"; shift 2
  local every="${KUDIG_PROGRESS_EVERY:-30}" start=$SECONDS pid rc=0
  mkdir -p "$(dirname "$logf")"
  log "$step ... (log: $logf)"
  "$@" >"$logf" 2>&1 &
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    for _ in $(seq "$every"); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 1
    done
    if kill -0 "$pid" 2>/dev/null; then log "  $step: still running ($((SECONDS - start))s)"; fi
  done
  wait "$pid" || rc=$?
  if (( rc != 0 )); then fail "$step" "$logf" "exit code $rc"; fi
  log "$step: done in $((SECONDS - start))s"
}

# apt-get, one at a time across kudig's scripts (`make test` runs unit and e2e tests side by side,
# and each may install what it needs): a lock of ours, and dpkg's own lock waited for, not failed on.
apt_get() { mkdir -p "$KUDIG_CACHE"; flock "$KUDIG_CACHE/.apt.lock" apt-get -o DPkg::Lock::Timeout=600 "$@"; }

# apt-installs the Debian packages whose command/file is missing. Args: "path:package" pairs.
ensure_apt() {
  local missing=() pair path pkg
  for pair in "$@"; do
    path="${pair%%:*}"; pkg="${pair#*:}"
    if [[ "$path" == /* ]]; then [[ -e "$path" ]] && continue
    else command -v "$path" >/dev/null 2>&1 && continue; fi
    missing+=("$pkg")
  done
  (( ${#missing[@]} == 0 )) && return 0
  log "apt-get install ${missing[*]}"
  if [[ ! -f /var/lib/apt/periodic/kudig-updated ]] || ! apt-cache show "${missing[0]}" >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt_get update -qq >"$KUDIG_CACHE/apt-update.log" 2>&1 \
      || fail apt-get "$KUDIG_CACHE/apt-update.log" "apt-get update"
    mkdir -p /var/lib/apt/periodic && touch /var/lib/apt/periodic/kudig-updated
  fi
  DEBIAN_FRONTEND=noninteractive apt_get install -y -qq --no-install-recommends "${missing[@]}" \
    >"$KUDIG_CACHE/apt-install.log" 2>&1 || fail apt-get "$KUDIG_CACHE/apt-install.log" "apt-get install ${missing[*]}"
}

need_root() { [[ $(id -u) -eq 0 ]] || die "hack/cluster must run as root (it starts containerd and the kubelet)"; }

sha_of() { sha256sum "$@" | sha256sum | cut -c1-16; }

# await_exec PID EXE: wait (up to 10 s) until the background subshell PID has exec'd EXE, or is gone.
# A daemon starts as a subshell that closes its inherited descriptors and then execs setsid, nohup
# and the binary; until then /proc/PID/exe is bash, and a liveness check by executable (pid_alive)
# would take the component for dead (it did, on a loaded machine: "kube-apiserver failed: the
# process exited" while it was starting).
await_exec() {
  local pid="$1" exe="$2" i running
  for (( i = 0; i < 200; i++ )); do
    running="$(readlink "/proc/$pid/exe" 2>/dev/null)" || return 0
    [[ "${running% (deleted)}" == "$exe" ]] && return 0
    sleep 0.05
  done
}

# pid files: $PID_DIR/<name>.pid, with the started executable in $PID_DIR/<name>.exe so that a pid
# reused by an unrelated process is never taken for ours.
pid_alive() {
  local f="$PID_DIR/$1.pid" pid exe
  [[ -f "$f" ]] || return 1
  pid="$(cat "$f")"
  kill -0 "$pid" 2>/dev/null || return 1
  exe="$(cat "$PID_DIR/$1.exe" 2>/dev/null || true)"
  local running
  running="$(readlink "/proc/$pid/exe" 2>/dev/null || true)"
  # a binary rebuilt while the cluster runs shows as "<path> (deleted)": still ours
  [[ -z "$exe" || "${running% (deleted)}" == "$exe" ]]
}
