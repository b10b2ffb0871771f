#!/usr/bin/env bash
# One machine, all its GPUs (or the CPU): one process drives every local device.
#   launch/local.sh configs/location.py runs/location [--config.field=value ...]
set -euo pipefail
config=${1:?usage: launch/local.sh CONFIG WORKDIR [overrides...]}
workdir=${2:?usage: launch/local.sh CONFIG WORKDIR [overrides...]}
shift 2
exec python -m gpjax.main --config="$config" --workdir="$workdir" "$@"
