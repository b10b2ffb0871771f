"""The probe benchmark runs at a tiny size on CPU and records its numbers.

No timing assertions.
"""

from test_bench import run_and_read


def test_probe_still_runs(tmp_path):
  record = run_and_read(tmp_path, ['probe', '--layer', '5', '--orderings', '4', '--images', '8',
                           '--width', '4', '--dtype', 'float32', '--repeats', '1',
                           '--official-orderings', '1', '--official-batch', '8'])
  assert record['results']['probe_orderings_per_s'] > 0
