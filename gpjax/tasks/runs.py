"""A trained run as the probes see it: its config, model, variables and data set, loaded once.

`load_run` reads a workdir of any task's job (`gpjax.tasks.registry`): config.json,
the model rebuilt by that task, the newest checkpoint's variables; `load_source` adds
the segmentation probes' other source, a PyTorch file. `provenance` is the
record of where a probe's numbers come from.
"""

import dataclasses
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from gpjax.core import checkpoint, writers
from gpjax.data import input_pipeline
from gpjax.errors import ConfigError
from gpjax.interop import torch_import
from gpjax.tasks.registry import TASKS

Variables = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class RunInfo:
  """What the probes need of a loaded run besides its model.

  Attributes:
    num_classes: outputs of the model (location: g * g cells).
    step: the restored checkpoint's step; None for a PyTorch file.
    workdir: the run's workdir; '' for a PyTorch file.
    data_dir: the tfds data dir the data set is read from (None = the tfds default).
    data: the classification set's `input_pipeline.DatasetInfo` (image shape,
      mean/std, eval split); None for segmentation sources, whose probes choose
      their evaluation set (see `gpjax.probes.attack.load`).
  """
  num_classes: int
  step: int | None
  workdir: str
  data_dir: str | None
  data: input_pipeline.DatasetInfo | None


@dataclasses.dataclass(frozen=True)
class Run:
  """A trained run (or a PyTorch file) loaded once: what every probe evaluates.

  Attributes:
    config: the run's config (config.json); None for a PyTorch file.
    model: the model with local BatchNorm, in the compute dtype asked for.
    variables: ``{'params', 'batch_stats'}``.
    info: `RunInfo`.
  """
  config: ml_collections.ConfigDict | None
  model: Any
  variables: Variables
  info: RunInfo


def read_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a run saved in ``workdir/config.json``."""
  return ml_collections.ConfigDict(writers.read_json(os.path.join(workdir, 'config.json')))


def load_run(workdir: str, dtype: str | None = None, data_dir: str = '', step: int = 0) -> Run:
  """A ``train`` or ``segment`` workdir's config, model, variables and `RunInfo`.

  Args:
    workdir: a trained run (config.json + checkpoints/).
    dtype: compute dtype of the model returned (float32 or bfloat16); None = the run's own.
    data_dir: tfds data dir; '' = the one the run was trained with.
    step: the checkpoint's step; 0 = the newest.
  """
  config = read_config(workdir)
  if config.job not in TASKS:
    raise ConfigError(f'{workdir!r} holds a {config.job!r} run; a probe needs a trained run of '
                      f'one of the jobs {tuple(TASKS)}.')
  task = TASKS[config.job]
  raw = checkpoint.restore_raw(workdir, step or None)
  variables = {'params': raw['params'], 'batch_stats': raw['batch_stats']}
  data_dir = data_dir or config.data.data_dir or None
  if config.job == 'segment':
    num_classes = int(np.shape(raw['params']['classifier']['conv']['bias'])[0])
    data = None
  else:
    _, data = input_pipeline.load_source(config.data.name, 'train', data_dir=data_dir,
                                         image_size=config.data.image_size or None)
    num_classes = task.num_classes(config, data)
  model = task.create_model(config, num_classes, axis_name=None)
  if dtype is not None:
    model = model.clone(dtype=jnp.dtype(dtype))
  info = RunInfo(num_classes=num_classes, step=int(raw['step']), workdir=workdir,
                 data_dir=data_dir, data=data)
  return Run(config, model, variables, info)


def load_source(source: ml_collections.ConfigDict, dtype: str = 'float32') -> Run:
  """`load_run` of ``source.workdir`` at ``source.step``, or the model of a PyTorch file
  ``source.torch_checkpoint`` (VainF/torchvision DeepLabv3 layout; config None, no step)."""
  if not source.torch_checkpoint:
    return load_run(source.workdir, dtype, step=source.step)
  state = torch_import.load_state_dict(source.torch_checkpoint)
  model, variables = torch_import.import_deeplab(state, dtype=jnp.dtype(dtype))
  info = RunInfo(num_classes=model.num_classes, step=None, workdir='', data_dir=None, data=None)
  return Run(None, model, variables, info)


def provenance(config: ml_collections.ConfigDict, run: Run | None) -> dict[str, Any]:
  """Where a probe's results come from, the keys its results.json carries.

  Args:
    config: the probe's own config.
    run: the probed run; None to leave it out.

  Returns:
    ``config``, ``device_kind``, ``num_devices``, ``jax_version``; with a run of a
    workdir also ``source_config``, ``source_workdir``, ``checkpoint_step`` and
    ``source_<metric>`` (its task's metric in its results.json, None without one).
  """
  out = {}
  if run is not None and run.config is not None:
    metric = TASKS[run.config.job].metric
    results = os.path.join(run.info.workdir, 'results.json')
    out.update({'checkpoint_step': run.info.step,
                f'source_{metric}': (writers.read_json(results)[metric]
                                     if os.path.isfile(results) else None),
                'source_workdir': run.info.workdir, 'source_config': run.config.to_dict()})
  out.update({'config': config.to_dict(), 'device_kind': jax.devices()[0].device_kind,
              'num_devices': jax.device_count(), 'jax_version': jax.__version__})
  return out
