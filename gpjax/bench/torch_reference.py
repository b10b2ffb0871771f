r"""The PyTorch reference of the seeds benchmark: the official GAPNet ResNet-18
(`gpjax.bench.official_torch`) trained with Adam on random canvases, timed per step.

  python -m gpjax.bench.torch_reference --width 8 --batch 32 --size 48 --classes 9

Run as its own process by `gpjax.bench.seeds` (torch is a test extra, never imported by
a gpjax run); prints one JSON line. The canvases are random floats made before the loop
(gpjax's step also builds its canvases, a small share of its time).
"""

import argparse
import json
import statistics
import time

import torch
from torch.nn import functional as F

from gpjax.bench import official_torch


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--width', type=int, default=8)
  p.add_argument('--batch', type=int, default=32)
  p.add_argument('--size', type=int, default=48, help='canvas side')
  p.add_argument('--classes', type=int, default=9)
  p.add_argument('--steps', type=int, default=20)
  p.add_argument('--warmup', type=int, default=3)
  p.add_argument('--threads', type=int, default=0, help='0 = torch default')
  args = p.parse_args()
  if args.threads:
    torch.set_num_threads(args.threads)
  torch.manual_seed(0)
  model = official_torch.ResNet18Official('gapnet', args.classes, args.width)
  optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
  images = torch.randn(args.batch, 3, args.size, args.size)
  labels = torch.randint(0, args.classes, (args.batch,))
  seconds = []
  for i in range(args.warmup + args.steps):
    start = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(images), labels)
    loss.backward()
    optimizer.step()
    loss.item()  # Synchronise (CPU: already done; kept for other backends).
    if i >= args.warmup:
      seconds.append(time.perf_counter() - start)
  print(json.dumps({'seconds_per_step': statistics.median(seconds),
                    'seconds_per_step_all': seconds, 'threads': torch.get_num_threads(),
                    'torch_version': torch.__version__, 'dtype': 'float32',
                    'optimizer': 'adam'}))


if __name__ == '__main__':
  main()
