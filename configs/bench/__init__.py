"""Benchmark configs: one ``NAME.py`` per benchmark of ``python -m gpjax.bench``."""
