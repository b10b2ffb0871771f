#!/usr/bin/env bash
# The benchmarks to run on one GPU machine (works offline): train, eval and canvas at
# batch 48/256/1024 in float32 and bfloat16, seeds in one program (gpjax.multirun) and the
# channel-permutation probe, each writing a JSON record OUTDIR/RUN/NAME.json (never over an
# existing one). Every record has its own baseline (a bf16 8192^3 matmul) measured in the
# same process.
#   launch/gpu_bench.sh [OUTDIR]      OUTDIR: default $OUT if set, else docs/benchmarks/
# Knobs (environment): BATCHES=48,256,1024 DTYPES=float32,bfloat16 STEPS=30 WARMUP=5
# WIDTH=64 GRID=3 PROBE=1 (0 skips the probe) PROBE_IMAGES=10000 PYTHON=python.
# Needs jax, flax, optax, orbax-checkpoint, numpy, tqdm, Pillow, ml-collections (the
# benchmark configs, configs/bench/, and the step's, configs/location.py) and
# tensorflow-datasets (the task modules read data through it); no scikit-learn or
# tensorboardX. Without them, the wheels in launch/wheels (see launch/wheels/README.md) are
# installed into launch/wheels/site and put on PYTHONPATH.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-docs/benchmarks}}
py=${PYTHON:-python}
if ! "$py" -c 'import ml_collections, tensorflow_datasets' 2>/dev/null; then
  "$py" -m pip install --quiet --no-index --no-deps --target launch/wheels/site \
      launch/wheels/*.whl
  export PYTHONPATH="$PWD/launch/wheels/site${PYTHONPATH:+:$PYTHONPATH}"
fi
batches=${BATCHES:-48,256,1024}
dtypes=${DTYPES:-float32,bfloat16}
steps=${STEPS:-30}
warmup=${WARMUP:-5}
width=${WIDTH:-64}
grid=${GRID:-3}
probe_images=${PROBE_IMAGES:-10000}
mkdir -p "$out"

tag=$("$py" -c 'import jax; print(jax.devices()[0].platform)')
dtype_tuple="('${dtypes//,/\',\'}',)"  # float32,bfloat16 -> ('float32','bfloat16',)
common=(--config.batch="$batches" --config.steps="$steps" --config.warmup="$warmup"
        --config.grid="$grid")
model=(--config.dtype="$dtype_tuple" --config.width="$width")
# bench NAME RUN [--config.FIELD=VALUE ...]: configs/bench/NAME.py, record $out/RUN/NAME.json.
bench() {
  local name=$1 dir=$out/$2
  shift 2
  echo "== python -m gpjax.bench --config=configs/bench/$name.py --workdir=$dir $*"
  "$py" -m gpjax.bench --config="configs/bench/$name.py" --workdir="$dir" "$@"
}

bench train "train_gapnet_$tag" "${common[@]}" "${model[@]}" --config.head=gapnet
bench train "train_permutenet_$tag" "${common[@]}" "${model[@]}" --config.head=permutenet
bench eval "eval_gapnet_$tag" "${common[@]}" "${model[@]}" --config.head=gapnet
bench canvas "canvas_$tag" "${common[@]}"
# Three seeds of the paper's cell (batch 48, width 64, 32x32 sources) in one program vs one
# after another: at batch 48 one run leaves a GPU mostly idle.
bench seeds "seeds_$tag" --config.seeds=3 --config.width="$width" --config.source_size=32 \
    --config.batch=48 --config.grid="$grid" --config.steps="$steps" --config.warmup="$warmup" \
    --config.torch=off
if [[ ${PROBE:-1} != 0 ]]; then
  for dtype in ${dtypes//,/ }; do
    bench probe "probe_layer5_${dtype}_$tag" --config.layer=5 --config.orderings=1024 \
        --config.images="$probe_images" --config.dtype="$dtype" --config.width="$width" \
        --config.grid="$grid"
    bench probe "probe_layer4_${dtype}_$tag" --config.layer=4 --config.orderings=64 \
        --config.images="$probe_images" --config.dtype="$dtype" --config.width="$width" \
        --config.grid="$grid"
  done
fi
echo "records in $out"
