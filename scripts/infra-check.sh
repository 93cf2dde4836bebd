#!/usr/bin/env bash
# Checks infra/terraform offline: formatting; with a local mirror of the AWS provider, `terraform
# validate` against the provider's real schema and `terraform test` (mocked provider, no account);
# and checkov's policies (its own venv, no download of external checks). Every checkov skip must
# carry its reason (#checkov:skip=ID:reason).
#
# The provider mirror is a directory laid out as terraform's -plugin-dir expects
# (registry.terraform.io/hashicorp/aws/<version>/<os>_<arch>/terraform-provider-aws_*): TF_PLUGIN_DIR
# names it, else the usual places and then a bounded search of the file system find one. Without
# one, validate and test are skipped (said so), fmt and checkov still run.
#
# Terraform works on a copy of infra/terraform under .local/terraform, with its data directory
# there too: no .terraform directory or .terraform.lock.hcl lands in the tree.
set -euo pipefail
cd "$(dirname "$0")/.."
# A TF_CLI_CONFIG_FILE naming a missing file only makes terraform warn.
[ -e "${TF_CLI_CONFIG_FILE:-/nonexistent}" ] || unset TF_CLI_CONFIG_FILE
export CHECKPOINT_DISABLE=1 # no version check over the network
scripts/python-tools.sh checkov
command -v terraform >/dev/null || { echo "infra-check: terraform is required" >&2; exit 1; }
terraform fmt -check -recursive -diff infra/terraform
unjustified=$(grep -rn 'checkov:skip=' infra/terraform | grep -v 'checkov:skip=[A-Z0-9_]*:.\{15,\}' || true)
if [ -n "$unjustified" ]; then
  echo "infra-check: checkov skips without a reason:" >&2
  echo "$unjustified" >&2
  exit 1
fi

# The provider for this machine, e.g. linux_amd64.
platform=$(terraform version -json | sed -n 's/^ *"platform": *"\([^"]*\)".*/\1/p')
[ -n "$platform" ] || { echo "infra-check: cannot tell terraform's platform" >&2; exit 1; }
# Prints the mirror root holding an AWS provider for $platform under $1, if any (the binary sits
# at <root>/registry.terraform.io/hashicorp/aws/<version>/<platform>/terraform-provider-aws*).
mirror_in() {
  local binary
  binary=$(find "$1" -maxdepth 7 -path "*/registry.terraform.io/hashicorp/aws/*/$platform/terraform-provider-aws*" \
    -type f 2>/dev/null | head -n 1)
  [ -n "$binary" ] && (cd "$(dirname "$binary")/../../../../.." && pwd)
}
mirror=
if [ -n "${TF_PLUGIN_DIR:-}" ]; then
  mirror=$(mirror_in "$TF_PLUGIN_DIR") || {
    echo "infra-check: TF_PLUGIN_DIR=$TF_PLUGIN_DIR holds no hashicorp/aws provider for $platform" >&2
    exit 1
  }
else
  for dir in /opt/tf-plugins "${HOME:-/nonexistent}/.terraform.d/plugins" \
    "${XDG_DATA_HOME:-${HOME:-/nonexistent}/.local/share}/terraform/plugins" \
    /usr/local/share/terraform/plugins /usr/share/terraform/plugins; do
    [ -d "$dir" ] && mirror=$(mirror_in "$dir") && break
  done
  if [ -z "$mirror" ]; then
    # Anywhere else on this file system, a few levels deep, skipping what cannot hold it.
    binary=$(timeout 30 find / -xdev -maxdepth 9 \
      \( -path /proc -o -path /sys -o -path /dev -o -path /run -o -path "$PWD/target" \
      -o -path "$PWD/.local" -o -path '*/.git' -o -path '*/node_modules' \) -prune \
      -o -type f -name 'terraform-provider-aws*' -path "*/registry.terraform.io/hashicorp/aws/*/$platform/*" \
      -print 2>/dev/null | head -n 1 || true)
    [ -n "$binary" ] && mirror=$(cd "$(dirname "$binary")/../../../../.." && pwd)
  fi
fi

tests=0
if [ -z "$mirror" ]; then
  echo "infra-check: SKIPPED terraform validate and terraform test: no local mirror of the" \
    "hashicorp/aws provider for $platform (set TF_PLUGIN_DIR to one; the registry is not used)"
else
  work=$PWD/.local/terraform
  rm -rf "$work/module"
  mkdir -p "$work/module"
  cp infra/terraform/*.tf "$work/module/"
  cp -R infra/terraform/tests "$work/module/"
  export TF_DATA_DIR=$work/data TF_IN_AUTOMATION=1
  echo "infra-check: terraform init -plugin-dir $mirror"
  terraform -chdir="$work/module" init -plugin-dir "$mirror" -backend=false -input=false -no-color >"$work/init.log" 2>&1 || {
    cat "$work/init.log" >&2
    echo "infra-check: terraform init failed" >&2
    exit 1
  }
  terraform -chdir="$work/module" validate -no-color
  terraform -chdir="$work/module" test -no-color | tee "$work/test.log"
  tests=$(sed -n 's/^Success! \([0-9]*\) passed.*/\1/p' "$work/test.log")
fi

.local/venv-checkov/bin/checkov --directory infra/terraform --framework terraform --skip-download \
  --compact --quiet
skips=$(grep -rc 'checkov:skip=' infra/terraform | awk -F: '{s+=$2} END {print s}')
if [ -n "$mirror" ]; then
  echo "infra-check: terraform fmt, validate, test ($tests runs passed) and checkov passed ($skips justified skips)"
else
  echo "infra-check: terraform fmt and checkov passed ($skips justified skips); validate and test SKIPPED (no provider mirror)"
fi
