"""Embeddings for TensorBoard's Projector tab: vectors, a sprite of the images and their labels.

`write_projector(log_dir, embeddings, images=..., labels=...)` writes, into
one TensorBoard run directory:

    log_dir/
      embedding.ckpt-1.index, .data-*, checkpoint   the vectors, a tf.train.Checkpoint of one variable
      events.out.tfevents.*                         one text summary (makes the directory a run)
      metadata.tsv                                  one row per point: label, class name
      sprite.png                                    the images, a square grid of thumbnails
      projector_config.pbtxt                        ties them together (tensorboard.plugins.projector)

so `tensorboard --logdir <log_dir or a parent>` shows the points in the
Projector tab (PCA, t-SNE, UMAP), each drawn as its image and coloured or
labelled by class. Asset paths in the config are relative, as the plugin
requires them to stay inside the run directory. The projector needs the
`tensorboard` package (installed with TensorFlow).

Example:
```python
write_projector("runs/myol-c10/tensorboard/projector", features[:1000],
                images=x_test[:1000], labels=y_test[:1000], class_names=info.class_names)
```
"""

import math
import os

import numpy as np

from myol_keras import rundir

METADATA_FILE = "metadata.tsv"
SPRITE_FILE = "sprite.png"
CHECKPOINT_PREFIX = "embedding.ckpt"
MAX_SPRITE_SIDE = 8192  # the projector refuses larger sprites


def tensor_name(name="embedding"):
    """The key of the variable saved as `name` in a TF2 object checkpoint (what the projector reads)."""
    return f"{name}/.ATTRIBUTES/VARIABLE_VALUE"


def sprite_image(images, thumbnail=32):
    """A square uint8 grid `[S, S, 3]` of `thumbnail`-px thumbnails, row-major, blank cells at the end.

    Args:
        images: `[N, H, W, C]` uint8 images (C = 1 or 3), or float pixels in [0, 1].
        thumbnail: side of each cell in pixels.

    Raises:
        ValueError: not a batch of images, or a grid wider than the projector's 8192 px.
    """
    import tensorflow as tf

    from myol_keras import preprocessing

    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] not in (1, 3) or len(images) == 0:
        raise ValueError(f"Expected images shaped [N, H, W, 1 or 3]. Received: shape={images.shape}")
    thumbnail = preprocessing.check_image_size(thumbnail)
    columns = math.ceil(math.sqrt(len(images)))
    if columns * thumbnail > MAX_SPRITE_SIDE:
        raise ValueError(f"{len(images)} images of {thumbnail} px make a sprite wider than {MAX_SPRITE_SIDE} px; "
                         f"use at most {(MAX_SPRITE_SIDE // thumbnail) ** 2} images or a smaller thumbnail")
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    pixels = preprocessing.resize_pixels(tf.convert_to_tensor(images), thumbnail).numpy()
    cells = np.round(np.clip(pixels, 0.0, 1.0) * 255).astype(np.uint8)
    grid = np.full((columns * columns, thumbnail, thumbnail, 3), 255, np.uint8)
    grid[:len(cells)] = cells
    grid = grid.reshape(columns, columns, thumbnail, thumbnail, 3).transpose(0, 2, 1, 3, 4)
    return grid.reshape(columns * thumbnail, columns * thumbnail, 3)


def metadata_text(labels, class_names=None):
    """metadata.tsv: a header, then `label<TAB>class` per point (the class name, or the label without names).

    Two columns, because the projector reads a one-column file without a
    header; the first one is what it labels points by.
    """
    labels = np.asarray(labels).reshape(-1)
    lines = ["label\tclass"]
    for label in labels:
        name = class_names[int(label)] if class_names is not None else label
        lines.append(f"{label}\t{' '.join(str(name).split())}")  # no tab or newline inside a cell
    return "\n".join(lines) + "\n"


def write_projector(log_dir, embeddings, *, images=None, labels=None, class_names=None, thumbnail=32,
                    name="embedding"):
    """Write `embeddings` (and a sprite of `images`, their `labels`) for TensorBoard's Projector.

    Args:
        log_dir: the TensorBoard run directory to write into (created).
        embeddings: `[N, D]` vectors.
        images: optional `[N, H, W, C]` images drawn as the points (`sprite_image`).
        labels: optional `[N]` int labels (metadata.tsv).
        class_names: optional names indexed by label (a `class` column).
        thumbnail: sprite cell size in pixels.
        name: the embedding's name in the Projector's menu.

    Returns:
        dict of the paths written: `config`, `checkpoint`, and `metadata` / `sprite` when given.

    Raises:
        ValueError: not a 2-D array of finite numbers, or images / labels of another length.
    """
    import tensorflow as tf
    from google.protobuf import text_format
    from tensorboard.plugins import projector

    vectors = np.asarray(embeddings, np.float32)
    if vectors.ndim != 2 or len(vectors) == 0 or not np.all(np.isfinite(vectors)):
        raise ValueError(f"Expected finite embeddings shaped [N, D], N >= 1. Received: shape={vectors.shape}")
    for what, values in (("images", images), ("labels", labels)):
        if values is not None and len(values) != len(vectors):
            raise ValueError(f"Expected one of `{what}` per embedding. Received: {len(values)} {what}, "
                             f"{len(vectors)} embeddings")
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"Expected `name` to be an identifier (letters, digits, _). Received: name={name!r}")
    if class_names is not None and labels is None:
        raise ValueError("`class_names` needs `labels`")
    os.makedirs(log_dir, exist_ok=True)
    written = {}
    config = projector.ProjectorConfig()
    embedding = config.embeddings.add()
    embedding.tensor_name = tensor_name(name)
    if labels is not None:
        written["metadata"] = rundir.atomic_write(os.path.join(log_dir, METADATA_FILE),
                                                  metadata_text(labels, class_names).encode())
        embedding.metadata_path = METADATA_FILE
    if images is not None:
        png = tf.io.encode_png(sprite_image(images, thumbnail)).numpy()
        written["sprite"] = rundir.atomic_write(os.path.join(log_dir, SPRITE_FILE), png)
        embedding.sprite.image_path = SPRITE_FILE
        embedding.sprite.single_image_dim.extend([thumbnail, thumbnail])
    # No model_checkpoint_path: the plugin would resolve a relative one against its own working directory;
    # left empty, it takes the newest checkpoint of the run directory (the `checkpoint` file).
    variable = tf.Variable(vectors, trainable=False)
    written["checkpoint"] = tf.train.Checkpoint(**{name: variable}).save(os.path.join(log_dir, CHECKPOINT_PREFIX))
    # TensorBoard lists a subdirectory as a run only if it holds an event file.
    with tf.summary.create_file_writer(log_dir).as_default():
        tf.summary.text("projector", f"{len(vectors)} embeddings of dimension {vectors.shape[1]}: "
                        "see the Projector tab", step=0)
    written["config"] = rundir.atomic_write(os.path.join(log_dir, "projector_config.pbtxt"),
                                            text_format.MessageToString(config).encode())
    return written
