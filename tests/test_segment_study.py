"""The segmentation study's grid of seeds. The study end to end (training, ranking, attacks,
table, curves, a rerun skipping finished steps): the micro suite's, in test_reproduce."""

import pytest

from configs import segmentation_study
from gpjax.studies import segmentation as segment_study
from gpjax.errors import ConfigError


def test_segment_study_grid_is_the_seeds():
  config = segmentation_study.get_config('tiny')
  config.study.seeds = 3
  runs = segment_study.runs(config)
  assert [n for n, _ in runs] == ['seed0', 'seed1', 'seed2']
  assert [r.seed for _, r in runs] == [config.base.seed + s for s in range(3)]
  config.study.seeds = 0
  with pytest.raises(ConfigError, match='study.seeds'):
    segment_study.check(config)
