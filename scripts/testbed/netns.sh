#!/usr/bin/env bash
# drover's multi-host testbed: "hosts" as Linux network namespaces on this machine.
#
#   scripts/testbed/netns.sh up [N]          a login node and N compute nodes (default 3)
#   scripts/testbed/netns.sh down            remove every namespace and bridge it made
#   scripts/testbed/netns.sh status          list the nodes; exit 0 iff the testbed is up
#   scripts/testbed/netns.sh env             export lines (addresses, interface names)
#   scripts/testbed/netns.sh exec NODE CMD   run CMD on NODE (its network, its hostname)
#   scripts/testbed/netns.sh loss NODE PCT   drop PCT% of NODE's packets (UDP and TCP) each way
#   scripts/testbed/netns.sh block-udp NODE  drop all of NODE's UDP (TCP still passes)
#   scripts/testbed/netns.sh block-tcp NODE  drop all of NODE's TCP (UDP still passes)
#   scripts/testbed/netns.sh rate NODE RATE  limit NODE's sending rate (tbf, e.g. 200mbit)
#   scripts/testbed/netns.sh cut NODE        take NODE's links down (a partition)
#   scripts/testbed/netns.sh mend NODE       bring them up; `clear` removes loss, block, rate
#
# Nodes: `login` (10.77.0.1, 10.78.0.1) and `n1`..`nN` (10.77.0.1X, 10.78.0.1X). Each
# has two interfaces: `eth0` on bridge drvbr0 (10.77.0.0/24) and `ib0` on bridge drvbr1
# (10.78.0.0/24), so that tests can choose the interface a server announces. This
# namespace (where tests run) has 10.77.0.254 and 10.78.0.254 on the bridges and reaches
# every node. `exec` gives the command the node's name as its hostname (a UTS
# namespace). Every node sees this machine's file system: the shared file system of a
# cluster, as far as the workers can tell (same paths, same files).
#
# This kernel has no netem qdisc (no delay in the kernel): loss is iptables'
# `statistic` match, bandwidth the tbf qdisc; delay needs a user-space relay.
# Facts: shared/TESTBED.md. Needs root, iproute2, iptables (installed here if missing).
set -euo pipefail

TB_NAME=netns
STATE=${DROVER_NETNS_STATE:-/var/tmp/drover-netns}
PREFIX=drv-
BR0=drvbr0
BR1=drvbr1
NET0=10.77.0
NET1=10.78.0

log() { printf '[%s-testbed] %s\n' "$TB_NAME" "$*" >&2; }
die() {
    printf '[%s-testbed] ERROR: %s\n' "$TB_NAME" "$*" >&2
    exit 1
}

need_root() { [ "$(id -u)" -eq 0 ] || die "must run as root (namespaces, bridges, iptables)"; }

ensure_tools() {
    command -v ip >/dev/null || die "no ip command: install Debian's iproute2"
    if ! command -v iptables >/dev/null; then
        log "installing Debian's iptables (loss and UDP blocking inside nodes)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q iptables >/dev/null ||
            die "apt-get install iptables failed"
    fi
}

ns() { echo "${PREFIX}$1"; }
# node_index NODE: 1 for login (address .1), 10+i for ni.
node_octet() {
    case "$1" in
    login) echo 1 ;;
    n[0-9] | n[0-9][0-9]) echo $((10 + ${1#n})) ;;
    *) die "unknown node \"$1\": login, n1, n2, ..." ;;
    esac
}

nodes() { cat "$STATE/nodes" 2>/dev/null || true; }

bridge_up() {
    local br="$1" addr="$2"
    if ! ip link show "$br" >/dev/null 2>&1; then
        ip link add "$br" type bridge
    fi
    ip addr replace "$addr/24" dev "$br"
    ip link set "$br" up
}

# add_node NODE: its namespace, with eth0 on drvbr0 and ib0 on drvbr1.
add_node() {
    local node="$1" n o
    n=$(ns "$node")
    o=$(node_octet "$node")
    ip netns list | grep -qw "$n" || ip netns add "$n"
    ip -n "$n" link set lo up
    local i br net dev host
    for i in 0 1; do
        if [ "$i" = 0 ]; then br=$BR0 net=$NET0 dev=eth0; else br=$BR1 net=$NET1 dev=ib0; fi
        host="dv${o}x$i" # the end in this namespace (15 characters at most)
        if ! ip -n "$n" link show "$dev" >/dev/null 2>&1; then
            ip link del "$host" >/dev/null 2>&1 || true
            ip link add "$host" type veth peer name "$dev" netns "$n"
            ip link set "$host" master "$br"
            ip link set "$host" up
        fi
        ip -n "$n" addr replace "$net.$o/24" dev "$dev"
        ip -n "$n" link set "$dev" up
    done
}

cmd_up() {
    need_root
    ensure_tools
    local count="${1:-3}"
    mkdir -p "$STATE"
    exec 9>"$STATE/.lock"
    flock -w 60 9 || die "another netns.sh holds $STATE/.lock"
    bridge_up "$BR0" "$NET0.254"
    bridge_up "$BR1" "$NET1.254"
    # Bridged frames must not go through this namespace's iptables (br_netfilter).
    [ -w /proc/sys/net/bridge/bridge-nf-call-iptables ] && echo 0 >/proc/sys/net/bridge/bridge-nf-call-iptables
    local list="login" i
    for i in $(seq 1 "$count"); do list="$list n$i"; done
    for node in $list; do add_node "$node"; done
    echo "$list" | tr ' ' '\n' >"$STATE/nodes"
    log "up: $(echo "$list" | tr '\n' ' ')(bridges $BR0 $NET0.0/24, $BR1 $NET1.0/24)"
}

cmd_down() {
    need_root
    local node
    for node in $(nodes) login n1 n2 n3 n4 n5 n6 n7 n8; do
        ip netns del "$(ns "$node")" >/dev/null 2>&1 || true
    done
    ip link del "$BR0" >/dev/null 2>&1 || true
    ip link del "$BR1" >/dev/null 2>&1 || true
    rm -f "$STATE/nodes"
    log "down"
}

cmd_status() {
    local ok=0 node
    [ -s "$STATE/nodes" ] || { echo "netns testbed: down"; return 1; }
    for node in $(nodes); do
        if ip netns list | grep -qw "$(ns "$node")"; then
            printf '%-6s %s.%s %s.%s\n' "$node" "$NET0" "$(node_octet "$node")" "$NET1" "$(node_octet "$node")"
        else
            echo "$node: missing"
            ok=1
        fi
    done
    return $ok
}

cmd_env() {
    echo "export DROVER_NETNS_LOGIN=$NET0.1 DROVER_NETNS_LOGIN_IB=$NET1.1 DROVER_NETNS_HERE=$NET0.254"
    echo "export DROVER_NETNS_NODES=\"$(nodes | grep -v login | tr '\n' ' ' | sed 's/ $//')\""
}

cmd_exec() {
    local node="$1"
    shift
    [ $# -gt 0 ] || die "exec $node: no command"
    node_octet "$node" >/dev/null
    # A UTS namespace of its own: the node's name as hostname.
    exec ip netns exec "$(ns "$node")" unshare --uts sh -c 'hostname "$0" && exec "$@"' "$node" "$@"
}

in_node() {
    local node="$1"
    shift
    node_octet "$node" >/dev/null
    ip netns exec "$(ns "$node")" "$@"
}

cmd_loss() {
    local node="$1" pct="$2" p
    p=$(awk -v x="$pct" 'BEGIN { if (x < 0 || x > 100) exit 1; printf "%.4f", x / 100 }') ||
        die "loss $node $pct: a percentage from 0 to 100"
    for chain in INPUT OUTPUT; do
        in_node "$node" iptables -A "$chain" -m statistic --mode random --probability "$p" -j DROP
    done
}

cmd_block_udp() {
    for chain in INPUT OUTPUT; do in_node "$1" iptables -A "$chain" -p udp -j DROP; done
}

cmd_block_tcp() {
    for chain in INPUT OUTPUT; do in_node "$1" iptables -A "$chain" -p tcp -j DROP; done
}

cmd_rate() {
    local dev
    for dev in eth0 ib0; do
        in_node "$1" tc qdisc replace dev "$dev" root tbf rate "$2" burst 256kb latency 50ms
    done
}

cmd_cut() {
    in_node "$1" ip link set eth0 down
    in_node "$1" ip link set ib0 down
}

cmd_mend() {
    in_node "$1" ip link set eth0 up
    in_node "$1" ip link set ib0 up
}

cmd_clear() {
    in_node "$1" iptables -F
    local dev
    for dev in eth0 ib0; do in_node "$1" tc qdisc del dev "$dev" root >/dev/null 2>&1 || true; done
}

case "${1:-}" in
up) shift; cmd_up "$@" ;;
down) cmd_down ;;
status) cmd_status ;;
env) cmd_env ;;
exec) shift; cmd_exec "$@" ;;
loss) need_root; cmd_loss "$2" "$3" ;;
block-udp) need_root; cmd_block_udp "$2" ;;
block-tcp) need_root; cmd_block_tcp "$2" ;;
rate) need_root; cmd_rate "$2" "$3" ;;
cut) need_root; cmd_cut "$2" ;;
mend) need_root; cmd_mend "$2" ;;
clear) need_root; cmd_clear "$2" ;;
*)
    echo "usage: $0 up [N]|down|status|env|exec NODE CMD...|loss NODE PCT|block-udp NODE|block-tcp NODE|rate NODE RATE|cut NODE|mend NODE|clear NODE" >&2
    exit 2
    ;;
esac
