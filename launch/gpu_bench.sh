#!/usr/bin/env bash
# The benchmarks to run on one GPU machine (works offline): train, eval and canvas at
# batch 48/256/1024 in float32 and bfloat16, seeds in one program (gpjax.multirun) and the
# channel-permutation probe, each
# writing a JSON record. Every record has its own baseline (a bf16 8192^3 matmul)
# measured in the same process.
#   launch/gpu_bench.sh [OUTDIR]      OUTDIR: default $OUT if set, else docs/benchmarks/
# Knobs (environment): BATCHES=48,256,1024 DTYPES=float32,bfloat16 STEPS=30 WARMUP=5
# WIDTH=64 GRID=3 PROBE=1 (0 skips the probe) PROBE_IMAGES=10000 PYTHON=python.
# Needs jax, flax, optax, orbax-checkpoint, numpy, tqdm, Pillow and ml-collections (the step
# config is configs/location.py's); no tensorflow-datasets, scikit-learn or tensorboardX.
# Without ml-collections, its wheel in launch/wheels (see launch/wheels/README.md) is
# installed into launch/wheels/site and put on PYTHONPATH.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-docs/benchmarks}}
py=${PYTHON:-python}
if ! "$py" -c 'import ml_collections' 2>/dev/null; then
  "$py" -m pip install --quiet --no-index --no-deps --target launch/wheels/site \
      launch/wheels/ml_collections-*.whl
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
common=(--batch "$batches" --steps "$steps" --warmup "$warmup" --grid "$grid")
model=(--dtype "$dtypes" --width "$width")
bench() { echo "== python -m gpjax.bench $*"; "$py" -m gpjax.bench "$@"; }

bench train "${common[@]}" "${model[@]}" --head gapnet --out "$out/train_gapnet_$tag.json"
bench train "${common[@]}" "${model[@]}" --head permutenet --out "$out/train_permutenet_$tag.json"
bench eval "${common[@]}" "${model[@]}" --head gapnet --out "$out/eval_gapnet_$tag.json"
bench canvas "${common[@]}" --out "$out/canvas_$tag.json"
# Three seeds of the paper's cell (batch 48, width 64, 32x32 sources) in one program vs one
# after another: at batch 48 one run leaves a GPU mostly idle.
bench seeds --seeds 3 --width "$width" --source-size 32 --batch 48 --grid "$grid" \
    --steps "$steps" --warmup "$warmup" --torch off --out "$out/seeds_$tag.json"
if [[ ${PROBE:-1} != 0 ]]; then
  for dtype in ${dtypes//,/ }; do
    bench probe --layer 5 --orderings 1024 --images "$probe_images" --dtype "$dtype" --width "$width" \
        --grid "$grid" --out "$out/probe_layer5_${dtype}_$tag.json"
    bench probe --layer 4 --orderings 64 --images "$probe_images" --dtype "$dtype" --width "$width" \
        --grid "$grid" --out "$out/probe_layer4_${dtype}_$tag.json"
  done
fi
echo "records in $out"
