# Shared helpers for the test-cluster scripts (sourced, not run).

log() { printf '[cluster] %s\n' "$*" >&2; }
die() { printf '[cluster] error: %s\n' "$*" >&2; exit 1; }

cluster_src_dir() { cd "$(dirname "${BASH_SOURCE[0]}")" && pwd; }

# Binaries live outside the checkout, keyed by the pinned module graph.
cluster_bin_dir() {
  local src key
  src=$(cluster_src_dir)
  key=$(cat "$src/go.mod" "$src/go.sum" "$src/build" | sha256sum | cut -c1-16)
  echo "${COUNTERSIGN_CLUSTER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/countersign/cluster}/$key"
}

# The state directory: the argument, else $COUNTERSIGN_CLUSTER_DIR, else a
# fixed place under /tmp so that tests and a developer's shell find one cluster.
cluster_state_dir() {
  echo "${1:-${COUNTERSIGN_CLUSTER_DIR:-/tmp/countersign-cluster}}"
}

# Components in start order; `down` stops them in reverse.
CLUSTER_COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)

# stop_component STATE NAME SIGNAL: sends SIGNAL (TERM or KILL) to the component's
# session (components run in sessions of their own, see `up`), then KILL if it is still
# there after 10 s; forgets its pid.
stop_component() {
  local state=$1 name=$2 signal=$3 file=$1/pids/$2.pid pid
  [[ -f "$file" ]] || return 0
  pid=$(cat "$file")
  if kill -0 "$pid" 2>/dev/null; then
    kill "-$signal" -- "-$pid" 2>/dev/null || kill "-$signal" "$pid" 2>/dev/null || true
    for _ in $(seq 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.2
    done
    if kill -0 "$pid" 2>/dev/null; then
      log "$name did not stop on $signal; killing it"
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null && sleep 0.1 || break; done
    fi
  fi
  rm -f "$file"
}
