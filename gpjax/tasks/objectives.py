"""The classification task's training objectives, per device under ``shard_map``: cross-entropy
(a PermuteNet drawing one fresh ordering per step) and AugShift's shifted pairs
(CE + CE + lambda * MSE of their GAP latents)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax import lax

from gpjax.core import parallel
from gpjax.core import trainer
from gpjax.data import examples, input_pipeline
from gpjax.models import Classifier, random_ordering

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]


def cross_entropy_step(state: trainer.TrainState, images: jax.Array, labels: jax.Array,
                       ordering: jax.Array | None, *, model: Classifier,
                       tx: optax.GradientTransformation) -> tuple[trainer.TrainState, Metrics]:
  """One cross-entropy step on this device's images (B, H, W, C) and labels (B,)."""
  def loss_fn(params):
    (logits, _), updates = model.apply(
        {'params': params, 'batch_stats': state.batch_stats}, images, train=True,
        ordering=ordering, mutable=['batch_stats'])
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    # With check_vma the gradient of replicated params is summed over the axis;
    # averaging the loss (not the gradients) gives the global-batch gradient.
    return lax.pmean(loss, parallel.DATA_AXIS), (logits, updates['batch_stats'])

  (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  accuracy = lax.pmean(jnp.mean(jnp.argmax(logits, -1) == labels), parallel.DATA_AXIS)
  return trainer.apply_gradients(state, tx, grads, batch_stats), {'loss': loss,
                                                                  'accuracy': accuracy}


def step_ordering(key: jax.Array, model: Classifier,
                   config: ml_collections.ConfigDict) -> jax.Array | None:
  """PermuteNet: one fresh ordering per step, shared by the whole batch."""
  if config.model.head != 'permutenet':
    return None
  return random_ordering(jax.random.fold_in(key, 1), model.ordering_length())


def augshift_loss(logits_a: jax.Array, logits_b: jax.Array, latent_a: jax.Array,
                  latent_b: jax.Array, labels: jax.Array,
                  weight: float) -> tuple[jax.Array, dict[str, jax.Array]]:
  """AugShift: CE(y1) + CE(y2) + weight * MSE(z1, z2) of one device's pairs.

  Args:
    logits_a, logits_b: (B, k) logits of the two shifted copies.
    latent_a, latent_b: (B, C) their GAP latents (``features['pooled']``).
    labels: (B,) int classes.
    weight: lambda.

  Returns:
    The loss and its parts: ``ce`` = CE(y1) + CE(y2), each a batch mean, and
    ``latent_mse`` = mean over batch and channels of (z1 - z2)^2 (PyTorch's
    ``MSELoss``). The MSE pulls both latents (no stop-gradient); the CE
    terms keep them from collapsing.
  """
  def ce(logits):
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

  ce_sum = ce(logits_a) + ce(logits_b)
  mse = jnp.mean(jnp.square(latent_a - latent_b))
  return ce_sum + weight * mse, {'ce': ce_sum, 'latent_mse': mse}


def augshift_step(state: trainer.TrainState, batch: Batch, *, model: Classifier,
                  tx: optax.GradientTransformation, config: ml_collections.ConfigDict,
                  info: input_pipeline.DatasetInfo) -> tuple[trainer.TrainState, Metrics]:
  """The train step with ``config.augshift.enabled``: both copies go through the
  network as one batch of 2B (BatchNorm statistics over both), `augshift_loss`. With
  ``augshift.copies = 1`` (standard training, AugShift's baseline) only copy 1 does,
  with its cross-entropy alone: the same placements, no second copy, no MSE."""
  key = jax.random.fold_in(jax.random.key(state.seed), state.step)
  images_a, images_b, labels = examples.make_shifted_pairs(
      jax.random.fold_in(key, 0), batch, config, info, flip=config.data.flip)
  ordering = step_ordering(key, model, config)  # Shared by both copies.
  n = labels.shape[0]
  if config.augshift.copies == 1:
    return cross_entropy_step(state, images_a, labels, ordering, model=model, tx=tx)

  def loss_fn(params):
    (logits, feats), updates = model.apply(
        {'params': params, 'batch_stats': state.batch_stats},
        jnp.concatenate([images_a, images_b]), train=True, ordering=ordering,
        mutable=['batch_stats'])
    z = feats['pooled']
    loss, parts = augshift_loss(logits[:n], logits[n:], z[:n], z[n:], labels,
                                config.augshift.weight)
    return lax.pmean(loss, parallel.DATA_AXIS), (logits, parts, updates['batch_stats'])

  (loss, (logits, parts, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.params)
  correct = jnp.argmax(logits, -1) == jnp.concatenate([labels, labels])
  metrics = {'loss': loss, 'accuracy': jnp.mean(correct), **parts}
  return trainer.apply_gradients(state, tx, grads, batch_stats), {
      k: v if k == 'loss' else lax.pmean(v, parallel.DATA_AXIS) for k, v in metrics.items()}
