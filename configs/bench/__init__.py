"""Configs of the benchmarks run as experiments (``python -m gpjax.bench.NAME --config=...``)."""
