#!/usr/bin/env bash
# Python tools in venvs of their own under .local (nothing touches the system Python):
#   moto    moto[server]==5.2.5, the EMR API emulator of the EMR tests (SPEC section 7;
#           5.2.1 breaks aws-sdk-s3 multipart)
#   checkov checkov, the Terraform policy scanner of `make infra-check`
# Usage: python-tools.sh moto|checkov ... ; quick when already installed.
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in "$@"; do
  case $tool in
    moto) dir=.local/venv-moto exe=moto_server spec='moto[server]==5.2.5' ;;
    checkov) dir=.local/venv-checkov exe=checkov spec='checkov==3.3.30' ;;
    *) echo "python-tools: unknown tool $tool" >&2; exit 2 ;;
  esac
  [ -x "$dir/bin/$exe" ] && continue
  echo "python-tools: installing $spec into $dir"
  rm -rf "$dir"
  python3 -m venv "$dir"
  "$dir/bin/pip" install --quiet --disable-pip-version-check "$spec"
done
