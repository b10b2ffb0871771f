"""The Task protocol: what a task gives the training core (`gpjax.core.trainer`).

A task is one module (`gpjax.tasks.classification`, `gpjax.tasks.segmentation`)
that defines a ``TASK = Task(...)``; `gpjax.tasks.registry` lists them, and the
``train``/``segment`` jobs and `gpjax.tasks.runs.load_run` are derived from that
list. Steps run per device under ``shard_map`` over the ``data`` axis, with
``model``, ``tx``, ``config`` and ``info`` bound by keyword.
"""

import dataclasses
from typing import Any, Callable, Iterator

Config = Any  # ml_collections.ConfigDict
Info = Any  # What load_data says of the data set (input_pipeline.DatasetInfo, SegInfo, ...).


@dataclasses.dataclass(frozen=True)
class Task:
  """A task's functions; the training core calls nothing else of it.

  Attributes:
    job: the config ``job`` that trains it (``train``, ``segment``).
    metric: the evaluation key the best checkpoint is kept by (e.g. ``test_accuracy``).
    check: ``check(config)`` raises ConfigError in one line for a bad config.
    description: ``description(config) -> str``, the progress bar's label.
    load_data: ``load_data(config) -> (train source, eval source, info)``.
    num_classes: ``num_classes(config, info) -> int``.
    create_model: ``create_model(config, num_classes, axis_name=...) -> flax Module``.
    input_shape: ``input_shape(config, info) -> (H, W, C)``.
    train_step: ``train_step(state, batch, *, model, tx, config, info) -> (state, metrics)``.
    eval_step: ``eval_step(state, batch, *, model, config, info) -> sums`` (psummed).
    eval_batches: ``eval_batches(source, config) -> iterator`` over this process's share.
    summarize: ``summarize(totals, info) -> dict`` of one evaluation.
    results: ``results(config, final, best, info) -> dict``, the task's keys of results.json.
    write_figures: ``write_figures(config, workdir, final)``.
    weights: ``weights(config, model) -> variables`` replacing the initial ones (a
      pretrained backbone), or None.
  """
  job: str
  metric: str
  check: Callable[[Config], None]
  description: Callable[[Config], str]
  load_data: Callable[[Config], tuple[Any, Any, Info]]
  num_classes: Callable[[Config, Info], int]
  create_model: Callable[..., Any]
  input_shape: Callable[[Config, Info], tuple[int, ...]]
  train_step: Callable[..., tuple[Any, dict[str, Any]]]
  eval_step: Callable[..., dict[str, Any]]
  eval_batches: Callable[[Any, Config], Iterator[Any]]
  summarize: Callable[[Any, Info], dict[str, Any]]
  results: Callable[[Config, dict[str, Any], dict[str, Any], Info], dict[str, Any]]
  write_figures: Callable[[Config, str, dict[str, Any]], None]
  weights: Callable[[Config, Any], Any] | None = None
