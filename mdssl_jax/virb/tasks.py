"""Offline ViRB-style end tasks: rendered shapes on cluttered backgrounds.

Synopsis::

  task = tasks.make_task("depth", seed=0, image_size=32, num_train=1000,
                         num_test=300)
  task.train_x   # [n, 32, 32, 3] float32 in [0, 1]
  task.train_y   # [n, 32, 32, 1] float32 depths

Every scene is rendered by one pinhole camera (focal length = image side
in px, principal point at the centre) looking at flat shapes (circle,
square, triangle, plus, ring) parallel to the image plane at depths 2-6,
in front of a textured background plane at depth 8 (random rectangles and
stripes, so colour and texture say nothing about the shapes). Shapes are
painted far to near, so occlusions, the class map and the depth map agree
pixel for pixel. A second frame moves the camera by one of six
translations. Everything is a pure function of (seed, task, split).

Tasks (category; head; metric; chance / trivial baseline):

* shape_class: the class of the one large shape (semantic image-level;
  linear; top-1; 1/5).
* count: 1..max_objects non-overlapping discs and squares, label count - 1
  (structural image-level; linear; top-1; 1/max_objects).
* egomotion: the camera translation (±x, ±y, ±z) between two frames
  (structural image-level; fusion; top-1; 1/6).
* fg_seg: shape vs background per pixel (semantic pixelwise; DeepLabv3+;
  mIoU; all-background).
* class_seg: background or shape class per pixel (semantic pixelwise;
  DeepLabv3+; mIoU; all-background).
* depth: per-pixel depth (structural pixelwise; U-Net; -L1; the train
  mean depth everywhere).
* flow: per-pixel image motion (px) from frame 1 to frame 2 (structural
  pixelwise; Siamese U-Net; -L1; the train mean flow everywhere).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

SHAPES = ("circle", "square", "triangle", "plus", "ring")
# Camera translations of the second frame (world units), one per class.
MOTIONS = (("left", (-0.6, 0.0, 0.0)), ("right", (0.6, 0.0, 0.0)),
           ("up", (0.0, -0.6, 0.0)), ("down", (0.0, 0.6, 0.0)),
           ("forward", (0.0, 0.0, 1.0)), ("backward", (0.0, 0.0, -1.0)))
BACKGROUND_DEPTH = 8.0
DEPTH_RANGE = (2.0, 6.0)
_NOISE = 0.02  # Pixel noise std.
# Counting draws only discs and squares: at a few px, rings, pluses and
# triangle tips break into pieces and would be ambiguous to count.
_SOLID = (0, 1)

SEMANTIC_IMAGE = "semantic image-level"
STRUCTURAL_IMAGE = "structural image-level"
SEMANTIC_PIXEL = "semantic pixelwise"
STRUCTURAL_PIXEL = "structural pixelwise"
CATEGORIES = (SEMANTIC_IMAGE, STRUCTURAL_IMAGE, SEMANTIC_PIXEL,
              STRUCTURAL_PIXEL)

# name: (category, head, metric). Heads: linear (pooled features), fusion
# (pooled features of 2 frames), deeplab / unet (block outputs), siamese
# (block outputs of 2 frames). Metrics: top1, miou (both higher is
# better), neg_l1 (-L1, so higher is better everywhere).
TASK_SPECS = {
    "shape_class": (SEMANTIC_IMAGE, "linear", "top1"),
    "count": (STRUCTURAL_IMAGE, "linear", "top1"),
    "egomotion": (STRUCTURAL_IMAGE, "fusion", "top1"),
    "fg_seg": (SEMANTIC_PIXEL, "deeplab", "miou"),
    "class_seg": (SEMANTIC_PIXEL, "deeplab", "miou"),
    "depth": (STRUCTURAL_PIXEL, "unet", "neg_l1"),
    "flow": (STRUCTURAL_PIXEL, "siamese", "neg_l1"),
}


@dataclasses.dataclass
class Task:
  """One end task's data.

  Attributes:
    name: task name.
    category: one of CATEGORIES.
    head: "linear", "fusion", "deeplab", "unet" or "siamese".
    metric: "top1", "miou" or "neg_l1".
    num_outputs: classes (top1, miou) or regressed channels (neg_l1).
    train_x: [n, S, S, 3] or, for two-frame tasks, [n, 2, S, S, 3]
      float32 images.
    train_y: [n] int32 labels, [n, S, S] int32 pixel classes or
      [n, S, S, C] float32 regression targets.
    test_x, test_y: the test split, same layout.
    normalised: True when the images are already in the encoder's input
      space (data domains); False: [0, 1] RGB to be normalised.
  """
  name: str
  category: str
  head: str
  metric: str
  num_outputs: int
  train_x: np.ndarray
  train_y: np.ndarray
  test_x: np.ndarray
  test_y: np.ndarray
  normalised: bool = False


@dataclasses.dataclass(frozen=True)
class Shape:
  """A flat shape facing the camera: class, RGB colour, centre, radius."""
  kind: int
  color: tuple[float, float, float]
  x: float
  y: float
  z: float
  radius: float


@dataclasses.dataclass(frozen=True)
class Scene:
  """A background texture [2S, 2S, 3] and shapes (any order)."""
  texture: np.ndarray
  shapes: tuple[Shape, ...]


def shape_mask(kind: int, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
  """Which offsets (in units of the shape's radius) lie inside the shape.

  Args:
    kind: index into SHAPES.
    dx, dy: offsets from the shape's centre divided by its radius.

  Returns:
    Boolean array of dx's shape.
  """
  name = SHAPES[kind]
  if name == "circle":
    return dx ** 2 + dy ** 2 <= 1.0
  if name == "square":
    return np.maximum(np.abs(dx), np.abs(dy)) <= 0.8
  if name == "triangle":  # Apex up at dy = -1, base at dy = 0.7.
    return (dy <= 0.7) & (np.abs(dx) <= 0.95 * (dy + 1.0) / 1.7)
  if name == "plus":
    return (((np.abs(dx) <= 0.3) & (np.abs(dy) <= 0.95))
            | ((np.abs(dy) <= 0.3) & (np.abs(dx) <= 0.95)))
  r2 = dx ** 2 + dy ** 2  # ring
  return (r2 <= 1.0) & (r2 >= 0.3)


def render(scene: Scene, size: int,
           camera: tuple[float, float, float] = (0.0, 0.0, 0.0)
           ) -> dict[str, np.ndarray]:
  """Renders a scene from a camera translated by `camera` = (tx, ty, tz).

  Args:
    scene: background texture and shapes.
    size: image side S (px); also the focal length.
    camera: camera translation in world units (+z: towards the scene).

  Returns:
    {"image": [S, S, 3] float32 in [0, 1] (no noise), "depth": [S, S]
    float32 depth along the optical axis, "classes": [S, S] int32 (0
    background, k + 1 for SHAPES[k]), "fg": [S, S] bool}.
  """
  tx, ty, tz = camera
  f, c = float(size), size / 2.0
  u = np.arange(size, dtype=np.float64) + 0.5 - c
  uu, vv = np.meshgrid(u, u)  # uu varies along columns (x), vv along rows.
  depth_bg = BACKGROUND_DEPTH - tz
  tex = scene.texture
  side = tex.shape[0]
  # Background plane: texel = plane point in px at rest, centred.
  scale = depth_bg / BACKGROUND_DEPTH
  ix = uu * scale + tx * f / BACKGROUND_DEPTH + side / 2.0
  iy = vv * scale + ty * f / BACKGROUND_DEPTH + side / 2.0
  ix = np.clip(np.floor(ix).astype(np.int64), 0, side - 1)
  iy = np.clip(np.floor(iy).astype(np.int64), 0, side - 1)
  image = tex[iy, ix].astype(np.float32)
  depth = np.full((size, size), depth_bg, np.float32)
  classes = np.zeros((size, size), np.int32)
  for shape in sorted(scene.shapes, key=lambda s: -s.z):  # Far to near.
    z = shape.z - tz
    cx = f * (shape.x - tx) / z
    cy = f * (shape.y - ty) / z
    r = f * shape.radius / z
    inside = shape_mask(shape.kind, (uu - cx) / r, (vv - cy) / r)
    image[inside] = shape.color
    depth[inside] = z
    classes[inside] = shape.kind + 1
  return {"image": image, "depth": depth, "classes": classes,
          "fg": classes > 0}


def flow_field(depth: np.ndarray,
               camera: tuple[float, float, float]) -> np.ndarray:
  """Image motion of every pixel of frame 1 when the camera moves.

  A pixel at offset (u, v) from the centre and depth d sees the point
  (u d / f, v d / f, d); after the camera translates by (tx, ty, tz) it
  projects to f (X - tx) / (d - tz), likewise for y.

  Args:
    depth: [S, S] depths of frame 1 (camera at the origin).
    camera: the second frame's camera translation.

  Returns:
    [S, S, 2] float32 (du, dv) in px.
  """
  size = depth.shape[0]
  f = float(size)
  u = np.arange(size, dtype=np.float64) + 0.5 - size / 2.0
  uu, vv = np.meshgrid(u, u)
  tx, ty, tz = camera
  d = depth.astype(np.float64)
  du = f * (uu * d / f - tx) / (d - tz) - uu
  dv = f * (vv * d / f - ty) / (d - tz) - vv
  return np.stack([du, dv], -1).astype(np.float32)


def clutter(rng: np.random.Generator, size: int) -> np.ndarray:
  """A [2S, 2S, 3] background: random rectangles and stripes."""
  side = 2 * size
  tex = np.empty((side, side, 3), np.float32)
  tex[:] = rng.uniform(0.0, 1.0, 3)
  for _ in range(int(rng.integers(10, 20))):
    x0, y0 = rng.integers(0, side, 2)
    w, h = rng.integers(side // 16 + 1, side // 3, 2)
    tex[y0:y0 + h, x0:x0 + w] = rng.uniform(0.0, 1.0, 3)
  period = int(rng.integers(3, 8))
  rows = (np.arange(side) // period) % 2 == 0
  tex[rows] = 0.7 * tex[rows] + 0.3 * rng.uniform(0.0, 1.0, 3)
  return tex


def _color(rng: np.random.Generator) -> tuple[float, float, float]:
  return tuple(float(v) for v in rng.uniform(0.0, 1.0, 3))


def place_shapes(rng: np.random.Generator, size: int, count: int, *,
                 radius_px: tuple[float, float], overlap: bool,
                 kinds: list[int] | None = None) -> tuple[Shape, ...]:
  """`count` shapes fully inside the frame (seen from the origin).

  Args:
    rng: the generator.
    size: image side S.
    count: number of shapes.
    radius_px: range of image radii (px).
    overlap: allow shapes to overlap; False: their bounding circles stay
      at least 1 px apart (so each is fully visible).
    kinds: the shape classes; None: random.

  Returns:
    The shapes.

  Raises:
    RuntimeError: the shapes do not fit after many tries.
  """
  f = float(size)
  for _ in range(1000):
    shapes, discs = [], []
    for i in range(count):
      r = rng.uniform(*radius_px)
      cx, cy = rng.uniform(r + 0.5 - size / 2, size / 2 - r - 0.5, 2)
      if not overlap and any((cx - x) ** 2 + (cy - y) ** 2
                             < (r + rr + 1.0) ** 2 for x, y, rr in discs):
        break
      discs.append((cx, cy, r))
      z = rng.uniform(*DEPTH_RANGE)
      kind = int(rng.integers(len(SHAPES))) if kinds is None else kinds[i]
      shapes.append(Shape(kind, _color(rng), cx * z / f, cy * z / f, z,
                          r * z / f))
    if len(shapes) == count:
      return tuple(shapes)
  raise RuntimeError(f"cannot place {count} shapes of radius {radius_px} px "
                     f"in a {size} px image; lower max_objects.")


def _noisy(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
  noise = rng.normal(0.0, _NOISE, image.shape)
  return np.clip(image + noise, 0.0, 1.0).astype(np.float32)


def _example(name: str, rng: np.random.Generator, size: int,
             max_objects: int) -> tuple[np.ndarray, np.ndarray, Scene,
                                        tuple[float, float, float] | None]:
  """One (input, target, scene, second camera or None) of task `name`."""
  texture = clutter(rng, size)
  if name == "shape_class":
    kind = int(rng.integers(len(SHAPES)))
    shapes = place_shapes(rng, size, 1, radius_px=(size / 4, size / 3),
                          overlap=True, kinds=[kind])
    scene = Scene(texture, shapes)
    image = render(scene, size)["image"]
    return _noisy(rng, image), np.int32(kind), scene, None
  if name == "count":
    count = int(rng.integers(1, max_objects + 1))
    kinds = [int(k) for k in rng.choice(_SOLID, count)]
    shapes = place_shapes(rng, size, count, radius_px=(size / 10, size / 7),
                          overlap=False, kinds=kinds)
    scene = Scene(texture, shapes)
    image = render(scene, size)["image"]
    return _noisy(rng, image), np.int32(count - 1), scene, None
  count = int(rng.integers(1, 4))
  shapes = place_shapes(rng, size, count, radius_px=(size / 8, size / 4),
                        overlap=True)
  scene = Scene(texture, shapes)
  out = render(scene, size)
  if name in ("egomotion", "flow"):
    motion = int(rng.integers(len(MOTIONS)))
    camera = MOTIONS[motion][1]
    second = render(scene, size, camera)
    frames = np.stack([_noisy(rng, out["image"]),
                       _noisy(rng, second["image"])])
    if name == "egomotion":
      return frames, np.int32(motion), scene, camera
    return frames, flow_field(out["depth"], camera), scene, camera
  image = _noisy(rng, out["image"])
  target = {"fg_seg": out["fg"].astype(np.int32),
            "class_seg": out["classes"],
            "depth": out["depth"][..., None]}[name]
  return image, target, scene, None


def examples(name: str, *, seed: int, split: str, num: int, image_size: int,
             max_objects: int) -> list[tuple[Any, ...]]:
  """`num` (input, target, scene, second camera or None) of one split.

  Args:
    name: a key of TASK_SPECS.
    seed: the battery's seed; train and test use different streams.
    split: "train" or "test".
    num: examples.
    image_size: side S (px).
    max_objects: the most shapes of the counting task.

  Returns:
    The examples, each with the Scene it was rendered from.
  """
  if name not in TASK_SPECS:
    raise ValueError(f"unknown task {name!r}; choose from "
                     f"{sorted(TASK_SPECS)}.")
  task_id = list(TASK_SPECS).index(name)
  split_id = ("train", "test").index(split)
  rng = np.random.default_rng([seed, task_id, split_id])
  return [_example(name, rng, image_size, max_objects) for _ in range(num)]


def num_outputs(name: str, max_objects: int) -> int:
  """Classes or regressed channels of generated task `name`."""
  return {"shape_class": len(SHAPES), "count": max_objects,
          "egomotion": len(MOTIONS), "fg_seg": 2,
          "class_seg": len(SHAPES) + 1, "depth": 1, "flow": 2}[name]


def generate(name: str, *, seed: int, split: str, num: int, image_size: int,
             max_objects: int) -> tuple[np.ndarray, np.ndarray]:
  """`examples` stacked: (inputs, targets) as described in `Task`."""
  pairs = examples(name, seed=seed, split=split, num=num,
                   image_size=image_size, max_objects=max_objects)
  return (np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs]))


def make_task(name: str, *, seed: int, image_size: int, num_train: int,
              num_test: int, max_objects: int = 4) -> Task:
  """Generated task `name` with its train and test splits.

  Args:
    name: a key of TASK_SPECS.
    seed: generation seed.
    image_size: side S (px).
    num_train, num_test: split sizes.
    max_objects: the most shapes of the counting task (its classes).

  Returns:
    The Task.
  """
  kw = dict(seed=seed, image_size=image_size, max_objects=max_objects)
  train_x, train_y = generate(name, split="train", num=num_train, **kw)
  test_x, test_y = generate(name, split="test", num=num_test, **kw)
  category, head, metric = TASK_SPECS[name]
  return Task(name, category, head, metric, num_outputs(name, max_objects),
              train_x, train_y, test_x, test_y)
