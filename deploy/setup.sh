#!/usr/bin/env bash
# Installs what loco needs to build, test and run on Debian 12 (run as root, or it uses sudo).
# Everything comes from Debian's archive; nothing is downloaded from elsewhere.
set -euo pipefail
pkgs=(
    build-essential pkg-config
    libzmq3-dev libsodium-dev libssl-dev        # transport, identities, digests
    libopenblas-dev libopenblas-openmp-dev      # CPU matmuls (the OpenMP build shares loco's thread pool)
    libmicrohttpd-dev                           # the Prometheus metrics endpoint ([metrics] listen)
    libcriterion-dev                            # unit tests
    python3-torch python3-numpy                 # the reference implementation in tests and benchmarks
    fortunes                                    # the default corpus
    gnuplot-nox                                 # loco plot draws metrics with it (tests/integration/test_plot.sh)
    systemd groff-base                          # test_deploy.sh: systemd-analyze verify of deploy/loco.service (the
                                                #   package only, not systemd-sysv: the init system stays), man page render
    iproute2 procps time                        # network namespaces for WAN tests; ps/time for benchmarks
    clang libclang-rt-14-dev libomp-14-dev      # fuzzing (make fuzz)
    prometheus curl                             # tests/integration/test_prometheus.sh scrapes a node with a real Prometheus
)
SUDO=
[ "$(id -u)" -eq 0 ] || SUDO=sudo
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update
    $SUDO apt-get install -y "${missing[@]}"
fi
