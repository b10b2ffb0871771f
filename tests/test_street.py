"""The built-in street scenes: a left/right layout prior, deterministic per (split, index),
objects pasted with an ignore ring."""

import numpy as np

from gpjax.data import street


def test_scenes_have_a_left_right_layout_prior():
  labels = np.stack([street.scene('train', i, 64, 128)[1] for i in range(40)])
  assert set(np.unique(labels)) <= set(range(len(street.CLASS_NAMES))) | {255}
  assert (labels == 255).any()  # Object boundaries are left unlabelled.
  left = labels[:, :, :64]

  def share(cls):
    return (left == cls).sum() / max((labels == cls).sum(), 1)

  assert share(street.BUILDING) > 0.9 and share(street.VEHICLE) > 0.6
  assert share(street.SIDEWALK) < 0.05 and share(street.VEGETATION) < 0.2
  assert share(street.PERSON) < 0.1 and share(street.SIGN) < 0.1
  assert (labels[:, 0] == street.SKY).mean() > 0.4 and (labels[:, -1] == street.SKY).sum() == 0
  # Train and test differ; an example does not depend on what was generated before it.
  a = street.scene('train', 5, 64, 128)[0]
  assert not np.array_equal(a, street.scene('test', 5, 64, 128)[0])
  np.testing.assert_array_equal(a, street.scene('train', 5, 64, 128)[0])


def test_paste_labels_the_patch_with_an_ignore_ring_clipped_at_the_border():
  image = np.zeros((5, 6, 3), np.float32)
  label = np.full((5, 6), street.SKY, np.uint8)
  patch = np.arange(2 * 2 * 3, dtype=np.float32).reshape(2, 2, 3)
  street._paste(image, label, patch, 1, 2, street.VEHICLE)
  v, i, s = street.VEHICLE, street.IGNORE, street.SKY
  np.testing.assert_array_equal(label, [[s, i, i, i, i, s],
                                        [s, i, v, v, i, s],
                                        [s, i, v, v, i, s],
                                        [s, i, i, i, i, s],
                                        [s, s, s, s, s, s]])
  np.testing.assert_array_equal(image[1:3, 2:4], patch)
  assert image.sum() == patch.sum()
  # Clipped: only the patch's part inside the canvas is written, its ring stops at the edge.
  street._paste(image, label, patch, 4, 5, street.PERSON)
  assert label[4, 5] == street.PERSON and (label[3, 4:] == i).all() and label[4, 4] == i
  np.testing.assert_array_equal(image[4, 5], patch[0, 0])
  street._paste(image, label, patch, 9, 9, street.SIGN)  # Wholly outside: nothing changes.
  assert (label != street.SIGN).all()
