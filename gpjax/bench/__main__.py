r"""Runs one benchmark: ``python -m gpjax.bench --config=configs/bench/NAME.py --workdir=DIR``.

Any config field can be overridden, e.g. ``--config.width=16`` or ``--config.batch=8,16``
(a tuple). The record goes to DIR/NAME.json and is never overwritten. The configs
(configs/bench/NAME.py; see `gpjax.bench`):

  probe    the vmap channel-permutation probe against one forward per ordering
  train    images/s of the classification train step (shard_map + jit, donated state)
  eval     images/s of the classification eval step
  canvas   canvases/s of gpjax.data.canvas.canvas_batch on the device
  seeds    seeds in one program (gpjax.core.multirun) against one after another; the PyTorch step
  xla      the train step under XLA_FLAGS settings against the defaults and PyTorch
  parity   the official recipe (a PyTorch transcription) trained beside gpjax, test accuracy
  checkpoint  a train state saved and restored packed against leaf by leaf (Orbax's layout)
"""

import sys

from absl import app
from absl import flags

from gpjax import bench
from gpjax.errors import ConfigError

FLAGS = flags.FLAGS
bench.define_flags(FLAGS)
flags.adopt_module_key_flags(bench)  # --help lists --config and --workdir.


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  try:
    bench.run(FLAGS.config, FLAGS.workdir, sys.argv[1:])
  except ConfigError as e:
    sys.exit(f'Bad config: {e}')
  except FileExistsError as e:
    sys.exit(f'Not overwritten: {e}')


if __name__ == '__main__':
  app.run(main, flags_parser=bench.parse_flags)
