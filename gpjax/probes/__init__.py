"""Probes of trained models, each an ``evaluate`` of a loaded run (`gpjax.tasks.runs.load_run`) and a
job ``run``: channel orderings (`permutation`), shift invariance (`invariance`), position
channels (`ranking`) and the position attack on them (`attack`)."""
