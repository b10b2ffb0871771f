#!/usr/bin/env bash
# Cloud TPU VM (single host or pod slice): runs the same command on every worker;
# jax.distributed finds the peers from the TPU metadata.
#   launch/tpu_vm.sh TPU_NAME ZONE configs/location.py gs://bucket/runs/location [overrides...]
# The repo must be checked out at ~/gpjax on every worker with `pip install -e '.[tpu]'`.
set -euo pipefail
tpu=${1:?usage: launch/tpu_vm.sh TPU_NAME ZONE CONFIG WORKDIR [overrides...]}
zone=${2:?}; config=${3:?}; workdir=${4:?}
shift 4
gcloud compute tpus tpu-vm ssh "$tpu" --zone="$zone" --worker=all --command \
  "cd ~/gpjax && python -m gpjax.main --distributed --config=$config --workdir=$workdir $*"
