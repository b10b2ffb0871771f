"""The seeds benchmark at a tiny size on CPU: every mode timed against sequential in one
record, the PyTorch step beside it, and a real cell whose interleaved and unrolled runs equal
the sequential ones. No timing assertions."""

from test_bench import run_and_read

from gpjax.bench import seeds


def test_seeds_benchmark_records_every_mode_the_torch_step_and_a_cell(tmp_path, builtin_dir):
  # The CPU study's cell at width 4 on 8x8 sources: faster compiles.
  record = run_and_read(tmp_path, 'seeds', [
      '--config.seeds=2', '--config.width=4', '--config.source_size=8', '--config.batch=8',
      '--config.steps=2', '--config.warmup=1', '--config.cell_steps=2',
      '--config.cell.model.width=4', '--config.cell.data.image_size=8',
      f'--config.cell.data.data_dir={builtin_dir("gpjax_digits")}'])
  rows = record['results']
  assert [r['mode'] for r in rows] == list(seeds.STEP_MODES)
  assert rows[0]['speedup_vs_sequential'] == 1.0
  for r in rows:
    assert r['seconds_per_group_step'] > 0 and len(r['seconds_per_group_step_all']) == 2
    assert r['images_per_s'] == 2 * 8 / r['seconds_per_group_step']
    assert r['speedup_vs_sequential'] == (rows[0]['seconds_per_group_step']
                                          / r['seconds_per_group_step'])
  torch = record['torch']
  assert torch['seconds_per_step'] > 0 and torch['threads'] >= 1
  assert torch['gpjax_speed_over_torch'] == (torch['seconds_per_step']
                                             / torch['gpjax_seconds_per_step'])
  cell = record['cell']
  assert (cell['steps'], cell['width'], cell['batch']) == (2, 4, 32)
  sequential, interleaved, unrolled = cell['results']
  assert [r['mode'] for r in cell['results']] == ['sequential', 'interleave', 'unroll']
  assert interleaved['equal_to_sequential'] and unrolled['equal_to_sequential']
  assert len(set(sequential['test_losses'])) == 2  # 2 seeds.
  assert record['settings']['canvas_size'] == 24
