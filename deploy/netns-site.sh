#!/usr/bin/env bash
# Builds (or removes) a network namespace for one edge site, linked to the host by a veth
# pair, so that several sites on one machine have distinct addresses.
#
#   deploy/netns-site.sh up   NAME INDEX   # namespace NAME, subnet 10.203.INDEX.0/24
#   deploy/netns-site.sh down NAME INDEX
#
# The host side gets 10.203.INDEX.1, the site side 10.203.INDEX.2 (its default route points
# at the host). Run a site inside with:
#   ip netns exec NAME mecfed agent --controller http://10.203.INDEX.1:8080 \
#       --advertise 10.203.INDEX.2 ...
# (the platform must listen on an address the namespace reaches, e.g. --listen 0.0.0.0:8080).
# Needs root and iproute2. INDEX is 1..254.
set -euo pipefail
cmd=${1:?usage: netns-site.sh up|down NAME INDEX}
name=${2:?namespace name}
index=${3:?index 1..254}
case "$index" in
  ''|*[!0-9]*) echo "netns-site.sh: INDEX must be a number 1..254" >&2; exit 2 ;;
esac
if [ "$index" -lt 1 ] || [ "$index" -gt 254 ]; then
  echo "netns-site.sh: INDEX must be 1..254" >&2; exit 2
fi
host_if="mf${index}h"
site_if="mf${index}n"
net="10.203.${index}"

down() {
  ip netns del "$name" 2>/dev/null || true
  ip link del "$host_if" 2>/dev/null || true
}

case "$cmd" in
  up)
    down
    ip netns add "$name"
    ip link add "$host_if" type veth peer name "$site_if"
    ip link set "$site_if" netns "$name"
    ip addr add "${net}.1/24" dev "$host_if"
    ip link set "$host_if" up
    ip netns exec "$name" ip addr add "${net}.2/24" dev "$site_if"
    ip netns exec "$name" ip link set "$site_if" up
    ip netns exec "$name" ip link set lo up
    ip netns exec "$name" ip route add default via "${net}.1"
    ;;
  down)
    down
    ;;
  *)
    echo "netns-site.sh: unknown command $cmd (up|down)" >&2
    exit 2
    ;;
esac
