"""The command-line convention of `gpjax.main` and `gpjax.bench`: absl flags with an
ml_collections ``--config`` file, and flag or config mistakes turned into one line."""

import os
import re
import sys

from absl import flags


def _check_config_path(argv: list[str], example: str) -> None:
  """Exits with one line when ``--config=FILE[:variant]`` names no file."""
  for i, arg in enumerate(argv[1:], 1):
    value = arg[len('--config='):] if arg.startswith('--config=') else (
        argv[i + 1] if arg == '--config' and i + 1 < len(argv) else None)
    if value is not None and not os.path.isfile(value.split(':')[0]):
      sys.exit(f'Bad flag: --config={value}: no such file {value.split(":")[0]!r}; give a '
               f'config file, e.g. --config={example}.')


def parse_flags(argv: list[str], flag_values: flags.FlagValues = flags.FLAGS,
                example: str = 'configs/location.py') -> list[str]:
  """absl flag parsing of ``argv`` (program name first) that turns config mistakes into one
  clear line; ``example`` is the config file a missing one's message suggests."""
  _check_config_path(argv, example)
  try:
    return flag_values(argv)
  except Exception as e:  # A config file that does not load, a mistyped field or value.
    text = e.args[0] if e.args and isinstance(e.args[0], str) else str(e)
    if not isinstance(e, (AttributeError, KeyError, TypeError, ValueError, flags.Error)):
      text = f'--config: {type(e).__name__}: {e}'
    if 'Traceback' in text:  # get_config raised (e.g. an unknown :variant): keep its message.
      flag = re.match(r'flag (\S+?): ', text)
      last = text.strip().splitlines()[-1].split(': ', 1)[-1]
      text = f'{flag[1] if flag else "--config"}: {last}'
    message = ' '.join(text.replace('\\n', ' ').split()) or type(e).__name__
    guess = re.search(r'Did you mean "(\w+)" instead of "(\w+)"', text)
    if isinstance(e, (AttributeError, KeyError)):  # A field name that the config lacks.
      overrides = [a.split('=')[0] for a in argv[1:] if a.startswith('--config.')]
      bad = guess[2] if guess else str(e.args[0]) if isinstance(e, KeyError) and e.args else ''
      named = [o for o in overrides if bad and bad in o[len('--config.'):].split('.')]
      message = f'unknown config field in {" ".join(named or overrides)}'
      if guess:
        message += f' ({guess[2]!r}: did you mean {guess[1]!r}?)'
    sys.exit(f'Bad flag: {message}')
