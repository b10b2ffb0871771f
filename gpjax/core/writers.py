"""What a run leaves in its workdir: metrics.jsonl, TensorBoard events, JSON files."""

import json
import os
import sys
from typing import Any, Mapping

import numpy as np

from gpjax.errors import WorkdirError


class MetricWriter:
  """Appends one JSON object per row to ``metrics.jsonl`` and mirrors scalars
  to TensorBoard (tensorboardX: no TensorFlow needed).

  On resume from step s, rows after s (written after that checkpoint by the
  interrupted run) are dropped, so the file reads as one uninterrupted run.
  """

  def __init__(self, workdir: str, resume_step: int = 0, enabled: bool = True):
    self.enabled = enabled
    if not enabled:
      return
    self.path = os.path.join(workdir, 'metrics.jsonl')
    if os.path.exists(self.path):
      rows = [json.dumps(r) + '\n' for r in _read_rows(self.path) if r['step'] <= resume_step]
      with open(self.path, 'w') as f:
        f.writelines(rows)
    self.tb = _summary_writer(os.path.join(workdir, 'tensorboard'))

  def rows(self, split: str) -> list[dict[str, Any]]:
    """The rows of ``split`` in metrics.jsonl so far ([] when this process writes none)."""
    if not self.enabled or not os.path.exists(self.path):
      return []
    return [r for r in _read_rows(self.path) if r['split'] == split]

  def write(self, step: int, split: str, scalars: Mapping[str, Any]) -> None:
    if not self.enabled:
      return
    row = {'step': int(step), 'split': split}
    row.update({k: _jsonable(v) for k, v in scalars.items()})
    with open(self.path, 'a') as f:
      f.write(json.dumps(row) + '\n')
    for k, v in row.items():
      if k not in ('step', 'split') and isinstance(v, (int, float)):  # Scalars only.
        self.tb.add_scalar(f'{split}/{k}', v, step)

  def close(self) -> None:
    if self.enabled:
      self.tb.close()


def _summary_writer(logdir: str) -> Any:
  """tensorboardX's SummaryWriter on ``logdir``, imported (on the writing process only)
  without PyTorch: where torch is installed, tensorboardX imports it (2 s here) only to accept
  its tensors, and the rows here are numbers. A later ``import torch`` works as usual."""
  if 'tensorboardX' not in sys.modules and 'torch' not in sys.modules:
    sys.modules['torch'] = None  # type: ignore[assignment]  # `import torch` raises ImportError.
    try:
      import tensorboardX  # pylint: disable=unused-import
    finally:
      del sys.modules['torch']
  from tensorboardX import SummaryWriter
  return SummaryWriter(logdir)


def _jsonable(value: Any) -> Any:
  value = np.asarray(value)
  return value.item() if value.ndim == 0 else value.tolist()


def _read_rows(path: str) -> list[dict[str, Any]]:
  """The rows of a metrics.jsonl; WorkdirError naming the file and line when one is corrupt."""
  rows = []
  with open(path) as f:
    for number, line in enumerate(f, 1):
      if line.strip():
        try:
          row = json.loads(line)
        except json.JSONDecodeError:
          row = None
        if not isinstance(row, dict) or 'step' not in row or 'split' not in row:
          raise WorkdirError(f'{path} line {number} is not a metrics row: the file is corrupt; '
                             'restore it or start over with --restart.')
        rows.append(row)
  return rows


def read_json(path: str) -> Any:
  """The JSON file ``path``; WorkdirError naming it when it is not valid JSON."""
  with open(path) as f:
    try:
      return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
      raise WorkdirError(f'{path} is corrupt ({e}); restore it or move it aside.') from None


def as_json(obj: Mapping[str, Any]) -> Any:
  """``obj`` as `read_json` would return it after `write_json`: native types only."""
  return json.loads(json.dumps(obj, default=_jsonable))


def write_json(path: str, obj: Mapping[str, Any]) -> None:
  """Writes atomically, so a killed run never leaves half a file."""
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    json.dump(obj, f, indent=2, default=_jsonable)
  os.replace(tmp, path)
