"""Shared test setup: fast XLA compiles and an independent PyTorch conv per padding mode."""

import fcntl
import functools
import os
import re
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from gpjax import allocator, compilation_cache

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Tiny networks: XLA compile time dominates. Without most optimisation passes the
# padding/resnet/vgg/classifier/canvas tests took 75 s of CPU instead of 109 s on
# 2 cores (measured 2026-11), and every float32 comparison holds either way.
jax.config.update('jax_disable_most_optimizations', True)
allocator.keep_freed_memory()  # As gpjax.main: for the workers and every subprocess.
# And with XLA:CPU's older loop emitters for fusions where the jaxlib still has them (jax
# 0.10, not 0.12): on these unoptimised programs the default fusion emitters compile slower
# (the test suite: 33 min 6 s of CPU -> 27 min 51 s; with XLA's optimisations on, as the CLI
# runs, the loop emitters are the slower: docs/benchmarks/loops_cpu_epyc2.md).
# In the environment, so that every subprocess (`env`, the pytest-xdist workers) compiles alike;
# tests that give a subprocess more host devices add their flag to these. The loop emitters
# round two programs of the same sums differently where the fusion emitters do not: tests
# that require such programs bitwise equal are marked ``product_emitters`` and run in a child
# pytest under the emitters the CLI uses (`pytest_pyfunc_call`).
LOOP_EMITTERS = '--xla_cpu_use_fusion_emitters=false'


def _xla_knows(flag: str) -> bool:
  """Whether this jaxlib's XLA accepts ``flag`` (it aborts on an unknown one)."""
  probe = subprocess.run([sys.executable, '-c', 'import jax; jax.devices()'],
                         env=dict(os.environ, XLA_FLAGS=flag, JAX_PLATFORMS='cpu'),
                         capture_output=True)
  return probe.returncode == 0


# Not where the flag is set already, either way (a child of `pytest_pyfunc_call` sets it true).
if ('xla_cpu_use_fusion_emitters' not in os.environ.get('XLA_FLAGS', '')
    and _xla_knows(LOOP_EMITTERS)):
  os.environ['XLA_FLAGS'] = f"{os.environ.get('XLA_FLAGS', '')} {LOOP_EMITTERS}".strip()


def pytest_configure(config):
  config.addinivalue_line('markers', 'product_emitters: requires two compiled programs bitwise '
                          "equal; runs under XLA's default fusion emitters (see conftest)")


# Each ``product_emitters`` test run in a child pytest: nodeid -> (passed there, the output).
_CHILD_RUNS: dict[str, tuple[bool, str]] = {}


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
  """The ``product_emitters`` tests of a file, where this process compiles with the loop
  emitters, run together in one child pytest under the default fusion emitters (when the
  first of them is called); each passes here when it passed there."""
  flags = os.environ.get('XLA_FLAGS', '')
  if pyfuncitem.get_closest_marker('product_emitters') is None or LOOP_EMITTERS not in flags:
    return None
  if pyfuncitem.nodeid not in _CHILD_RUNS:
    nodeids = [item.nodeid for item in pyfuncitem.session.items
               if item.path == pyfuncitem.path and item.get_closest_marker('product_emitters')
               and item.nodeid not in _CHILD_RUNS]
    child = subprocess.run(
        [sys.executable, '-m', 'pytest', '-v', '-n', '0', '-p', 'no:cacheprovider', *nodeids],
        cwd=REPO, capture_output=True, text=True, timeout=900,
        env=dict(os.environ, XLA_FLAGS=flags.replace(LOOP_EMITTERS,
                                                     '--xla_cpu_use_fusion_emitters=true')))
    output = child.stdout[-6000:] + child.stderr[-2000:]
    for nodeid in nodeids:  # `-v` prints a line per phase that ends otherwise (teardown ERROR).
      outcomes = re.findall(rf'^{re.escape(nodeid)} ([A-Z]+)\b', child.stdout, re.MULTILINE)
      _CHILD_RUNS[nodeid] = (outcomes == ['PASSED'], output)
  passed, output = _CHILD_RUNS[pyfuncitem.nodeid]
  assert passed, output
  return True

# Pixels the official 'no padding' resize adds per side length, by kernel size.
NONE_GROWTH = {3: 2, 7: 3}


def _torch_conv(x, weight, bias=None, stride=1, padding='zero', dilation=1):
  """Reference conv in PyTorch: x (N, C, H, W), weight (O, I, k, k), official padding modes."""
  import torch  # imported here: only the model tests need torch
  import torch.nn.functional as F
  k = weight.shape[-1]
  p = dilation * (k // 2)
  if p == 0 or padding == 'zero':
    return F.conv2d(x, weight, bias, stride, p, dilation)
  if padding in ('reflect', 'circular', 'replicate'):
    return F.conv2d(F.pad(x, (p, p, p, p), mode=padding), weight, bias, stride, 0, dilation)
  if padding == 'none':
    assert dilation == 1
    g = NONE_GROWTH[k]
    x = F.interpolate(x, size=(x.shape[2] + g, x.shape[3] + g), mode='bilinear',
                      align_corners=False)
    return F.conv2d(x, weight, bias, stride, 0)
  if padding == 'partial':
    # Liu et al. 2018 with an all-ones mask of the unpadded input.
    mask = torch.ones(1, 1, *x.shape[2:], dtype=x.dtype)
    count = F.conv2d(mask, torch.ones(1, 1, k, k, dtype=x.dtype), None, stride, p, dilation)
    ratio = k * k / count.clamp(min=1e-8) * count.clamp(0, 1)
    raw = F.conv2d(x * mask, weight, bias, stride, p, dilation)
    if bias is None:
      return raw * ratio
    b = bias.view(1, -1, 1, 1)
    return ((raw - b) * ratio + b) * count.clamp(0, 1)
  raise AssertionError(padding)


# The longest files (end-to-end runs, measured with --durations) start first, so that with
# one file per worker (pyproject's `--dist loadfile`) no worker is left with one at the end.
LONGEST_FIRST = ('test_reproduce.py', 'test_distributed.py', 'test_multirun.py',
                 'test_checkpoint.py', 'test_bench_seeds.py', 'test_permutation.py',
                 'test_bench.py', 'test_augshift.py', 'test_classification.py')


def pytest_collection_modifyitems(items):
  rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
  items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # Stable: file order kept.


@pytest.fixture(scope='session')
def torch_conv():
  """The PyTorch reference conv: ``torch_conv(x, weight, bias, stride, padding, dilation)``."""
  return _torch_conv


def _init_variables(model, x, seed=0, **kwargs):
  """Random variables of the shapes ``model.init`` gives, drawn on the host.

  Eager ``model.init`` compiles a random-number kernel per parameter shape (about
  6 s for a tiny ResNet-50 here); shapes from ``jax.eval_shape`` cost nothing. BatchNorm
  gets non-trivial scale, bias, mean and var so that it is not an identity.
  """
  shapes = jax.eval_shape(functools.partial(model.init, **kwargs), jax.random.key(0), x)
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    name, shape = path[-1].key, leaf.shape
    if name == 'kernel':
      return rng.normal(0, np.sqrt(1 / np.prod(shape[:-1])), shape).astype(np.float32)
    if name in ('scale', 'var'):
      return rng.uniform(0.5, 1.5, shape).astype(np.float32)
    assert name in ('bias', 'mean'), path
    return rng.normal(0, 0.2, shape).astype(np.float32)

  return jax.tree_util.tree_map_with_path(draw, shapes)


@pytest.fixture(scope='session')
def init_variables():
  """``init_variables(model, x, seed=0, **init_kwargs)``: random host-drawn variables."""
  return _init_variables


def _check_bn_axis_name(plain, synced, x, variables):
  """Training-mode apply of ``synced`` (BatchNorm over axis 'data') vmapped over two
  halves of ``x`` gives the full batch's statistics and features, while ``plain`` on one
  half alone gets statistics of its own."""
  def step(model, x):
    return model.apply(variables, x, train=True, mutable=['batch_stats'])

  # jit: in training mode a whole-network compile is faster here than op-by-op dispatch.
  halves = x.reshape(2, x.shape[0] // 2, *x.shape[1:])
  full_feats, full = jax.jit(lambda x: step(plain, x))(x)
  feats, stats = jax.jit(jax.vmap(lambda h: step(synced, h), axis_name='data'))(halves)
  _, local = jax.jit(lambda h: step(plain, h))(halves[0])
  for half in range(2):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a[half], b, atol=2e-5, rtol=1e-5),
                 stats, full)
  want = np.asarray(full_feats['stage4'])
  np.testing.assert_allclose(np.asarray(feats['stage4']).reshape(want.shape), want,
                             atol=1e-4, rtol=1e-4)
  diffs = jax.tree.leaves(jax.tree.map(lambda a, b: float(np.abs(a - b).max()), local, full))
  assert max(diffs) > 1e-3


@pytest.fixture(scope='session')
def check_bn_axis_name():
  """``check_bn_axis_name(plain, synced, x, variables)``: BatchNorm syncs over 'data'."""
  return _check_bn_axis_name


def _shared_temp(tmp_path_factory):
  """The session's temporary folder, shared by the pytest-xdist workers (each has its own
  folder inside it)."""
  base = tmp_path_factory.getbasetemp()
  return base.parent if os.environ.get('PYTEST_XDIST_WORKER') else base


def _no_network(*args, **kwargs):
  raise OSError('network access during a test')


def offline(patch: pytest.MonkeyPatch) -> None:
  """Makes every socket connection and name lookup fail while ``patch`` holds."""
  for module, attr in ((socket.socket, 'connect'), (socket, 'create_connection'),
                       (socket, 'getaddrinfo')):
    patch.setattr(module, attr, _no_network)


@pytest.fixture(scope='session')
def builtin_dir(tmp_path_factory):
  """``builtin_dir(name)``: the session's one tfds data dir, shared by the pytest-xdist
  workers, with the built-in set ``name`` (gpjax_photos, gpjax_digits, gpjax_street) built
  there by whichever test asks first, every socket call failing (a lock keeps two workers
  from building one set twice). Tests about building a set build their own."""
  from gpjax.data import builtin, segmentation
  root = _shared_temp(tmp_path_factory) / 'builtin_tfds'

  def prepare(name: str) -> str:
    root.mkdir(exist_ok=True)
    with open(f'{root}.lock', 'w') as lock, pytest.MonkeyPatch.context() as patch:
      fcntl.flock(lock, fcntl.LOCK_EX)
      offline(patch)
      if name.startswith('gpjax_street'):
        segmentation.load_segmentation(name, 'train', data_dir=str(root))
      else:
        builtin.prepare(name, root)
    return str(root)

  return prepare


@pytest.fixture(scope='session')
def data_dir(builtin_dir):
  """The shared data dir with the built-in photo set, for the end-to-end tests."""
  return builtin_dir('gpjax_photos')


@pytest.fixture(scope='session', autouse=True)
def jax_cache(tmp_path_factory):
  """One persistent compilation cache for the session, set in this process and in the
  environment that every subprocess inherits (`env`, the benchmarks' children): the pytest
  workers, their subprocesses and gpjax.main run in-process (its default directory is this
  one) load what any of them compiled. Each run of a config builds new jitted functions, so
  without it a run recompiles what an identical run compiled before (measured: a micro run
  18.3 s, 7.6 s of it compiling). The subprocesses also compile without most optimisations,
  as this process does (test_distributed.py compares subprocess and in-process runs)."""
  path = str(_shared_temp(tmp_path_factory) / 'e2e_jax_cache')
  os.environ.update(
      JAX_COMPILATION_CACHE_DIR=path, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
      JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='0',
      JAX_DISABLE_MOST_OPTIMIZATIONS=str(jax.config.read('jax_disable_most_optimizations')))
  compilation_cache.enable(path)
  return path


@pytest.fixture(scope='session')
def env(jax_cache):
  """Environment of subprocess runs: this process's (see `jax_cache`), on CPU."""
  return dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=REPO)


def train_tiny(tmp_path_factory, data_dir: str, head: str) -> str:
  """A tiny location run of ``head`` trained for 2 steps (checkpoint and evaluation at step 2),
  for the tests that load a trained run; returns its workdir."""
  from configs import tiny
  from gpjax.tasks import classification
  workdir = tmp_path_factory.mktemp('trained')
  config = tiny.get_config()
  with config.unlocked():
    config.data.data_dir = data_dir
    config.model.head = head
    config.model.width = 4
    config.train.steps = 2
    config.train.batch_size = 8
    config.train.log_every = 1
    config.train.eval_every = 2
    config.eval.batch_size = 500
  classification.train_and_evaluate(config, str(workdir))
  return str(workdir)
