"""The figures: each writes a PNG and plots the numbers it is given."""

import matplotlib.pyplot as plt
import numpy as np
import pytest

from gpjax.core import figures

PNG = b'\x89PNG\r\n\x1a\n'


def capture_figures(monkeypatch, module):
  """Yields the list of figures ``module`` saves, kept open for inspection (its ``_save``
  closes them); closes them afterwards."""
  kept = []

  def save(fig, path):
    kept.append(fig)
    fig.savefig(path, dpi=100)

  monkeypatch.setattr(module, '_save', save)
  yield kept
  for fig in kept:
    plt.close(fig)


@pytest.fixture
def captured(monkeypatch):
  yield from capture_figures(monkeypatch, figures)


def is_png(path):
  with open(path, 'rb') as f:
    return f.read(8) == PNG


def test_location_heatmap_plots_the_grid(tmp_path, captured):
  path = tmp_path / 'heat.png'
  figures.save_location_heatmap(str(path), [0.1, 0.9, 0.5, 1.0], 2, 'title')
  assert is_png(path)
  ax = captured[0].axes[0]
  np.testing.assert_array_equal(ax.images[0].get_array(), [[0.1, 0.9], [0.5, 1.0]])
  assert [t.get_text() for t in ax.texts] == ['10', '90', '50', '100']


def test_permutation_histogram_marks_identity_and_chance(tmp_path, captured):
  path = tmp_path / 'hist.png'
  figures.save_permutation_histogram(str(path), [0.9, 0.2, 0.3, 0.25], 0.25, 'title')
  assert is_png(path)
  ax = captured[0].axes[0]
  assert sum(p.get_height() for p in ax.patches) == 3  # The three random orderings.
  assert [line.get_xdata()[0] for line in ax.lines] == pytest.approx([90.0, 25.0])
  assert ax.get_xlim() == (-2, 102)


def test_invariance_plots_curve_and_pairs(tmp_path, captured):
  results = {'accuracy_vs_shift': {'offsets': [[8, 0], [8, 4], [8, 8]],
                                   'accuracy': [0.5, 0.25, 0.75]},
             'chance': 0.1, 'pairs': [[[0, 0], [1, 2]], [[3, 3], [3, 3]]],
             'consistency_per_pair': [0.5, 1.0], 'consistency': 0.75, 'readout_accuracy': 0.3}
  path = tmp_path / 'inv.png'
  figures.save_invariance(str(path), results, 'title')
  assert is_png(path)
  left, right = captured[0].axes
  np.testing.assert_array_equal(left.lines[0].get_xdata(), [0, 4, 8])
  np.testing.assert_array_equal(left.lines[0].get_ydata(), [50, 25, 75])
  np.testing.assert_array_equal(right.collections[0].get_offsets(), [[3, 50], [0, 100]])
  assert right.get_title() == 'consistency 75.0%, readout 30.0%'


def test_attack_curves_one_panel_per_region(tmp_path, captured):
  regions = ['whole', 'left']
  curve = {r: [0.5, 0.4] for r in regions}
  results = {'regions': regions, 'counts': [0, 8], 'clean': {r: 0.5 for r in regions},
             'top_overall': curve, 'top_left': {r: [0.5, 0.3] for r in regions},
             'top_right': curve,
             'random': {r: {'mean': [0.5, 0.45], 'std': [0.0, 0.05]} for r in regions}}
  path = tmp_path / 'curves.png'
  figures.save_attack_curves(str(path), results, 'title')
  assert is_png(path)
  axes = captured[0].axes
  assert [ax.get_title() for ax in axes] == ['whole region', 'left region']
  labels = [line.get_label() for line in axes[0].lines]
  assert labels == ['top-N overall', 'top-N left', 'top-N right', 'random N (mean ± std)']
  np.testing.assert_array_equal(axes[1].lines[1].get_ydata(), [0.5, 0.3])
