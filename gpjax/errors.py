"""The errors a user can cause or meet, each reported by `gpjax.main` as one line.

The bottom layer of the package: it imports nothing from gpjax, so every layer can raise them.
"""


class ConfigError(ValueError):
  """A config field holds a value the code cannot use (the message names field, value and
  what is allowed)."""


class DatasetNotPreparedError(FileNotFoundError):
  """A tfds set that this code cannot generate is missing from the data dir."""


class WorkdirError(Exception):
  """A workdir that this job cannot use (in use, of another run, not writable); the message
  is one line saying what to do."""
