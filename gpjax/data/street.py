"""``gpjax_street``: an offline street-scene segmentation set built from photos shipped with pip
packages (scikit-image, scikit-learn), so the segmentation study runs with no download.

Each scene has a layout prior like a street photo, with left/right asymmetry
(as in driving data, where sidewalks and pedestrians sit on one side), so that
*where* a pixel is helps tell *what* it is:

  sky: top band (the sky of china.jpg);
  building: left part, from a stepped roofline down to the horizon (brick.png,
    tinted red);
  vegetation: right part, from a wavy top down to the horizon (grass.png,
    tinted green);
  road: below the horizon (gravel.png, darkened);
  sidewalk: a wedge in the bottom right, widening towards the camera
    (gravel.png at twice the scale, light): the same texture family as the
    road, told apart mostly by position;
  vehicle: 1-2 crops of the motorcycle photo on the left half of the road, larger
    nearer the bottom (train: motorcycle_left.png, test: motorcycle_right.png);
  person: 0-2 crops of astronaut.png on the sidewalk (right);
  sign: 0-1 handwritten digit (scikit-learn digits, split train/test) on a
    yellow plate over the vegetation (right).

Objects are labelled by their rectangle, with a 1-pixel ring of ignore label
255 around it (as Cityscapes leaves object boundaries unlabelled). Textures of
train scenes come from the left 3/4 of each source photo and test textures from
the right 1/4, so no test texture pixel was seen in training. Example i of a
split is drawn from ``default_rng((split seed, i))``: deterministic and
independent of generation order. Stored as ``tfds.features.Tensor`` (no
TensorFlow needed): ``image`` uint8 (H, W, 3), ``label`` uint8 (H, W).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Iterator

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from PIL import Image

from gpjax.data import builtin

CLASS_NAMES = ('road', 'sidewalk', 'building', 'vegetation', 'sky', 'vehicle', 'person', 'sign')
ROAD, SIDEWALK, BUILDING, VEGETATION, SKY, VEHICLE, PERSON, SIGN = range(len(CLASS_NAMES))
IGNORE = 255
_SPLIT_SEEDS = {'train': 0, 'test': 1}
_TRAIN_FRACTION = 0.75  # Left part of each texture photo for train scenes.

# (package, file, (row0, row1, col0, col1) region of the photo, RGB tint).
_TEXTURES = {
    'sky': ('sklearn.datasets.images', 'china.jpg', (0, 100, 380, 640), (0.72, 0.84, 1.0)),
    'building': ('skimage.data', 'brick.png', None, (0.95, 0.55, 0.42)),
    'vegetation': ('skimage.data', 'grass.png', None, (0.45, 0.85, 0.35)),
    'road': ('skimage.data', 'gravel.png', None, (0.42, 0.42, 0.45)),
}
_CAR = {'train': 'motorcycle_left.png', 'test': 'motorcycle_right.png'}
_CAR_REGION = (120, 470, 40, 700)
_PERSON_REGION = (20, 512, 150, 410)


@dataclasses.dataclass
class StreetConfig(tfds.core.BuilderConfig):
  """Image size and split sizes of one variant."""
  height: int = 64
  width: int = 128
  num_train: int = 1500
  num_test: int = 300


CONFIGS = (
    StreetConfig(name='small', description='64x128 scenes for CPU runs.'),
    StreetConfig(name='large', description='128x256 scenes for GPU runs.', height=128,
                 width=256, num_train=5000, num_test=500),
)


@functools.lru_cache(maxsize=None)
def _texture_pool(name: str, split: str, scale: float) -> np.ndarray:
  """float32 (h, w, 3) in 0..1: the split's part of a texture photo, rescaled and tinted."""
  package, filename, region, tint = _TEXTURES[name]
  photo = builtin.load_photo(package, filename)
  if region is not None:
    photo = photo[region[0]:region[1], region[2]:region[3]]
  cut = int(round(photo.shape[1] * _TRAIN_FRACTION))
  part = photo[:, :cut] if split == 'train' else photo[:, cut:]
  size = (max(8, round(part.shape[1] * scale)), max(8, round(part.shape[0] * scale)))
  part = np.asarray(Image.fromarray(part).resize(size, Image.Resampling.BILINEAR), np.float32)
  return part / 255.0 * np.asarray(tint, np.float32)


def _texture(rng: np.random.Generator, name: str, split: str, h: int, w: int,
             scale: float) -> np.ndarray:
  """A random (h, w, 3) window of a texture, mirrored where the pool is too small."""
  pool = _texture_pool(name, split, scale)
  ph, pw = pool.shape[:2]
  pool = np.pad(pool, ((0, max(0, h - ph)), (0, max(0, w - pw)), (0, 0)), mode='symmetric')
  r = rng.integers(0, pool.shape[0] - h + 1)
  c = rng.integers(0, pool.shape[1] - w + 1)
  return pool[r:r + h, c:c + w]


@functools.lru_cache(maxsize=None)
def _object_photo(kind: str, split: str) -> np.ndarray:
  if kind == 'car':
    photo = builtin.load_photo('skimage.data', _CAR[split])
    r0, r1, c0, c1 = _CAR_REGION
  else:
    photo = builtin.load_photo('skimage.data', 'astronaut.png')
    r0, r1, c0, c1 = _PERSON_REGION
  return photo[r0:r1, c0:c1]


@functools.lru_cache(maxsize=None)
def _digits(split: str) -> np.ndarray:
  """uint8 (n, 32, 32) digit glyphs of the split (`builtin`'s digits split)."""
  images, _ = builtin.digits_images()
  return images[builtin.digits_split_indices(split), :, :, 0]


def _paste(image: np.ndarray, label: np.ndarray, patch: np.ndarray, top: int, left: int,
           cls: int) -> None:
  """Writes ``patch`` (h, w, 3) at (top, left), clipped to the canvas; label = cls inside
  and a 1-pixel ring of IGNORE around it."""
  H, W = label.shape
  h, w = patch.shape[:2]
  r0, r1, c0, c1 = max(top, 0), min(top + h, H), max(left, 0), min(left + w, W)
  if r0 >= r1 or c0 >= c1:
    return
  label[max(r0 - 1, 0):min(r1 + 1, H), max(c0 - 1, 0):min(c1 + 1, W)] = IGNORE
  image[r0:r1, c0:c1] = patch[r0 - top:r1 - top, c0 - left:c1 - left]
  label[r0:r1, c0:c1] = cls


def _resized(photo: np.ndarray, h: int, w: int) -> np.ndarray:
  return np.asarray(Image.fromarray(photo).resize((max(w, 1), max(h, 1)),
                                                  Image.Resampling.BILINEAR), np.float32) / 255.0


def _paint_objects(rng: np.random.Generator, image: np.ndarray, label: np.ndarray, split: str,
                   horizon: int, a: float, b: float) -> None:
  """Pastes a scene's vehicles, persons and sign into ``image``/``label`` (in place), drawing
  from ``rng`` after the background; the sidewalk runs from ``a`` W at the horizon to ``b``
  W at the bottom."""
  H, W = label.shape
  ground_h = H - horizon
  for _ in range(rng.integers(1, 3)):  # Vehicles: left half of the road, larger when nearer.
    depth = rng.uniform(0.25, 1.0)
    h = max(4, int(ground_h * 0.55 * depth))
    w = int(h * rng.uniform(1.6, 2.0))
    bottom = horizon + int(depth * ground_h)
    left = int(W * rng.uniform(0.0, 0.5)) - w // 2
    _paste(image, label, _resized(_object_photo('car', split), h, w), bottom - h, left, VEHICLE)
  for _ in range(rng.integers(0, 3)):  # Persons: on the sidewalk.
    depth = rng.uniform(0.3, 1.0)
    h = max(6, int(H * 0.45 * depth))
    w = max(3, int(h * 0.5))
    bottom = horizon + int(depth * ground_h)
    centre = int(W * (a + (b - a) * depth)) + int(rng.uniform(0.02, 0.12) * W)
    _paste(image, label, _resized(_object_photo('person', split), h, w), bottom - h,
           min(centre, W - w // 2) - w // 2, PERSON)
  if rng.random() < 0.7:  # A sign over the vegetation.
    digits = _digits(split)
    glyph = digits[rng.integers(len(digits))].astype(np.float32) / 255.0
    s = max(6, int(H * rng.uniform(0.12, 0.2)))
    glyph = _resized((glyph * 255).astype(np.uint8), s, s)
    plate = np.array([0.95, 0.8, 0.1], np.float32) * (1.0 - 0.9 * glyph[..., None])
    _paste(image, label, plate, int(H * rng.uniform(0.3, 0.45)) - s // 2,
           int(W * rng.uniform(0.62, 0.92)) - s // 2, SIGN)


def scene(split: str, index: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
  """Example ``index`` of ``split`` (one function: the layers are painted back to front, sky to
  sign, from one random stream whose draw order fixes every scene).

  Returns:
    image uint8 (height, width, 3) and label uint8 (height, width): class ids of
    `CLASS_NAMES`, or 255 (ignore).
  """
  rng = np.random.default_rng((_SPLIT_SEEDS[split], index))
  H, W = height, width
  scale = H / 256  # Texture detail grows with the image.
  rows, cols = np.mgrid[0:H, 0:W]
  horizon = int(H * rng.uniform(0.5, 0.62))
  label = np.full((H, W), SKY, np.uint8)
  image = _texture(rng, 'sky', split, H, W, 2 * scale)

  # Building on the left: a stepped roofline of 2-3 blocks.
  split_col = int(W * rng.uniform(0.38, 0.58))
  edges = np.sort(rng.integers(1, split_col, rng.integers(1, 3)))
  roof = np.zeros(W, np.int64)
  for a, b in zip(np.r_[0, edges], np.r_[edges, split_col]):
    roof[a:b] = int(H * rng.uniform(0.05, 0.3))
  building = (cols < split_col) & (rows >= roof[None, :]) & (rows < horizon)
  # Vegetation on the right: a wavy top.
  phase, top = rng.uniform(0, 2 * np.pi), H * rng.uniform(0.25, 0.42)
  wave = top + 0.05 * H * np.sin(cols / W * rng.uniform(6, 14) + phase)
  vegetation = (cols >= split_col) & (rows >= wave) & (rows < horizon)
  ground = rows >= horizon
  # Sidewalk: right wedge, from a ~ (0.75..0.9) W at the horizon to b ~ (0.5..0.65) W at the bottom.
  a, b = rng.uniform(0.75, 0.9), rng.uniform(0.5, 0.65)
  edge = W * (a + (b - a) * (rows - horizon) / max(H - horizon, 1))
  sidewalk = ground & (cols >= edge)
  for mask, cls, tex, s in ((building, BUILDING, 'building', scale),
                            (vegetation, VEGETATION, 'vegetation', scale),
                            (ground & ~sidewalk, ROAD, 'road', scale),
                            (sidewalk, SIDEWALK, 'road', 2 * scale)):
    fill = _texture(rng, tex, split, H, W, s)
    if cls == SIDEWALK:
      fill = np.clip(fill * 2.0 + 0.15, 0, 1)  # Light paving of the road's texture family.
    image = np.where(mask[..., None], fill, image)
    label[mask] = cls

  _paint_objects(rng, image, label, split, horizon, a, b)
  image = np.clip(image * rng.uniform(0.8, 1.2), 0.0, 1.0)  # Global lighting.
  return np.rint(image * 255).astype(np.uint8), label


class GpjaxStreet(tfds.core.GeneratorBasedBuilder):
  """Street-like scenes with per-pixel labels, made from photos shipped with pip packages."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  BUILDER_CONFIGS = list(CONFIGS)
  code_path = epath.Path(__file__)  # See builtin.GpjaxPhotos.

  def _info(self) -> tfds.core.DatasetInfo:
    c = self.builder_config
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Tensor(shape=(c.height, c.width, 3), dtype=np.uint8,
                                          encoding=tfds.features.Encoding.BYTES),
            'label': tfds.features.Tensor(shape=(c.height, c.width), dtype=np.uint8,
                                          encoding=tfds.features.Encoding.BYTES),
            'index': tfds.features.Scalar(dtype=np.int64),  # Regenerate with scene(split, i).
        }),
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing is downloaded.
    c = self.builder_config
    return {'train': self._generate_examples('train', c.num_train),
            'test': self._generate_examples('test', c.num_test)}

  def _generate_examples(self, split: str, count: int) -> Iterator[tuple[int, dict]]:
    c = self.builder_config
    for i in range(count):
      image, label = scene(split, i, c.height, c.width)
      yield i, {'image': image, 'label': label, 'index': i}
