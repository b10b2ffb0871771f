"""The figures of runs and probes, each a PNG written from the numbers in results.json."""

import importlib
from typing import Any

import numpy as np

from gpjax import lazy


def _file_backend() -> None:
  """Files only, no display: the same on a laptop and a headless host."""
  importlib.import_module('matplotlib').use('Agg')


plt = lazy.Module('matplotlib.pyplot', before=_file_backend)  # 0.5 s, only for figures.


def _save(fig: Any, path: str) -> None:
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def save_location_heatmap(path: str, per_location: Any, grid: int, title: str) -> None:
  """A g x g heatmap of per-cell accuracy (per_location: g * g values in [0, 1])."""
  acc = np.asarray(per_location, np.float64).reshape(grid, grid)
  fig, ax = plt.subplots(figsize=(1.2 * grid + 2, 1.2 * grid + 1.5))
  im = ax.imshow(acc, vmin=0, vmax=1, cmap='viridis')
  for (r, c), v in np.ndenumerate(acc):
    ax.text(c, r, f'{100 * v:.0f}', ha='center', va='center',
            color='black' if v > 0.5 else 'white')
  ax.set_xticks(range(grid))
  ax.set_yticks(range(grid))
  ax.set_xlabel('column')
  ax.set_ylabel('row')
  ax.set_title(title, fontsize=9)
  fig.colorbar(im, ax=ax, label='test accuracy')
  _save(fig, path)


def save_permutation_histogram(path: str, accuracies: Any, chance: float, title: str) -> None:
  """Histogram of accuracy (K,) over the orderings 1..K-1, the identity (row 0) and chance marked."""
  acc = 100 * np.asarray(accuracies, np.float64)
  fig, ax = plt.subplots(figsize=(6.4, 4))
  if acc.size > 1:
    ax.hist(acc[1:], bins=int(np.clip(acc.size // 4, 5, 40)), color='C0', alpha=0.8,
            label=f'{acc.size - 1} random orderings')
  ax.axvline(acc[0], color='C3', lw=2, label=f'identity ({acc[0]:.1f}%)')
  ax.axvline(100 * chance, color='gray', ls='--', label=f'chance ({100 * chance:.1f}%)')
  ax.set_xlim(-2, 102)  # Lines at 0% or 100% stay visible.
  ax.set_xlabel('test accuracy (%)')
  ax.set_ylabel('orderings')
  ax.set_title(title, fontsize=9)
  ax.legend(fontsize=8)
  _save(fig, path)


def save_invariance(path: str, results: dict[str, Any], title: str) -> None:
  """Accuracy vs column offset (chance dashed) and consistency per pair vs its distance,
  from `gpjax.probes.invariance.evaluate`'s results."""
  fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
  curve = results['accuracy_vs_shift']
  left.plot([o[1] for o in curve['offsets']], 100 * np.asarray(curve['accuracy']), marker='o')
  left.axhline(100 * results['chance'], color='gray', ls='--', label='chance')
  left.set_xlabel(f'column offset (px), row offset {curve["offsets"][0][0]}')
  left.set_ylabel('test accuracy (%)')
  left.set_ylim(0, 100)
  left.legend(fontsize=8)
  pairs = np.asarray(results['pairs'])
  distance = np.abs(pairs[:, 0] - pairs[:, 1]).sum(axis=1)
  right.scatter(distance, 100 * np.asarray(results['consistency_per_pair']))
  right.set_xlabel('|row shift| + |column shift| of the pair (px)')
  right.set_ylabel('consistency (%)')
  right.set_ylim(0, 102)
  right.set_title(f'consistency {100 * results["consistency"]:.1f}%, readout '
                  f'{100 * results["readout_accuracy"]:.1f}%', fontsize=9)
  fig.suptitle(title, fontsize=9)
  _save(fig, path)


def save_attack_curves(path: str, results: dict[str, Any], title: str) -> None:
  """mIoU vs N, one panel per region: top-N overall/left/right and random (mean ± std),
  from `gpjax.probes.attack.summarize`'s results (or a study's mean curves)."""
  counts = results['counts']
  kinds = [key[len('top_'):] for key in results if key.startswith('top_')]
  fig, axes = plt.subplots(1, len(results['regions']), figsize=(4 * len(results['regions']), 3.6),
                           sharey=True)
  for ax, region in zip(axes, results['regions']):
    for kind, color in zip(kinds, ('C3', 'C0', 'C2')):
      ax.plot(counts, results[f'top_{kind}'][region], 'o-', color=color, ms=3,
              label=f'top-N {kind}')
    mean = np.asarray(results['random'][region]['mean'])
    if mean.size:
      std = np.asarray(results['random'][region]['std'])
      ax.plot(counts, mean, 's--', color='gray', ms=3, label='random N (mean ± std)')
      ax.fill_between(counts, mean - std, mean + std, color='gray', alpha=0.25)
    ax.set_title(f'{region} region', fontsize=9)
    ax.set_xlabel('N zeroed channels')
    ax.grid(alpha=0.3)
  axes[0].set_ylabel('mIoU')
  axes[0].legend(fontsize=7)
  fig.suptitle(title, fontsize=9)
  _save(fig, path)
