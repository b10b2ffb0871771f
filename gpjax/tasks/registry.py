"""The tasks, by the job that trains each: the one list the ``train``/``segment`` jobs and
`gpjax.tasks.runs.load_run` are derived from. A new task is a module with a ``TASK`` and one
entry here."""

from gpjax.core.task import Task
from gpjax.tasks import classification, segmentation

TASKS: dict[str, Task] = {task.job: task for task in (classification.TASK, segmentation.TASK)}
