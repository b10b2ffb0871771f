r"""Benchmarks, each measured against its baseline in the same run.

  python -m gpjax.bench probe --layer 5 --orderings 1024 --images 10000 --dtype bfloat16
  python -m gpjax.bench train --batch 48,256,1024 --dtype float32,bfloat16 --out train.json
  python -m gpjax.bench eval --batch 256,1024 --head permutenet
  python -m gpjax.bench canvas --batch 1024 --grid 3
  python -m gpjax.bench seeds --seeds 3 --width 8 --batch 32 --cell-steps 400
  python -m gpjax.bench xla --width 8 --source-size 16 --batch 16,32,64

``probe`` (`gpjax.bench.probe`): orderings per second of the vmap channel-permutation
probe against one full forward pass per ordering. ``train`` / ``eval`` / ``canvas``
(`gpjax.bench.steps`): images per second of the real training step, evaluation step
and canvas builder on synthetic sources. ``seeds`` (`gpjax.bench.seeds`): R seeds stepped
in one program (`gpjax.core.multirun`) against one after another, and the PyTorch step
(`gpjax.bench.torch_reference`). ``xla`` (`gpjax.bench.xla`): the train step under XLA_FLAGS
settings against XLA's defaults and PyTorch. `gpjax.bench.measure` holds what all of them
measure alike (synchronised times, the environment, FLOPs, memory).

Each subcommand is an ``add_NAME(subparsers)`` that declares its flags and a
``bench_NAME(args) -> record`` that measures; `main` prints and saves the record.
"""

import argparse
import json
import os
import sys
from typing import Any

from gpjax.bench import measure, probe, seeds, steps, xla

BENCHMARKS = {'probe': (probe.bench_probe, probe.print_probe),
              'train': (steps.bench_train, steps.print_steps),
              'eval': (steps.bench_eval, steps.print_steps),
              'canvas': (steps.bench_canvas, steps.print_steps),
              'seeds': (seeds.bench_seeds, seeds.print_seeds),
              'xla': (xla.bench_xla, xla.print_xla)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
  """Runs one benchmark from its command line (``sys.argv[1:]`` by default), prints its
  record, writes it to ``--out`` if given, and returns it."""
  parser = argparse.ArgumentParser(prog='python -m gpjax.bench', description=__doc__.split('\n')[0])
  subparsers = parser.add_subparsers(dest='command', required=True)
  for add in (probe.add_probe, steps.add_train, steps.add_eval, steps.add_canvas,
              seeds.add_seeds, xla.add_xla):
    add(subparsers)
  argv = sys.argv[1:] if argv is None else list(argv)
  args = parser.parse_args(argv)
  bench, show = BENCHMARKS[args.command]
  record = {'benchmark': args.command, **measure.environment(argv), **bench(args)}
  record['peak_rss_bytes'] = measure.peak_rss_bytes()  # The whole run's, compiles included.
  show(record)
  print(f"peak resident memory of this process: {record['peak_rss_bytes'] / 2 ** 20:.0f} MiB")
  if args.out:
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, 'w') as f:
      json.dump(record, f, indent=2)
    print(f'wrote {args.out}')
  return record
