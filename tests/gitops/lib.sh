# Shared helpers for the GitOps test scripts (sourced, not run).

log() { printf '[gitops] %s\n' "$*" >&2; }
die() { printf '[gitops] error: %s\n' "$*" >&2; exit 1; }

gitops_src_dir() { cd "$(dirname "${BASH_SOURCE[0]}")" && pwd; }

# Binaries live outside the checkout, keyed by what pins them: the build script
# (controller versions and their module edits) and the git server's module.
gitops_bin_dir() {
  local src key
  src=$(gitops_src_dir)
  key=$(cat "$src/build" "$src/gitserver/go.mod" "$src/gitserver/go.sum" "$src/gitserver/main.go" |
    sha256sum | cut -c1-16)
  echo "${COUNTERSIGN_GITOPS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/countersign/gitops}/$key"
}

# The state directory: the same one as the test cluster's (tests/cluster/lib.sh).
gitops_state_dir() {
  echo "${1:-${COUNTERSIGN_CLUSTER_DIR:-/tmp/countersign-cluster}}"
}

# Processes in start order; `down` stops them in reverse.
GITOPS_COMPONENTS=(git-server source-controller kustomize-controller)
