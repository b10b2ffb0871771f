"""Every job a config's ``job`` field can name, gathered from the modules that define them.

The one table `gpjax.main` dispatches on and ``--help`` lists: each task's training job
(`gpjax.tasks.registry`), then the jobs of the modules below, which each declare a
``JOBS`` dict of `gpjax.job.Job`. A new probe or study joins with one line here.
"""

import functools

from gpjax.core import trainer
from gpjax.job import Job
from gpjax.probes import attack, invariance, permutation, ranking
from gpjax.studies import augshift, location, reproduce, segmentation
from gpjax.tasks import imported
from gpjax.tasks.registry import TASKS

_MODULES = (imported, permutation, invariance, ranking, attack, location, augshift, segmentation,
            reproduce)


def _jobs() -> dict[str, Job]:
  jobs = {name: Job(functools.partial(trainer.train_and_evaluate, task=task), task.check,
                    f'trains a {task.train_step.__module__.rpartition(".")[2]} model')
          for name, task in TASKS.items()}
  for module in _MODULES:
    for name, job in module.JOBS.items():
      if name in jobs:
        raise ValueError(f'job {name!r} of {module.__name__} is defined twice.')
      jobs[name] = job
  return jobs


JOBS = _jobs()
