"""A PyTorch transcription of the official ResNet-18 GAPNet and PermuteNet and their recipe.

Written from the official repository's description (islamamirul/PermuteNet,
``models/resnet.py``: ``ResNet18PositionGAP`` and ``ResNet18PositionShuffle``;
``trainval_*.py``), with the width a parameter (official: 64) and the ordering
an argument (the official forward draws ``torch.randperm`` itself; `draw_ordering`
does so here). Parameter names are the official ones, so ``state_dict()`` moves
to and from gpjax through `gpjax.interop.torch_classifier`.

Imports torch: used by `gpjax.bench.parity` and the tests only, never by a gpjax run.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

LR = 1e-3  # Official: optim.Adam(net.parameters(), lr=0.001, betas=(0.5, 0.999)).
BETAS = (0.5, 0.999)  # eps and weight decay are PyTorch's defaults: 1e-8 and 0.
TEST_BATCH = 100  # Official test loader batch; PermuteNet draws one ordering per test batch.


class BasicBlock(nn.Module):
  """3x3 conv-BN-ReLU, 3x3 conv-BN, plus the input (1x1 conv-BN where shapes change), ReLU."""

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
    out = self.bn2(self.conv2(out))
    return F.relu(out + self.shortcut(x))


class ResNet18Official(nn.Module):
  """The official ResNet-18 (7x7/2 stem, no max-pool) with a GAPNet or PermuteNet head.

  Both official classes define ``linear_location`` (GAPNet never uses it) and the
  GAPNet ``pre_classifier``, a 3x3 conv (with bias) whose pooled output is the logits.
  """

  def __init__(self, head: str, num_classes: int, width: int = 64, bn_momentum: float = 0.1):
    super().__init__()
    if head not in ('gapnet', 'permutenet'):
      raise ValueError(f'head {head!r} is not one of (\'gapnet\', \'permutenet\').')
    self.head = head
    self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
    self.bn1 = nn.BatchNorm2d(width)
    cin = width
    for i in range(1, 5):
      cout = width * 2 ** (i - 1)
      stride = 1 if i == 1 else 2
      setattr(self, f'layer{i}', nn.Sequential(BasicBlock(cin, cout, stride),
                                               BasicBlock(cout, cout, 1)))
      cin = cout
    if head == 'gapnet':
      self.pre_classifier = nn.Conv2d(cin, num_classes, 3, padding=1)
    self.linear_location = nn.Linear(cin, num_classes)
    self.stage_channels = (width, width, 2 * width, 4 * width, 8 * width)
    for m in self.modules():  # PyTorch's momentum: running = (1 - m) running + m batch.
      if isinstance(m, nn.BatchNorm2d):
        m.momentum = bn_momentum

  def forward(self, x: torch.Tensor, ordering: torch.Tensor | None = None,
              layer: int = 5) -> torch.Tensor:
    """Logits (N, k) of canvases x (N, 3, H, W); ``ordering`` (C,) permutes the channels of
    the input of stage ``layer`` (1..4) or of the pooled vector (5), as ``out[:, ordering]``."""
    out = F.relu(self.bn1(self.conv1(x)))
    for i in range(1, 5):
      if ordering is not None and layer == i:
        out = out[:, ordering]
      out = getattr(self, f'layer{i}')(out)
    if self.head == 'gapnet':
      out = self.pre_classifier(out)
    out = F.avg_pool2d(out, out.shape[3]).view(out.size(0), -1)
    if self.head == 'gapnet':
      return out
    if ordering is not None and layer == 5:
      out = out[:, ordering]
    return self.linear_location(out)


def draw_ordering(model: ResNet18Official, layer: int,
                  generator: torch.Generator | None = None) -> torch.Tensor:
  """A fresh ``torch.randperm`` of the channels at ``layer``, as each official forward draws."""
  return torch.randperm(model.stage_channels[layer - 1] if layer < 5 else
                        model.stage_channels[4], generator=generator)


def make_optimizer(model: nn.Module, betas: tuple[float, float] = BETAS) -> torch.optim.Adam:
  """The official optimiser: Adam over every parameter, lr 1e-3, betas (0.5, 0.999)."""
  return torch.optim.Adam(model.parameters(), lr=LR, betas=betas)


def train_step(model: ResNet18Official, optimizer: torch.optim.Optimizer, images: torch.Tensor,
               labels: torch.Tensor, ordering: torch.Tensor | None, layer: int = 5) -> float:
  """One official training step (train mode, mean cross-entropy, Adam); the batch's loss."""
  model.train()
  optimizer.zero_grad()
  loss = F.cross_entropy(model(images, ordering, layer), labels)
  loss.backward()
  optimizer.step()
  return float(loss.item())


@torch.no_grad()
def test_accuracy(model: ResNet18Official, images: torch.Tensor, labels: torch.Tensor, *,
                  layer: int = 5, generator: torch.Generator | None = None) -> float:
  """The official test: eval mode, batches of 100, a PermuteNet under a fresh ordering per
  batch; the share of images (N, 3, H, W) whose argmax is their label (N,)."""
  model.eval()
  correct = 0
  for start in range(0, len(labels), TEST_BATCH):
    ordering = (draw_ordering(model, layer, generator) if model.head == 'permutenet'
                else None)
    logits = model(images[start:start + TEST_BATCH], ordering, layer)
    correct += int((logits.argmax(1) == labels[start:start + TEST_BATCH]).sum())
  return correct / len(labels)
