r"""Benchmarks, each measured against its baseline in the same run.

  python -m gpjax.bench --config=configs/bench/NAME.py --workdir=DIR [--config.FIELD=VALUE ...]

writes the record DIR/NAME.json (never over an existing one). NAME, one config each in
configs/bench/:

  probe   python -m gpjax.bench --config=configs/bench/probe.py --workdir=runs/bench/probe
  train   python -m gpjax.bench --config=configs/bench/train.py --workdir=runs/bench/train
  eval    python -m gpjax.bench --config=configs/bench/eval.py --workdir=runs/bench/eval
  canvas  python -m gpjax.bench --config=configs/bench/canvas.py --workdir=runs/bench/canvas
  seeds   python -m gpjax.bench --config=configs/bench/seeds.py --workdir=runs/bench/seeds
  xla     python -m gpjax.bench --config=configs/bench/xla.py --workdir=runs/bench/xla
  parity  python -m gpjax.bench --config=configs/bench/parity.py --workdir=runs/bench/parity
  checkpoint  python -m gpjax.bench --config=configs/bench/checkpoint.py \
              --workdir=runs/bench/checkpoint

``probe`` (`gpjax.bench.probe`): orderings per second of the vmap channel-permutation
probe against one full forward pass per ordering. ``train`` / ``eval`` / ``canvas``
(`gpjax.bench.steps`): images per second of the real training step, evaluation step
and canvas builder on synthetic sources. ``seeds`` (`gpjax.bench.seeds`): R seeds stepped
in one program (`gpjax.core.multirun`) against one after another, and the PyTorch step
(`gpjax.bench.torch_reference`). ``xla`` (`gpjax.bench.xla`): the train step under XLA_FLAGS
settings against XLA's defaults and PyTorch. ``checkpoint`` (`gpjax.bench.checkpoint`): a
train state saved and restored packed against leaf by leaf. `gpjax.bench.measure` holds what all of them
measure alike (synchronised times, the environment, FLOPs, memory).

Each benchmark module has ``validate(config)`` (raises `gpjax.errors.ConfigError`
before any work), ``run(config, workdir) -> dict`` that measures, and ``show(record)``;
`run` here checks, runs, prints and writes the record.
"""

import json
import os
from typing import Any

import ml_collections
from absl import flags
from ml_collections import config_flags

from gpjax.bench import checkpoint, measure, parity, probe, seeds, steps, xla
from gpjax import cli
from gpjax.checks import one_of

# What a config's `bench` field runs: the module with its validate, run and show.
BENCHES = {'probe': probe, 'train': steps, 'eval': steps, 'canvas': steps, 'seeds': seeds,
           'xla': xla, 'parity': parity, 'checkpoint': checkpoint}


def define_flags(flag_values: flags.FlagValues, argv: list[str] | None = None) -> None:
  """``--config`` (locked) and ``--workdir`` on ``flag_values``; ``argv`` (default sys.argv)
  holds the ``--config.FIELD`` overrides."""
  flags.DEFINE_string('workdir', None, 'Directory of the record DIR/NAME.json (never '
                      'overwritten).', flag_values=flag_values)
  config_flags.DEFINE_config_file('config', None, 'Benchmark config: configs/bench/NAME.py.',
                                  flag_values=flag_values, lock_config=True, sys_argv=argv)
  flags.mark_flags_as_required(['config', 'workdir'], flag_values=flag_values)


def parse_flags(argv: list[str], flag_values: flags.FlagValues = flags.FLAGS) -> list[str]:
  """`gpjax.cli.parse_flags` with a benchmark config as the example."""
  return cli.parse_flags(argv, flag_values, example='configs/bench/probe.py')


def check(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError unless ``config.bench`` names a benchmark that accepts ``config``."""
  one_of('bench', config.bench, BENCHES)
  BENCHES[config.bench].validate(config)


def run(config: ml_collections.ConfigDict, workdir: str, argv: list[str]) -> dict[str, Any]:
  """Checks ``config``, runs its benchmark, prints the record and writes it to
  ``workdir/NAME.json``; returns it. ``argv``: the command's arguments, for the record.

  Raises ConfigError (before any work, or on a check that needs the devices) and
  FileExistsError where the record exists already."""
  check(config)
  path = os.path.join(workdir, f'{config.bench}.json')
  if os.path.exists(path):
    raise FileExistsError(f'{path} holds a record already; give another --workdir.')
  module = BENCHES[config.bench]
  body = module.run(config, workdir)
  record = {'benchmark': config.bench, **measure.environment(argv), **body,
            'config': config.to_dict()}
  record['peak_rss_bytes'] = measure.peak_rss_bytes()  # The whole run's, compiles included.
  module.show(record)
  print(f"peak resident memory of this process: {record['peak_rss_bytes'] / 2 ** 20:.0f} MiB")
  os.makedirs(workdir, exist_ok=True)
  with open(path, 'x') as f:  # 'x': never over a record written meanwhile.
    json.dump(record, f, indent=2)
  print(f'wrote {path}')
  return record
