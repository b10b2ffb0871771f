"""A trained run as the probes see it: its config, model, variables and data set, loaded once.

`load_run` reads a ``train`` (classification) or ``segment`` workdir: config.json,
the model rebuilt from it, the newest checkpoint's variables; `load_source` adds
the segmentation probes' other source, a PyTorch file. `provenance` is the
record of where a probe's numbers come from, and `accumulate` sums a jitted
evaluation over batches.
"""

import dataclasses
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from gpjax import checkpoint, writers
from gpjax.data import input_pipeline
from gpjax.tasks import classification, segmentation

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


def read_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a run saved in ``workdir/config.json``."""
  return ml_collections.ConfigDict(writers.read_json(os.path.join(workdir, 'config.json')))


def load_run(workdir: str, dtype: str | None = None, data_dir: str = '', step: int = 0
             ) -> tuple[ml_collections.ConfigDict, Any, Variables, RunInfo]:
  """A ``train`` or ``segment`` workdir's config, model, variables and `RunInfo`.

  Args:
    workdir: a trained run (config.json + checkpoints/).
    dtype: compute dtype of the model returned (float32 or bfloat16); None = the run's own.
    data_dir: tfds data dir; '' = the one the run was trained with.
    step: the checkpoint's step; 0 = the newest.

  Returns:
    (config, model with local BatchNorm, ``{'params', 'batch_stats'}``, info).
  """
  config = read_config(workdir)
  raw = checkpoint.restore_raw(workdir, step or None)
  variables = {'params': raw['params'], 'batch_stats': raw['batch_stats']}
  data_dir = data_dir or config.data.data_dir or None
  if config.job == 'segment':
    num_classes = int(np.shape(raw['params']['classifier']['conv']['bias'])[0])
    model = segmentation.create_model(config, num_classes, axis_name=None)
    data = None
  else:
    _, data = input_pipeline.load_source(config.data.name, 'train', data_dir=data_dir,
                                         image_size=config.data.image_size or None)
    num_classes = classification.num_classes(config, data)
    model = classification.create_model(config, num_classes, axis_name=None)
  info = RunInfo(num_classes=num_classes, step=int(raw['step']), workdir=workdir,
                 data_dir=data_dir, data=data)
  if dtype is not None:
    model = model.clone(dtype=jnp.dtype(dtype))
  return config, model, variables, info


def load_source(source: ml_collections.ConfigDict, dtype: str = 'float32'
                ) -> tuple[ml_collections.ConfigDict | None, Any, Variables, RunInfo]:
  """`load_run` of ``source.workdir`` at ``source.step``, or the model of a PyTorch file
  ``source.torch_checkpoint`` (VainF/torchvision DeepLabv3 layout; config None, no step)."""
  if not source.torch_checkpoint:
    return load_run(source.workdir, dtype, step=source.step)
  from gpjax.interop import torch_import  # torch is needed only here.
  state = torch_import.load_state_dict(source.torch_checkpoint)
  model, variables = torch_import.import_deeplab(state, dtype=jnp.dtype(dtype))
  info = RunInfo(num_classes=model.num_classes, step=None, workdir='', data_dir=None, data=None)
  return None, model, variables, info


def provenance(config: ml_collections.ConfigDict, source: ml_collections.ConfigDict | None,
               info: RunInfo | None) -> dict[str, Any]:
  """Where a probe's results come from, the keys its results.json carries.

  Args:
    config: the probe's own config.
    source: the probed run's config; None for none (e.g. a PyTorch file).
    info: the probed run's `RunInfo`; None to leave out the source's workdir,
      step and test accuracy.

  Returns:
    ``config``, ``device_kind``, ``num_devices``, ``jax_version``; with a source
    also ``source_config``; with info also ``source_workdir``,
    ``checkpoint_step`` and ``source_test_accuracy`` (None without results.json).
  """
  out = {}
  if info is not None:
    results = os.path.join(info.workdir, 'results.json')
    out.update({'checkpoint_step': info.step,
                'source_test_accuracy': (writers.read_json(results)['test_accuracy']
                                         if os.path.isfile(results) else None),
                'source_workdir': info.workdir})
  if source is not None:
    out['source_config'] = source.to_dict()
  out.update({'config': config.to_dict(), 'device_kind': jax.devices()[0].device_kind,
              'num_devices': jax.device_count(), 'jax_version': jax.__version__})
  return out

