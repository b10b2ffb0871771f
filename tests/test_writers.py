"""What a run writes: metrics.jsonl rows (trimmed on resume), TensorBoard scalars, JSON files
with numpy values, written atomically."""

import json
import os
import struct
import subprocess
import sys

import numpy as np
import pytest

from gpjax.core import writers
from gpjax.errors import WorkdirError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tensorboard_scalars(workdir):
  """{tag: [(step, value), ...]} read from the TFRecord event files (no TensorFlow)."""
  from tensorboardX.proto import event_pb2
  scalars = {}
  directory = os.path.join(workdir, 'tensorboard')
  for name in sorted(os.listdir(directory)):
    assert name.startswith('events.out.tfevents.'), name
    with open(os.path.join(directory, name), 'rb') as f:
      data = f.read()
    pos = 0
    while pos < len(data):
      (length,) = struct.unpack('<Q', data[pos:pos + 8])
      event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])
      pos += 12 + length + 4
      for value in event.summary.value:
        scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
  return scalars


def _rows(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f]


def test_metric_writer_rows_and_tensorboard_scalars(tmp_path):
  writer = writers.MetricWriter(str(tmp_path))
  writer.write(1, 'train', {'loss': np.float32(0.5), 'per_cell': np.array([0.25, 0.75])})
  writer.write(2, 'test', {'accuracy': 0.125, 'count': np.int64(3)})
  writer.close()
  assert _rows(tmp_path) == [
      {'step': 1, 'split': 'train', 'loss': 0.5, 'per_cell': [0.25, 0.75]},
      {'step': 2, 'split': 'test', 'accuracy': 0.125, 'count': 3}]
  # Scalars only: the per-cell list stays in metrics.jsonl.
  assert tensorboard_scalars(str(tmp_path)) == {
      'train/loss': [(1, 0.5)], 'test/accuracy': [(2, 0.125)], 'test/count': [(2, 3.0)]}


# A fresh interpreter writes a row, then imports PyTorch where it is installed.
WRITE_WITHOUT_TORCH = """
import importlib.util, sys
from gpjax.core import writers
writer = writers.MetricWriter(sys.argv[1])
writer.write(1, 'train', {'loss': 0.5})
writer.close()
assert 'torch' not in sys.modules, 'tensorboardX imported torch'
if importlib.util.find_spec('torch') is not None:
  import torch
  assert torch.ones(2).sum().item() == 2.0
"""


def test_tensorboard_writer_does_not_import_torch(tmp_path):
  subprocess.run([sys.executable, '-c', WRITE_WITHOUT_TORCH, str(tmp_path)], check=True,
                 cwd=REPO)
  assert tensorboard_scalars(str(tmp_path)) == {'train/loss': [(1, 0.5)]}


def test_resume_drops_the_rows_after_the_checkpoint(tmp_path):
  writer = writers.MetricWriter(str(tmp_path))
  for step in (1, 2, 3, 4):
    writer.write(step, 'train', {'loss': float(step)})
  writer.close()
  writer = writers.MetricWriter(str(tmp_path), resume_step=2)  # Steps 3 and 4 are redone.
  writer.write(3, 'train', {'loss': 30.0})
  writer.close()
  assert [(r['step'], r['loss']) for r in _rows(tmp_path)] == [(1, 1.0), (2, 2.0), (3, 30.0)]


def test_disabled_writer_writes_nothing(tmp_path):
  writer = writers.MetricWriter(str(tmp_path), enabled=False)
  writer.write(1, 'train', {'loss': 1.0})
  writer.close()
  assert os.listdir(tmp_path) == []


def test_write_json_converts_numpy_and_leaves_no_partial_file(tmp_path):
  path = str(tmp_path / 'results.json')
  obj = {'accuracy': np.float32(0.25), 'per_cell': np.arange(3), 'name': 'a', 'n': np.int32(7)}
  writers.write_json(path, obj)
  assert writers.read_json(path) == {'accuracy': 0.25, 'per_cell': [0, 1, 2], 'name': 'a',
                                     'n': 7}
  assert writers.as_json(obj) == writers.read_json(path)
  assert os.listdir(tmp_path) == ['results.json']  # The temporary file was renamed.
  writers.write_json(path, {'replaced': True})
  assert writers.read_json(path) == {'replaced': True}


def test_corrupt_files_are_refused_naming_the_file(tmp_path):
  path = tmp_path / 'results.json'
  path.write_text('{"accuracy": 0.5')  # Truncated.
  with pytest.raises(WorkdirError, match=r'results\.json is corrupt'):
    writers.read_json(str(path))
  writer = writers.MetricWriter(str(tmp_path))
  writer.write(1, 'train', {'loss': 1.0})
  writer.close()
  with open(tmp_path / 'metrics.jsonl', 'a') as f:
    f.write('{"step": 2, "spl\n')
  with pytest.raises(WorkdirError, match=r'metrics\.jsonl line 2 is not a metrics row'):
    writers.MetricWriter(str(tmp_path), resume_step=1)
