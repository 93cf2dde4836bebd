#!/usr/bin/env bash
# Installs the Debian packages named after LABEL that are not installed yet (apt-get update
# only when something is missing). Usage: apt-install.sh LABEL PACKAGE...
set -euo pipefail
label=$1
shift
missing=()
for pkg in "$@"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
echo "$label: installing ${missing[*]}"
as_root apt-get update -qq
# A server package would start a cluster of its own; facematch runs its own servers.
as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
