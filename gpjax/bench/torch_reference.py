r"""The PyTorch reference of the seeds benchmark: the official GAPNet ResNet-18 structure (7x7
stride-2 stem without max-pool, BasicBlocks with 1x1 projection shortcuts, a 3x3 class-map
conv, global average pooling) trained with Adam on random canvases, timed per step.

  python -m gpjax.bench.torch_reference --width 8 --batch 32 --size 48 --classes 9

Run as its own process by `gpjax.bench.seeds` (torch is a test extra, never imported by
gpjax itself); prints one JSON line. Written for the benchmark from the paper's description
of the network; the canvases are random floats made before the loop (gpjax's step also
builds its canvases, a small share of its time).
"""

import argparse
import json
import statistics
import time

import torch
from torch import nn
from torch.nn import functional as F


class Block(nn.Module):
  """BasicBlock: two 3x3 convs (no bias) with BatchNorm, a 1x1 projection where shapes change."""

  def __init__(self, cin: int, cout: int, stride: int):
    super().__init__()
    self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(cout)
    self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(cout)
    self.shortcut = nn.Sequential()
    if stride != 1 or cin != cout:
      self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                    nn.BatchNorm2d(cout))

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    out = F.relu(self.bn1(self.conv1(x)))
    return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class GapNet18(nn.Module):
  """(N, 3, H, W) -> (N, classes) logits."""

  def __init__(self, width: int, classes: int):
    super().__init__()
    self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
    self.bn1 = nn.BatchNorm2d(width)
    layers, cin = [], width
    for i, cout in enumerate((width, 2 * width, 4 * width, 8 * width)):
      stride = 1 if i == 0 else 2
      layers.append(nn.Sequential(Block(cin, cout, stride), Block(cout, cout, 1)))
      cin = cout
    self.layers = nn.Sequential(*layers)
    self.pre_classifier = nn.Conv2d(cin, classes, 3, padding=1)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    x = self.layers(F.relu(self.bn1(self.conv1(x))))
    return self.pre_classifier(x).mean(dim=(2, 3))


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
  model = GapNet18(args.width, args.classes)
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
    float(loss)  # Synchronise (CPU: already done; kept for other backends).
    if i >= args.warmup:
      seconds.append(time.perf_counter() - start)
  print(json.dumps({'seconds_per_step': statistics.median(seconds),
                    'seconds_per_step_all': seconds, 'threads': torch.get_num_threads(),
                    'torch_version': torch.__version__, 'dtype': 'float32',
                    'optimizer': 'adam'}))


if __name__ == '__main__':
  main()
