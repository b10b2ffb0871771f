"""What the benchmarks measure alike: times, the environment, FLOPs and buffer sizes."""

import os
import time

import jax
import jax.numpy as jnp
import pytest

from gpjax.bench import measure


def test_times_are_one_synchronised_wall_clock_time_per_call():
  calls = []
  seconds = measure.times(lambda: calls.append(time.sleep(0.01)) or jnp.zeros(3), 3)
  assert len(seconds) == len(calls) == 3
  assert min(seconds) >= 0.01  # Each includes its call's sleep.


def test_first_call_returns_the_result_after_its_time():
  seconds, out = measure.first_call(lambda: jnp.arange(4) * 2)
  assert seconds > 0 and out.tolist() == [0, 2, 4, 6]


def test_environment_records_the_command_line_and_devices():
  env = measure.environment(['--config=configs/bench/probe.py', '--workdir=w'])
  assert env['command'] == 'python -m gpjax.bench --config=configs/bench/probe.py --workdir=w'
  assert env['num_devices'] == jax.device_count()
  assert env['platform'] == jax.devices()[0].platform
  assert env['jax_version'] == jax.__version__


def test_flops_of_a_matmul_are_2mkn():
  compiled = jax.jit(jnp.dot).lower(jnp.ones((8, 16)), jnp.ones((16, 4))).compile()
  assert measure.flops(compiled) == 2 * 8 * 16 * 4


def test_compiled_memory_counts_arguments_and_outputs_less_donated_buffers():
  a = jnp.ones((1000,), jnp.float32)  # 4000 bytes.
  add = lambda x, y: x + y
  assert measure.compiled_memory_bytes(jax.jit(add).lower(a, a).compile()) == 12000
  donated = jax.jit(add, donate_argnums=0).lower(a, a).compile()
  assert measure.compiled_memory_bytes(donated) == 8000  # The output reuses x's buffer.


def test_live_device_bytes_count_every_array_alive():
  before = measure.live_device_bytes()
  held = jnp.zeros((1000, 250), jnp.float32)  # 1,000,000 bytes.
  assert measure.live_device_bytes() - before == 1_000_000
  del held
  assert measure.live_device_bytes() == before


@pytest.mark.skipif(not os.path.exists('/proc/self/status'), reason='reads Linux /proc')
def test_peak_rss_is_the_kernels_high_water_mark_in_bytes():
  with open('/proc/self/status') as f:
    hwm = next(1024 * int(line.split()[1]) for line in f if line.startswith('VmHWM:'))
  # Both read counters the kernel updates lazily (measured here: 170 KiB apart).
  assert abs(measure.peak_rss_bytes() - hwm) < 0.02 * hwm
