#!/usr/bin/env bash
# Python tools in venvs of their own under .local (nothing touches the system Python):
#   moto    moto[server]==5.2.5, the EMR API emulator of the EMR tests (ARCHITECTURE.md: Testing;
#           5.2.1 breaks aws-sdk-s3 multipart)
#   checkov checkov, the Terraform policy scanner of `make infra-check`
#   bench   numpy and faiss-cpu, the peers of `make bench`; psycopg for `make bench-pgvector`
# Usage: python-tools.sh moto|checkov ... ; quick when already installed.
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in "$@"; do
  case $tool in
    moto) dir=.local/venv-moto exe=moto_server spec='moto[server]==5.2.5' ;;
    checkov) dir=.local/venv-checkov exe=checkov spec='checkov==3.3.30' ;;
    bench) dir=.local/venv-bench exe=bench-peers-2 spec='numpy==2.4.6 faiss-cpu==1.15.1 psycopg[binary]==3.3.9' ;;
    *) echo "python-tools: unknown tool $tool" >&2; exit 2 ;;
  esac
  [ -e "$dir/bin/$exe" ] && continue
  echo "python-tools: installing $spec into $dir"
  rm -rf "$dir"
  python3 -m venv "$dir"
  # shellcheck disable=SC2086 # a spec may name several packages
  "$dir/bin/pip" install --quiet --disable-pip-version-check $spec
  # The bench venv has no single program to look for: a marker names its package set.
  if [ "$tool" = bench ]; then touch "$dir/bin/$exe"; fi
done
