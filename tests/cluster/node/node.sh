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
