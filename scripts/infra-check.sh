#!/usr/bin/env bash
# Checks infra/terraform offline: formatting, and checkov's policies (its own venv, no download
# of external checks). Every checkov skip must carry its reason (#checkov:skip=ID:reason).
# `terraform validate/plan` need the provider from the registry and are not run here.
set -euo pipefail
cd "$(dirname "$0")/.."
# A TF_CLI_CONFIG_FILE naming a missing file only makes terraform warn.
[ -e "${TF_CLI_CONFIG_FILE:-/nonexistent}" ] || unset TF_CLI_CONFIG_FILE
scripts/python-tools.sh checkov
command -v terraform >/dev/null || { echo "infra-check: terraform is required" >&2; exit 1; }
terraform fmt -check -recursive -diff infra/terraform
unjustified=$(grep -rn 'checkov:skip=' infra/terraform | grep -v 'checkov:skip=[A-Z0-9_]*:.\{15,\}' || true)
if [ -n "$unjustified" ]; then
  echo "infra-check: checkov skips without a reason:" >&2
  echo "$unjustified" >&2
  exit 1
fi
.local/venv-checkov/bin/checkov --directory infra/terraform --framework terraform --skip-download \
  --compact --quiet
echo "infra-check: terraform fmt and checkov passed ($(grep -rc 'checkov:skip=' infra/terraform | awk -F: '{s+=$2} END {print s}') justified skips)"
