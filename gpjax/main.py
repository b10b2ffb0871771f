r"""Runs one experiment: ``python -m gpjax.main --config=configs/NAME.py --workdir=DIR``.

Any config field can be overridden, e.g. ``--config.model.padding=reflect``; every field
is documented by a comment in its config file. A workdir holds one run: rerunning the
same config resumes it (only the step budget and the cadences, `gpjax.workdir.RESUMABLE`,
may change), another config is refused unless ``--restart`` moves the old run aside.
For multi-host runs pass ``--distributed`` (on Cloud TPU and SLURM ``jax.distributed``
finds its peers; elsewhere also give ``--coordinator_address``, ``--num_processes`` and
``--process_id``).
"""

import glob
import os
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from gpjax import allocator, cli, compilation_cache
from gpjax import workdir as workdir_lib
from gpjax.core import writers
from gpjax.errors import ConfigError, DatasetNotPreparedError, WorkdirError
from gpjax.registry import JOBS


def _usage() -> str:
  """--help: this docstring, the jobs a config's ``job`` field can name, and the configs."""
  jobs = '\n'.join(f'  {name:<18} {job.summary}' for name, job in JOBS.items())
  files = sorted(set(glob.glob('configs/*.py')) - {'configs/__init__.py'})
  configs = ' '.join(files) or '(none in this folder)'
  return (f'{__doc__}\nJobs (a config\'s `job` field):\n{jobs}\n\nConfigs (fields documented '
          f'in each file): {configs}\n')


__doc__ = _usage()

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Directory for checkpoints, logs and results.')
flags.DEFINE_bool('distributed', False, 'Call jax.distributed.initialize() (multi-host).')
flags.DEFINE_string('coordinator_address', None, 'host:port of process 0 (multi-host).')
flags.DEFINE_integer('num_processes', None, 'Number of processes (multi-host).')
flags.DEFINE_integer('process_id', None, 'This process (multi-host).')
flags.DEFINE_string('compilation_cache', compilation_cache.default_directory(),
                    "Directory of JAX's persistent compilation cache, so that a rerun or a job "
                    "with shapes seen before skips compiling; '' = off.")
flags.DEFINE_bool('traceback', False, 'On an error, raise it with its traceback instead of '
                  'printing its one line.')
flags.DEFINE_bool('restart', False, 'Move the run already in --workdir aside to '
                  'DIR.old-YYYYmmdd-HHMMSS (nothing is deleted) and start afresh.')
config_flags.DEFINE_config_file('config', None, 'Experiment config file.', lock_config=True)
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    sys.exit(f'Bad flag: unexpected arguments {argv[1:]}; every option is a --flag, e.g. '
             '--config.train.steps=100.')
  allocator.keep_freed_memory()  # Before JAX's threads start; also for a suite's processes.
  if not FLAGS['verbosity'].present:  # Orbax logs every save, tfds each folder it probes.
    logging.set_verbosity(logging.ERROR)
  if FLAGS.config.job not in JOBS:
    sys.exit(f'Bad config: config.job={FLAGS.config.job!r} is not allowed; choose one of '
             f'{tuple(JOBS)}.')
  job = JOBS[FLAGS.config.job]
  try:
    job.check(FLAGS.config)  # Before any work: the config, and the files it names.
    if not FLAGS.workdir:
      sys.exit("Bad flag: --workdir='' names no directory; give one, e.g. --workdir=runs/NAME.")
    _run(job)
  except WorkdirError as e:  # The workdir, or a run's state file (config.json, metrics).
    sys.exit(f'Bad workdir: {e}')
  except ConfigError as e:  # Also the checks that need the devices or the data set.
    sys.exit(f'Bad config: {e}')
  except DatasetNotPreparedError as e:  # The message says how to prepare the set.
    sys.exit(f'Data not prepared: {e}')
  except FloatingPointError as e:  # A diverged run: the message names the step.
    sys.exit(f'Stopped: {e}')
  except Exception as e:  # Files, checkpoints, runs, memory: one line unless --traceback.
    _fail(e)


def _fail(e: Exception) -> None:
  """Exits with one line naming ``e``, or raises it with its traceback (--traceback)."""
  if FLAGS.traceback:
    raise e
  message = ' '.join(str(e).split()) or 'no message'
  sys.exit(f'Failed: {type(e).__name__}: {message} (--traceback shows where)')


def _run(job) -> None:
  """Starts the processes, claims the workdir (process 0 writes config.json) and runs."""
  import jax
  compilation_cache.enable(FLAGS.compilation_cache)
  if FLAGS.distributed:
    jax.distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
  index = jax.process_index()
  with workdir_lib.claim(FLAGS.workdir, FLAGS.config.to_dict(), restart=FLAGS.restart,
                         process_index=index) as moved:
    if moved:
      print(f'The old run is now in {moved}.', flush=True)
    if index == 0:
      writers.write_json(os.path.join(FLAGS.workdir, 'config.json'), FLAGS.config.to_dict())
    if FLAGS.distributed:  # Nobody reads the workdir before process 0 has claimed it.
      from jax.experimental import multihost_utils
      multihost_utils.sync_global_devices('gpjax.main: workdir claimed')
    job.run(FLAGS.config, FLAGS.workdir)

if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
