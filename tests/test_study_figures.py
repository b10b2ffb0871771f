"""The studies' figures: each writes a PNG and plots the numbers of the summary it is given."""

import matplotlib.pyplot as plt
import numpy as np
import pytest
from test_figures import capture_figures, is_png
from test_report import suite_results

from gpjax.studies import figures as study_figures

@pytest.fixture
def captured(monkeypatch):
  yield from capture_figures(monkeypatch, study_figures)


def _cell(task, head, padding, mean, **extra):
  return {'task': task, 'head': head, 'padding': padding, 'grid': 3, 'mean': mean, 'std': 0.01,
          'chance': 1 / 9 if task == 'location' else 0.1, **extra}


GRID_SUMMARY = {'cells': [_cell('location', 'gapnet', 'zero', 0.9),
                          _cell('location', 'gapnet', 'none', 0.3),
                          _cell('semantic', 'gapnet', 'zero', 0.6),
                          _cell('location', 'permutenet', 'zero', 0.2)]}


def test_columns_are_task_head_pairs_in_first_seen_order():
  assert study_figures.columns(GRID_SUMMARY) == [
      ('location', 'gapnet'), ('semantic', 'gapnet'), ('location', 'permutenet')]


def test_accuracy_figure_has_a_bar_per_cell_and_the_chance_lines(tmp_path, captured):
  study_figures.save_accuracy_figure(str(tmp_path / 'a.png'), GRID_SUMMARY)
  assert is_png(tmp_path / 'a.png')
  ax = captured[0].axes[0]
  bars = [(round(p.get_x() + p.get_width() / 2, 6), round(p.get_height(), 6))
          for p in ax.patches]
  width = 0.8 / 3  # Three columns: bars offset by -w, 0, +w around each padding.
  assert bars == [(round(-width, 6), 90.0), (round(1 - width, 6), 30.0), (0.0, 60.0),
                  (round(width, 6), 20.0)]
  assert [t.get_text() for t in ax.get_xticklabels()] == ['zero', 'none']
  chance = sorted(line.get_ydata()[0] for line in ax.lines if 'chance' in line.get_label())
  assert chance == pytest.approx([10.0, 100 / 9])


def test_metric_figure_plots_each_metric_against_the_sweep(tmp_path, captured):
  cells = [_cell('location', 'gapnet', 'zero', 0.5 + w / 10, sweep=w,
                 metrics={'consistency': {'mean': 0.7 + w / 10, 'std': 0.02}})
           for w in (0.0, 0.5, 1.0)]
  summary = {'sweep_field': 'augshift.weight', 'cells': cells}
  study_figures.save_metric_figure(str(tmp_path / 'm.png'), summary)
  assert is_png(tmp_path / 'm.png')
  accuracy, consistency = captured[0].axes
  assert (accuracy.get_title(), consistency.get_title()) == ('test accuracy', 'consistency')
  line = accuracy.containers[0].lines[0]  # The data line of the error bars.
  np.testing.assert_allclose(np.asarray(line.get_xdata(), float), [0.0, 0.5, 1.0])
  np.testing.assert_allclose(np.asarray(line.get_ydata(), float), [0.5, 0.55, 0.6])
  np.testing.assert_allclose(np.asarray(consistency.containers[0].lines[0].get_ydata(), float),
                             [0.7, 0.75, 0.8])
  assert accuracy.get_xscale() == 'symlog'  # 0 among two positive values.
  assert accuracy.get_xlabel() == 'augshift.weight'


def test_shift_curves_are_the_mean_over_seeds(tmp_path, captured):
  offsets = [[8, 0], [8, 4], [8, 8]]
  runs = [{'offsets': offsets, 'accuracy': [0.5, 0.2, 0.6]},
          {'offsets': offsets, 'accuracy': [0.7, 0.4, 0.6]}]
  study_figures.save_shift_curves(str(tmp_path / 's.png'), {('gapnet', 'zero', 0.5): runs},
                                  'weight')
  assert is_png(tmp_path / 's.png')
  ax = captured[0].axes[0]
  [line] = ax.lines
  np.testing.assert_allclose(line.get_xdata(), [0, 4, 8])
  np.testing.assert_allclose(line.get_ydata(), [60.0, 30.0, 60.0])
  assert line.get_label() == 'gapnet zero weight=0.5'


def test_summary_figure_has_the_four_panels_of_the_suite(tmp_path, captured):
  study_figures.save_summary_figure(str(tmp_path / 'summary.png'), suite_results())
  assert is_png(tmp_path / 'summary.png')
  heads, probes, augshift, attack = captured[0].axes
  assert [round(p.get_height(), 6) for p in heads.patches] == [90.0, 65.0, 15.0, 62.0]
  np.testing.assert_allclose(probes.lines[0].get_xydata(), [[4, 20.0], [5, 10.0]])
  assert [t.get_text() for t in augshift.get_xticklabels()] == ['lambda=0', 'lambda=0.5']
  assert [round(p.get_height(), 6) for p in augshift.patches] == [70.0, 80.0, 90.0, 50.0]
  np.testing.assert_allclose(attack.lines[0].get_ydata(), [0.5, 0.4, 0.3])
  np.testing.assert_allclose(attack.lines[1].get_ydata(), [0.5, 0.48, 0.45])
  assert 'region_attack does not hold' in captured[0]._suptitle.get_text()
