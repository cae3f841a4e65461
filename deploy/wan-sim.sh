#!/usr/bin/env bash
# WAN emulation for tests and benchmarks: N peers, each in its own network namespace, joined by
# veth pairs to a bridge that lives in a hub namespace of its own (the host's namespace is never
# touched), on 10.77.<net>.0/24 addresses that route nowhere else. Each peer's link is capped in
# both directions with tc tbf: its upload on the veth end inside the peer, its download on the end
# at the hub. Needs root, iproute2 and the tbf qdisc (netem is not available on these machines, so
# there is no added latency; a delaying proxy is the way to add it).
#
#   deploy/wan-sim.sh up NAME N RATE [RATE_1 ... RATE_N]   namespaces NAME-1..NAME-N and NAME-hub;
#                                                          RATE like 20mbit (every peer) or one per peer
#   deploy/wan-sim.sh limit NAME I J RATE                  cap what peer I sends to peer J (tc htb + u32
#                                                          filter on I's link; under I's own upload cap)
#   deploy/wan-sim.sh partition NAME I...                  cut peers I... off from the others (they keep
#                                                          reaching each other): their hub ports move to
#                                                          a second bridge
#   deploy/wan-sim.sh heal NAME                            every port back on the one bridge
#   deploy/wan-sim.sh addr NAME I                          peer I's address (10.77.<net>.I)
#   deploy/wan-sim.sh exec NAME I COMMAND...               run COMMAND inside peer I's namespace
#   deploy/wan-sim.sh down NAME                            delete everything NAME created
#   deploy/wan-sim.sh check                                exit 0 when namespaces and tbf work here
#
# NAME is at most 8 characters of [a-z0-9] (interface names are limited to 15). Several NAMEs may
# exist at once; each gets its own /24 (derived from NAME).
set -euo pipefail

die() { echo "wan-sim: $*" >&2; exit 2; }
net_of() { echo $(( $(printf '%s' "$1" | cksum | cut -d' ' -f1) % 200 + 20 )); }
check_name() { [[ "$1" =~ ^[a-z0-9]{1,8}$ ]] || die "NAME must be 1-8 characters of [a-z0-9], not '$1'"; }

cmd=${1:-}
case "$cmd" in
check)
    [ "$(id -u)" = 0 ] || { echo "wan-sim: needs root"; exit 1; }
    command -v ip >/dev/null && command -v tc >/dev/null || { echo "wan-sim: needs iproute2 (ip, tc)"; exit 1; }
    n="lwschk$$"
    ip netns add "$n" 2>/dev/null || { echo "wan-sim: cannot create network namespaces here"; exit 1; }
    ok=0
    if ip -n "$n" link add vchk type veth peer name vchk2 2>/dev/null &&
       ip -n "$n" link set vchk up && ip -n "$n" link set vchk2 up &&
       ip netns exec "$n" tc qdisc add dev vchk root tbf rate 10mbit burst 32kb latency 100ms 2>/dev/null; then
        ok=1
    fi
    ip netns del "$n"
    [ $ok = 1 ] || { echo "wan-sim: veth pairs or the tbf qdisc are not available"; exit 1; }
    exit 0
    ;;
up)
    [ $# -ge 4 ] || die "usage: wan-sim.sh up NAME N RATE [RATE_1 ... RATE_N]"
    name=$2 n=$3
    check_name "$name"
    [[ "$n" =~ ^[0-9]+$ ]] && [ "$n" -ge 1 ] && [ "$n" -le 200 ] || die "N must be 1..200"
    shift 3
    rates=("$@")
    [ ${#rates[@]} = 1 ] || [ ${#rates[@]} = "$n" ] || die "give one RATE, or one per peer ($n)"
    net=$(net_of "$name")
    hub="$name-hub"
    ip netns add "$hub"
    ip -n "$hub" link add br0 type bridge
    ip -n "$hub" link set br0 up
    ip -n "$hub" link set lo up
    for i in $(seq "$n"); do
        rate=${rates[0]}
        [ ${#rates[@]} = "$n" ] && rate=${rates[$((i - 1))]}
        ns="$name-$i"
        ip netns add "$ns"
        ip -n "$ns" link set lo up
        ip -n "$hub" link add "p$i" type veth peer name eth0 netns "$ns"
        ip -n "$hub" link set "p$i" master br0 up
        ip -n "$ns" addr add "10.77.$net.$i/24" dev eth0
        ip -n "$ns" link set eth0 up
        # Burst: at least one MTU-size packet per timer tick at this rate; latency bounds the queue.
        ip netns exec "$ns" tc qdisc add dev eth0 root tbf rate "$rate" burst 64kb latency 200ms   # upload
        ip netns exec "$hub" tc qdisc add dev "p$i" root tbf rate "$rate" burst 64kb latency 200ms # download
    done
    ;;
limit)
    [ $# = 5 ] || die "usage: wan-sim.sh limit NAME I J RATE"
    name=$2 i=$3 j=$4 rate=$5
    check_name "$name"
    ns="$name-$i"
    dst="10.77.$(net_of "$name").$j"
    # Replace the peer's plain tbf by an htb tree once: class 1:1 (its upload cap) and the default
    # class 1:99 under it; each destination gets its own class, chosen by a u32 match on the address.
    if ! ip netns exec "$ns" tc qdisc show dev eth0 | grep -q "qdisc htb 1:"; then
        up=$(ip netns exec "$ns" tc qdisc show dev eth0 | grep -o 'rate [0-9.]*[KMG]*bit' | head -1 | cut -d' ' -f2)
        ip netns exec "$ns" tc qdisc del dev eth0 root 2>/dev/null || true
        ip netns exec "$ns" tc qdisc add dev eth0 root handle 1: htb default 99 r2q 100
        ip netns exec "$ns" tc class add dev eth0 parent 1: classid 1:1 htb rate "${up:-10gbit}"
        ip netns exec "$ns" tc class add dev eth0 parent 1:1 classid 1:99 htb rate "${up:-10gbit}"
    fi
    ip netns exec "$ns" tc class replace dev eth0 parent 1:1 classid "1:$((100 + j))" htb rate "$rate"
    ip netns exec "$ns" tc filter add dev eth0 parent 1: protocol ip prio 1 u32 match ip dst "$dst/32" \
        flowid "1:$((100 + j))" 2>/dev/null || true
    ;;
partition)
    [ $# -ge 3 ] || die "usage: wan-sim.sh partition NAME I..."
    check_name "$2"
    hub="$2-hub"
    shift 2
    ip -n "$hub" link show br1 >/dev/null 2>&1 || { ip -n "$hub" link add br1 type bridge && ip -n "$hub" link set br1 up; }
    for i in "$@"; do ip -n "$hub" link set "p$i" master br1; done
    ;;
heal)
    [ $# = 2 ] || die "usage: wan-sim.sh heal NAME"
    check_name "$2"
    hub="$2-hub"
    for p in $(ip -n "$hub" -o link show master br1 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1); do
        ip -n "$hub" link set "$p" master br0
    done
    ;;
addr)
    [ $# = 3 ] || die "usage: wan-sim.sh addr NAME I"
    check_name "$2"
    echo "10.77.$(net_of "$2").$3"
    ;;
exec)
    [ $# -ge 4 ] || die "usage: wan-sim.sh exec NAME I COMMAND..."
    check_name "$2"
    ns="$2-$3"
    shift 3
    exec ip netns exec "$ns" "$@"
    ;;
down)
    [ $# = 2 ] || die "usage: wan-sim.sh down NAME"
    check_name "$2"
    for ns in $(ip netns list | awk '{print $1}' | grep -E "^$2-([0-9]+|hub)$" || true); do
        ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
        ip netns del "$ns"
    done
    ;;
*)
    sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'
    [ -n "$cmd" ] && exit 2 || exit 0
    ;;
esac
