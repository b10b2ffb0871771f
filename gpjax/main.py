r"""Runs one experiment: ``python -m gpjax.main --config=configs/NAME.py --workdir=DIR``.

Any config field can be overridden, e.g. ``--config.model.padding=reflect``.
A run resumes from the newest checkpoint in DIR. For multi-host runs pass
``--distributed`` (on Cloud TPU and SLURM ``jax.distributed`` finds its peers;
elsewhere also give ``--coordinator_address``, ``--num_processes`` and
``--process_id``).
"""

import re
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from gpjax import reproduce, segment_study, study
from gpjax.probes import attack, invariance, permutation, ranking
from gpjax.tasks import classification, segmentation
from gpjax.validate import ConfigError, validate

# What a config's `job` field runs, and the check run on its config first.
JOBS = {'train': classification.train_and_evaluate, 'permutation_probe': permutation.run,
        'study': study.run_study}
VALIDATORS = {'train': validate, 'permutation_probe': permutation.validate_config,
              'study': study.validate_study}
JOBS.update(invariance=invariance.run, augshift_study=invariance.run_study)
VALIDATORS.update(invariance=invariance.validate_config, augshift_study=invariance.validate_study)
JOBS.update(segment=segmentation.train_and_evaluate, rank=ranking.run, attack=attack.run,
            segment_study=segment_study.run_study)
VALIDATORS.update(segment=segmentation.validate_config, rank=attack.validate_config,
                  attack=attack.validate_config, segment_study=segment_study.validate_study)
JOBS.update(reproduce=reproduce.run)
VALIDATORS.update(reproduce=reproduce.validate_config)

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Directory for checkpoints, logs and results.')
flags.DEFINE_bool('distributed', False, 'Call jax.distributed.initialize() (multi-host).')
flags.DEFINE_string('coordinator_address', None, 'host:port of process 0 (multi-host).')
flags.DEFINE_integer('num_processes', None, 'Number of processes (multi-host).')
flags.DEFINE_integer('process_id', None, 'This process (multi-host).')
config_flags.DEFINE_config_file('config', None, 'Experiment config file.', lock_config=True)
flags.mark_flags_as_required(['config', 'workdir'])


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing that turns config mistakes into one clear line."""
  try:
    return FLAGS(argv)
  except (AttributeError, KeyError, TypeError, ValueError, flags.Error) as e:
    text = e.args[0] if e.args and isinstance(e.args[0], str) else str(e)
    message = ' '.join(text.replace('\\n', ' ').split()) or type(e).__name__
    guess = re.search(r'Did you mean "(\w+)" instead of "(\w+)"', text)
    if isinstance(e, (AttributeError, KeyError)):  # A field name that the config lacks.
      override = ' '.join(a.split('=')[0] for a in argv[1:] if a.startswith('--config.'))
      message = f'unknown config field in {override}'
      if guess:
        message += f' ({guess[2]!r}: did you mean {guess[1]!r}?)'
    sys.exit(f'Bad flag: {message}')


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if not FLAGS['verbosity'].present:  # Orbax logs every save at INFO.
    logging.set_verbosity(logging.WARNING)
  if FLAGS.config.job not in JOBS:
    sys.exit(f'Bad config: config.job={FLAGS.config.job!r} is not allowed; choose one of '
             f'{tuple(JOBS)}.')
  try:
    VALIDATORS[FLAGS.config.job](FLAGS.config)
  except ConfigError as e:
    sys.exit(f'Bad config: {e}')
  import jax
  if FLAGS.distributed:
    jax.distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
  try:
    JOBS[FLAGS.config.job](FLAGS.config, FLAGS.workdir)
  except ConfigError as e:  # Config checks that need the devices or the data set.
    sys.exit(f'Bad config: {e}')
  except FloatingPointError as e:  # A diverged run: the message names the step.
    sys.exit(f'Stopped: {e}')


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
