"""Scores an official PyTorch GAPNet/PermuteNet checkpoint (job ``evaluate_torch``) on the
classification task's test canvases, through `gpjax.interop.torch_classifier`.

  python -m gpjax.main --config=configs/location.py:imported --workdir=runs/official \
      --config.source.torch_checkpoint=resnet18_location_GAP_zero_gridsize_3.pth
"""

from __future__ import annotations

import functools
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from gpjax.core import parallel, trainer, writers
from gpjax.errors import ConfigError
from gpjax.interop import torch_classifier, torch_import
from gpjax.job import Job
from gpjax.tasks import classification


def check(config: ml_collections.ConfigDict) -> None:
  """A classification config plus an existing PyTorch file that ``torch.save`` wrote."""
  classification.check(config)
  path = config.source.torch_checkpoint
  if not path or not os.path.isfile(path):
    raise ConfigError(f'config.source.torch_checkpoint={path!r} is not a file: give an official '
                      'GAPNet/PermuteNet checkpoint (.pth).')
  torch_import.check_checkpoint_file('source.torch_checkpoint', path)


def evaluate_torch(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """The ``evaluate_torch`` job: the official checkpoint ``config.source.torch_checkpoint``
  (trained with ``config.model.padding``) on this config's test canvases; writes
  ``results.json`` (test loss, accuracy, per-location accuracy) and the heatmap."""
  _, test_src, info = classification.load_data(config)
  state_dict = torch_import.load_state_dict(config.source.torch_checkpoint)
  model, variables = torch_classifier.import_classifier(
      state_dict, padding=config.model.padding, head=config.model.head)
  if model.num_classes != classification.num_classes(config, info):
    raise ConfigError(f'config.source.torch_checkpoint={config.source.torch_checkpoint!r} has '
                      f'{model.num_classes} outputs; config.task={config.task!r} on '
                      f'{config.data.name} needs {classification.num_classes(config, info)}.')
  mesh = parallel.make_mesh()
  parallel.check_divisible('config.eval.batch_size', config.eval.batch_size, jax.device_count(),
                           'devices')
  state = trainer.TrainState(step=jnp.zeros((), jnp.int32), seed=jnp.zeros((), jnp.int32),
                             params=variables['params'], batch_stats=variables['batch_stats'],
                             opt_state=None)
  state = jax.device_put(state, parallel.replicated(mesh))
  p_eval_step = parallel.shard_step(functools.partial(classification.eval_step, model=model, config=config,
                                                      info=info), mesh)
  final = classification.summarize(trainer.evaluate(p_eval_step, state, classification.eval_batches(test_src, config), mesh),
                    info)
  results = {'config': config.to_dict(), 'dataset': info.name, 'num_classes': model.num_classes,
             'source_checkpoint': config.source.torch_checkpoint, 'backbone': model.backbone,
             'head': model.head, 'width': model.width, **final,
             'num_devices': jax.device_count(), 'device_kind': jax.devices()[0].device_kind,
             'jax_version': jax.__version__}
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    writers.write_json(os.path.join(workdir, 'results.json'), results)
    classification.write_figures(config, workdir, final)
  print(f'{config.source.torch_checkpoint}: test accuracy {final["test_accuracy"]:.4f}',
        flush=True)
  return results


JOBS = {'evaluate_torch': Job(evaluate_torch, check,
                              'an official PyTorch GAPNet/PermuteNet .pth on the test canvases')}
