# Names and helpers shared by the real node's scripts (sourced, not run).

NODE_NAME=countersign-real-node
NODE_BRIDGE=cs-node0
NODE_IP=10.88.0.1
NODE_SUBNET=10.88.0.0/24
NODE_CHAIN=COUNTERSIGN-NODE
NODE_CGROUP=countersign-node
NODE_CNI_BIN=/usr/lib/cni
# What the kubelet sets on the host (kernel defaults it wants); `down` puts them back.
NODE_SYSCTLS=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys kernel.keys.root_maxbytes)

# Every mounted cgroup hierarchy (v1: one per controller; v2: the one).
NODE_CGROUP_HIERARCHIES=()
while read -r _ mountpoint fstype _; do
  [[ $fstype == cgroup || $fstype == cgroup2 ]] && NODE_CGROUP_HIERARCHIES+=("$mountpoint")
done </proc/mounts

# A free TCP port below the ephemeral range (200 tries).
free_node_port() {
  local port try
  for try in $(seq 200); do
    port=$((20000 + RANDOM % 12000))
    [[ -z $(ss -Htln "sport = :$port") ]] && { echo "$port"; return; }
  done
  echo "no free port after $try tries" >&2
  return 1
}

# The state directory of a real node whose kubelet or containerd still runs on this
# machine (read from its command line), or nothing. The bridge, the DNAT chain and the
# cgroup above have fixed names, so one real node per machine: `up` refuses a second,
# and `down` leaves the host's parts to the node that runs.
live_node_state() {
  { pgrep -af -- '--root-dir=/.*/node/kubelet( |$)|--config /.*/node/containerd/config\.toml' || true; } |
    sed -nE 's#.*(--root-dir=|--config )(/[^ ]*)/node/(kubelet|containerd/config\.toml).*#\2#p' |
    head -n1
}

# Whether the host holds any part a real node makes under its fixed names.
node_host_parts_present() {
  local hierarchy
  ip link show "$NODE_BRIDGE" >/dev/null 2>&1 && return 0
  iptables -w -t nat -S "$NODE_CHAIN" >/dev/null 2>&1 && return 0
  for hierarchy in "${NODE_CGROUP_HIERARCHIES[@]}"; do
    [[ -d $hierarchy/$NODE_CGROUP ]] && return 0
  done
  return 1
}

# Takes back the host's parts of a real node: what still runs in its cgroups (a
# container whose shim was killed), the cgroups, the bridge and the DNAT chain. Safe to
# run twice; run only when no real node runs (live_node_state is empty or this node's).
release_node_host_parts() {
  local hierarchy
  for hierarchy in "${NODE_CGROUP_HIERARCHIES[@]}"; do
    [[ -d $hierarchy/$NODE_CGROUP ]] || continue
    find "$hierarchy/$NODE_CGROUP" -name cgroup.procs -exec cat {} + 2>/dev/null | xargs -r kill -KILL 2>/dev/null
  done
  sleep 0.2
  for hierarchy in "${NODE_CGROUP_HIERARCHIES[@]}"; do
    [[ -d $hierarchy/$NODE_CGROUP ]] || continue
    find "$hierarchy/$NODE_CGROUP" -depth -type d -exec rmdir {} + 2>/dev/null
  done
  if ip link show "$NODE_BRIDGE" >/dev/null 2>&1; then ip link delete "$NODE_BRIDGE"; fi
  if iptables -w -t nat -S "$NODE_CHAIN" >/dev/null 2>&1; then
    iptables -w -t nat -D PREROUTING -i "$NODE_BRIDGE" -j "$NODE_CHAIN" 2>/dev/null
    iptables -w -t nat -F "$NODE_CHAIN"
    iptables -w -t nat -X "$NODE_CHAIN"
  fi
  return 0
}
