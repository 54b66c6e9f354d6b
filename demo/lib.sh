# Shared by the demos (sourced, not run): how a step and its commands are shown, and
# the parts every demo starts with (countersign built, the local control plane, serve).

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
state=${COUNTERSIGN_CLUSTER_DIR:-/tmp/countersign-cluster}
listen=${COUNTERSIGN_DEMO_LISTEN:-127.0.0.1:8443}
kubeconfig=$state/kubeconfig
# The binary cargo builds (CARGO_TARGET_DIR moves it, as cargo does).
countersign=${CARGO_TARGET_DIR:-$root/target}/debug/countersign
kubectl=$root/tests/cluster/kubectl

bold=$'\e[1m' dim=$'\e[2m' reset=$'\e[0m'
if [[ ! -t 1 ]]; then bold='' dim='' reset=''; fi

# A step: what happens, then each command as it is typed, then its output.
step() { printf '\n%s==> %s%s\n' "$bold" "$*" "$reset"; }
show() { printf '%s$ %s%s\n' "$dim" "$*" "$reset"; }
# The arguments as one would type them: those with spaces quoted.
typed() {
  local arg out=()
  for arg in "$@"; do
    if [[ $arg == *" "* ]]; then out+=("\"$arg\""); else out+=("$arg"); fi
  done
  printf '%s' "${out[*]}"
}
# `as USER countersign ARGS…` / `as USER kubectl ARGS…`: shown as the user would type them.
as() {
  local user=$1 tool=$2
  shift 2
  case $tool in
    countersign)
      show "kubectl countersign $(typed "$@") --context $user"
      "$countersign" "$@" --kubeconfig "$kubeconfig" --context "$user"
      ;;
    kubectl)
      show "kubectl $(typed "$@") --context $user"
      "$kubectl" "$@" --context "$user"
      ;;
  esac
}
fail() { printf 'demo: %s\n' "$*" >&2; exit 1; }

build_countersign() {
  step "Build countersign"
  show "cargo build --locked"
  (cd "$root" && cargo build --locked --quiet --bin countersign)
}

start_cluster() {
  step "Start the local control plane (tests/cluster/up)"
  local up_log
  up_log=$(mktemp -t countersign-demo-up.XXXXXX)
  COUNTERSIGN_CLUSTER_DIR=$state "$root/tests/cluster/up" "$state" >"$up_log" 2>&1 ||
    { cat "$up_log" >&2; fail "the cluster did not start"; }
  tail -n 2 "$up_log"
  rm -f "$up_log"
  export COUNTERSIGN_CLUSTER_DIR=$state
}

# start_serve [FLAGS…]: `countersign serve --local` in the background until the demo
# ends (stop_serve); returns once its webhook configurations are registered.
start_serve() {
  serve_log=$(mktemp -t countersign-demo-serve.XXXXXX)
  # The API server presents its client certificate to webhooks; countersign answers it alone.
  local client_ca=$state/pki/webhook-client-ca.crt
  show "countersign serve --local $* --kubeconfig $kubeconfig --listen $listen --client-ca-file $client_ca"
  "$countersign" serve --local "$@" --kubeconfig "$kubeconfig" --listen "$listen" \
    --client-ca-file "$client_ca" >"$serve_log" 2>&1 &
  serve=$!
  for _ in $(seq 1 300); do
    grep -q "webhook configurations registered" "$serve_log" && break
    kill -0 "$serve" 2>/dev/null || { cat "$serve_log" >&2; fail "serve stopped"; }
    sleep 0.2
  done
  grep "webhook configurations registered" "$serve_log" ||
    { cat "$serve_log" >&2; fail "serve did not register"; }
}

stop_serve() {
  if [[ -n ${serve:-} ]]; then
    kill -TERM "$serve" 2>/dev/null && wait "$serve" 2>/dev/null || true
  fi
  rm -f "${serve_log:-}"
}

# Namespace $1 where group developers may edit, and the people who approve and view.
install_people() {
  "$kubectl" apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Namespace
metadata: {name: $1}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: developers-edit, namespace: $1}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: edit}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: Group, name: developers}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: countersign-demo-approvers}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: countersign-approver}
subjects:
  - {apiGroup: rbac.authorization.k8s.io, kind: Group, name: team-leads}
  - {apiGroup: rbac.authorization.k8s.io, kind: Group, name: sre}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: countersign-demo-viewers}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: countersign-viewer}
subjects:
  - {apiGroup: rbac.authorization.k8s.io, kind: Group, name: team-leads}
  - {apiGroup: rbac.authorization.k8s.io, kind: Group, name: sre}
YAML
}
