#!/bin/sh
# install_deps.sh: install the Debian packages xlua needs, if any are missing.
# Run as root (or with sudo available); does nothing when everything is present.
set -e
PACKAGES="build-essential cmake pkg-config git luajit libluajit-5.1-dev libopenblas-openmp-dev
libpng-dev zlib1g-dev libstb-dev libreadline-dev lua-busted lua-argparse lua-penlight
lua-dkjson dataset-fashion-mnist clang libclang-rt-dev libomp-dev"
missing=""
for p in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "install_deps: installing:$missing"
if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO="sudo"; else
    echo "install_deps: not root and no sudo; run as root: apt-get install$missing" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends $missing
