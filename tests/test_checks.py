"""The shared checks of gpjax.checks: each raises one ConfigError naming the field, the
value and what is allowed, and passes every allowed value."""

import ml_collections
import pytest

from configs import location, micro
from gpjax import checks
from gpjax.errors import ConfigError
from gpjax.tasks import classification


def test_one_of_names_field_value_and_choices():
  checks.one_of('model.head', 'gapnet', ('gapnet', 'linear'))
  with pytest.raises(ConfigError) as e:
    checks.one_of('model.head', 'maxpool', ['gapnet', 'linear'])
  assert str(e.value) == ("config.model.head='maxpool' is not allowed; choose one of "
                          "('gapnet', 'linear').")


@pytest.mark.parametrize('value,kind,ok', [
    (0, int, True), (3, int, True), (-1, int, False), (True, int, False), (1.0, int, False),
    (0.0, float, True), (2.5, float, True), (-0.1, float, False), (1, float, False)])
def test_at_least_checks_type_and_bound(value, kind, ok):
  if ok:
    checks.at_least('train.x', value, 0, kind)
    return
  with pytest.raises(ConfigError) as e:
    checks.at_least('train.x', value, 0, kind)
  article = 'an' if kind is int else 'a'
  assert str(e.value) == (f'config.train.x={value!r} is not allowed; it must be {article} '
                          f'{kind.__name__} >= 0.')


@pytest.mark.parametrize('value,ok', [(0.0, True), (0.999, True), (1.0, False), (-0.01, False)])
def test_below_one(value, ok):
  if ok:
    checks.below_one('train.b1', value)
    return
  with pytest.raises(ConfigError, match=rf'config.train.b1={value!r} .* in \[0, 1\)'):
    checks.below_one('train.b1', value)


@pytest.mark.parametrize('steps,epochs,message', [
    (10, 0.0, None), (0, 1.5, None),
    (0, 0.0, 'config.train.steps=0 and config.train.epochs=0: set one of them > 0.'),
    (-2, 1.0, 'config.train.steps=-2 is not allowed; it must be an int >= 0.'),
    (0, -1.0, 'config.train.epochs=-1.0 is not allowed; it must be a float >= 0.')])
def test_steps_or_epochs(steps, epochs, message):
  train = ml_collections.ConfigDict({'steps': steps, 'epochs': epochs})
  if message is None:
    checks.steps_or_epochs(train)
    return
  with pytest.raises(ConfigError) as e:
    checks.steps_or_epochs(train)
  assert str(e.value) == message


def test_training_configs_pass_and_one_bad_field_fails():
  for config in (location.get_config(), micro.get_config(), micro.get_config('semantic')):
    classification.check(config)
  config = micro.get_config()
  config.train.b2 = 1.0
  with pytest.raises(ConfigError, match=r'config.train.b2=1.0 is not allowed'):
    classification.check(config)


@pytest.mark.parametrize('value', [0.0, -1e-3, float('nan'), float('inf')])
def test_a_learning_rate_must_be_finite_and_positive(value):
  config = micro.get_config()
  config.train.learning_rate = value
  with pytest.raises(ConfigError) as e:
    classification.check(config)
  assert str(e.value) == (f'config.train.learning_rate={value!r} is not allowed; it must be a '
                          'finite float > 0.')


def test_sizes_the_task_and_the_backbone_need():
  config = micro.get_config()
  config.data.grid = 1
  with pytest.raises(ConfigError, match=r"config.data.grid=1 with config.task='location'"):
    classification.check(config)
  config = micro.get_config()
  config.data.image_size = 1  # A 2x2 canvas: ResNet's stem and 2 strided stages need 8x8.
  with pytest.raises(ConfigError) as e:
    classification.check(config)
  assert str(e.value) == ('config.data.image_size=1: a 2x2 canvas (grid 2) is smaller than the '
                          '8x8 that resnet18 needs to reach its last stage wider than 1x1; give '
                          'image_size >= 4.')
  config.data.image_size = 4
  classification.check(config)
  config.model.stem = 'imagenet'  # Its max-pool halves once more.
  with pytest.raises(ConfigError, match='the 16x16 that resnet18'):
    classification.check(config)


def test_no_more_test_orderings_than_the_channels_have():
  config = micro.get_config()
  config.model.head, config.model.permute_layer, config.model.width = 'permutenet', 1, 3
  config.eval.orderings = 5  # 3! = 6 orderings: the identity and 5 others.
  classification.check(config)
  config.eval.orderings = 6
  with pytest.raises(ConfigError) as e:
    classification.check(config)
  assert str(e.value) == ('config.eval.orderings=6: 3 channels at layer 1 have only 5 orderings '
                          'besides the identity; give at most that many.')


def test_a_batch_or_canvas_that_cannot_fit_is_refused_from_its_shapes():
  config = micro.get_config()
  config.train.batch_size = 100_000_000
  with pytest.raises(ConfigError, match=r'config.train.batch_size=100000000 on 32x32 canvases '
                                        r'\(config.data.grid=2\) needs at least [\d,]+ GiB'):
    classification.check(config)
  config = micro.get_config()
  config.data.grid = 1000
  with pytest.raises(ConfigError, match=r'16000x16000 canvases \(config.data.grid=1000\)'):
    classification.check(config)
  config = micro.get_config()
  config.augshift.weight = float('nan')
  with pytest.raises(ConfigError, match=r'config.augshift.weight=nan .* finite'):
    classification.check(config)
