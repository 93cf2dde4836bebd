#!/usr/bin/env bash
# Installs pgvector 0.8.0 into this machine's PostgreSQL 15, for `make bench-pgvector` only.
# pgvector 0.8 is not packaged for Debian bookworm; this builds Debian trixie's source package
# (the upstream tarball as Debian ships it, checked against the sha256 of its .dsc) with
# postgresql-server-dev-15. Quick when the right version is already installed.
set -euo pipefail
cd "$(dirname "$0")/.."
version=0.8.0
tarball=pgvector_$version.orig.tar.gz
# From pgvector_0.8.0-1.dsc (Checksums-Sha256), Debian trixie.
sha256=867a2c328d4928a5a9d6f052cd3bc78c7d60228a9b914ad32aa3db88e9de27b0
url=http://deb.debian.org/debian/pool/main/p/pgvector/$tarball
pg_config=/usr/lib/postgresql/15/bin/pg_config

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

installed() {
  [ -x "$pg_config" ] || return 1
  [ -f "$("$pg_config" --pkglibdir)/vector.so" ] &&
    grep -q "default_version = '$version'" "$("$pg_config" --sharedir)/extension/vector.control" 2>/dev/null
}
installed && exit 0

scripts/apt-install.sh pgvector postgresql-server-dev-15 make gcc

work=.local/pgvector
mkdir -p "$work"
if ! echo "$sha256  $work/$tarball" | sha256sum --check --status 2>/dev/null; then
  echo "pgvector: downloading $url"
  curl -fsSL --retry 3 -o "$work/$tarball.part" "$url"
  echo "$sha256  $work/$tarball.part" | sha256sum --check --status ||
    { echo "pgvector: $url does not match the sha256 of Debian's .dsc" >&2; exit 1; }
  mv "$work/$tarball.part" "$work/$tarball"
fi
rm -rf "$work/src" && mkdir -p "$work/src"
tar -xzf "$work/$tarball" -C "$work/src" --strip-components=1
echo "pgvector: building $version"
# The upstream default (-march=native) is what someone building it for this machine gets.
make -s -C "$work/src" PG_CONFIG="$pg_config" -j"$(nproc)" >/dev/null
as_root make -s -C "$work/src" PG_CONFIG="$pg_config" install >/dev/null
installed || { echo "pgvector: installed, but PostgreSQL 15 does not see version $version" >&2; exit 1; }
echo "pgvector: $version installed into $("$pg_config" --pkglibdir)"
