r"""The probe benchmark: the vmap channel-permutation probe against one forward per ordering.

  python -m gpjax.bench --config=configs/bench/probe.py --workdir=runs/bench/probe
  python -m gpjax.bench --config=configs/bench/probe.py --workdir=runs/bench/probe4 \
      --config.layer=4 --config.orderings=64
  python -m gpjax.bench --config=configs/bench/probe.py --workdir=runs/bench/probe_cpu \
      --config.orderings=64 --config.images=1000 --config.width=16 --config.dtype=float32 \
      --config.repeats=3  # CPU

Writes DIR/probe.json. Targets on one H100 (bf16, width 64, 10,000 96x96 canvases): K=1024
at layer 5 in <= 0.08 s, K=64 at layer 4 in <= 0.7 s. On a 2-core CPU (the third command):
K=64 at layer 5 in 4.3 s against 281 s the official way.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.bench = 'probe'  # What python -m gpjax.bench runs (gpjax.bench.BENCHES).
  config.layer = 5  # Orderings at the input of stage 1..4, or 5 = the pooled vector.
  config.orderings = 1024  # K, the identity included.
  config.images = 10000  # Random test canvases.
  config.dtype = 'bfloat16'  # Compute dtype: float32 or bfloat16.
  config.width = 64  # Channels of stage 1 (paper: 64).
  config.grid = 3  # g: canvases of 32g x 32g, g*g classes.
  config.backbone = 'resnet18'  # Any of gpjax.models.classifier.BACKBONES.
  config.ordering_chunk = 0  # Orderings at once; 0 = all K at layer 5, 8 at layers 1-4.
  # Canvases per probe call over all devices: with image_chunk this, not images, sets the
  # memory (configs/permutation_probe.py: 2000).
  config.batch = 2000
  config.image_chunk = 500  # Canvases per device at once within a call (permutation_probe: 500).
  config.official_orderings = 3  # Orderings timed the official way (its K time is extrapolated).
  config.official_batch = 1000  # Images per jitted forward in the official loop.
  config.repeats = 5  # Timed rounds, each one probe call and one official ordering (medians).
  config.warmup = 1  # Untimed calls after compiling.
  config.seed = 0  # Model init, canvases and orderings.
  config.lock()
  return config
