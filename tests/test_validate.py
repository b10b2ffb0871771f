"""The shared checks of gpjax.validate: each raises one ConfigError naming the field, the
value and what is allowed, and passes every allowed value."""

import ml_collections
import pytest

from configs import location, micro
from gpjax import validate
from gpjax.validate import ConfigError


def test_one_of_names_field_value_and_choices():
  validate.one_of('model.head', 'gapnet', ('gapnet', 'linear'))
  with pytest.raises(ConfigError) as e:
    validate.one_of('model.head', 'maxpool', ['gapnet', 'linear'])
  assert str(e.value) == ("config.model.head='maxpool' is not allowed; choose one of "
                          "('gapnet', 'linear').")


@pytest.mark.parametrize('value,kind,ok', [
    (0, int, True), (3, int, True), (-1, int, False), (True, int, False), (1.0, int, False),
    (0.0, float, True), (2.5, float, True), (-0.1, float, False), (1, float, False)])
def test_at_least_checks_type_and_bound(value, kind, ok):
  if ok:
    validate.at_least('train.x', value, 0, kind)
    return
  with pytest.raises(ConfigError) as e:
    validate.at_least('train.x', value, 0, kind)
  article = 'an' if kind is int else 'a'
  assert str(e.value) == (f'config.train.x={value!r} is not allowed; it must be {article} '
                          f'{kind.__name__} >= 0.')


@pytest.mark.parametrize('value,ok', [(0.0, True), (0.999, True), (1.0, False), (-0.01, False)])
def test_below_one(value, ok):
  if ok:
    validate.below_one('train.b1', value)
    return
  with pytest.raises(ConfigError, match=rf'config.train.b1={value!r} .* in \[0, 1\)'):
    validate.below_one('train.b1', value)


@pytest.mark.parametrize('steps,epochs,message', [
    (10, 0.0, None), (0, 1.5, None),
    (0, 0.0, 'config.train.steps=0 and config.train.epochs=0: set one of them > 0.'),
    (-2, 1.0, 'config.train.steps=-2 is not allowed; it must be an int >= 0.'),
    (0, -1.0, 'config.train.epochs=-1.0 is not allowed; it must be a float >= 0.')])
def test_steps_or_epochs(steps, epochs, message):
  train = ml_collections.ConfigDict({'steps': steps, 'epochs': epochs})
  if message is None:
    validate.steps_or_epochs(train)
    return
  with pytest.raises(ConfigError) as e:
    validate.steps_or_epochs(train)
  assert str(e.value) == message


def test_training_configs_pass_and_one_bad_field_fails():
  for config in (location.get_config(), micro.get_config(), micro.get_config('semantic')):
    validate.validate(config)
  config = micro.get_config()
  config.train.b2 = 1.0
  with pytest.raises(ConfigError, match=r'config.train.b2=1.0 is not allowed'):
    validate.validate(config)
