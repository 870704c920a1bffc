"""Load exported SavedModels, extract features with a progress line, record results.

The evaluations read the SavedModel endpoints (docs/DECISIONS.md §4.6): `serving_default`
takes uint8 images and `serve_pixels` float32 pixels in [0, 1]; both resize
and normalise inside and run BatchNorm in inference mode (docs/METHODS.md §3.1 step 1:
"eval mode"). The export's `assets.extra/myol_keras.json` says what it is
(`kind`: "encoder" or "classifier") and where its run directory is, where
every evaluation appends a record to `results.json`.
"""

import io
import json
import os
import sys
import time

import numpy as np
import tensorflow as tf

from myol_keras import export as export_lib
from myol_keras import rundir

RESULTS_FILE = rundir.RESULTS_FILE
SAMPLE_FILE = "embedding_sample.npz"
KINDS = ("encoder", "classifier")


def export_kind(metadata):
    """`"encoder"` or `"classifier"` from an export's metadata."""
    kind = metadata.get("kind")
    if kind:
        return kind
    return "classifier" if "classifier" in str(metadata.get("format", "")) else "encoder"


class LoadedExport:
    """A loaded SavedModel export with its metadata.

    Attributes:
        path: the version directory.
        metadata: the `myol_keras.json` dict.
        kind: "encoder" or "classifier".
        module: the object returned by `tf.saved_model.load`.
    """

    def __init__(self, path, metadata, module):
        self.path = path
        self.metadata = metadata
        self.kind = export_kind(metadata)
        self.module = module
        self.image_size = int(metadata["image_size"])
        self.mean = tuple(metadata["mean"])
        self.std = tuple(metadata["std"])

    def _endpoint(self, name):
        fn = getattr(self.module, name, None)
        if fn is None:
            signature = self.module.signatures.get(name)
            if signature is None:
                raise ValueError(f"{self.path} has no {name!r} endpoint; it was not written by myol_keras")
            return lambda x: signature(x)
        return fn

    def serve_uint8(self, images):
        """uint8 [N, H, W, 3] -> output dict (serving_default)."""
        return self._endpoint("serving_default")(tf.convert_to_tensor(images, tf.uint8))

    def serve_pixels(self, pixels):
        """float32 pixels in [0, 1] -> output dict (serve_pixels); differentiable."""
        return self._endpoint("serve_pixels")(tf.convert_to_tensor(pixels, tf.float32))

    @property
    def run_dir(self):
        return self.metadata.get("run_dir")

    @property
    def base_path(self):
        """The model base path (parent of the version directory)."""
        return os.path.dirname(os.path.abspath(self.path))


def read_export_metadata(path, expect="encoder"):
    """`(version_dir, metadata)` of a myol_keras export of the expected kind, without loading its graph.

    Args:
        path: a version directory or its model base path (highest version).
        expect: "encoder" (probe, kNN, fine-tuning, embeddings) or "classifier" (attacks).

    Raises:
        FileNotFoundError: no SavedModel or no myol_keras metadata at `path`.
        ValueError: no path, or the export is of the other kind (the message says which to pass).
    """
    if expect not in KINDS:
        raise ValueError(f"expect must be one of {KINDS}. Received: expect={expect!r}")
    if not path:
        raise ValueError(f"no {expect} export given (a saved_models/<name> directory)")
    version_dir = export_lib.resolve_version_dir(path)
    meta_path = os.path.join(version_dir, export_lib.EXTRA_DIR, export_lib.METADATA_FILE)
    if not os.path.exists(meta_path):
        raise FileNotFoundError(
            f"{version_dir} is a SavedModel but not a myol_keras export ({meta_path} is missing)"
        )
    metadata = export_lib.load_export_metadata(version_dir)
    kind = export_kind(metadata)
    if kind != expect:
        if expect == "encoder":
            hint = (f"{version_dir} is a classifier export (encoder + linear head); pass the encoder it "
                    f"was trained on: {metadata.get('encoder', 'saved_models/<name>/')}")
        else:
            hint = (f"{version_dir} is an encoder export, not a classifier; train a linear probe first "
                    f"(python -m myol_keras.evaluation.linear_probe --saved_model={path}) and pass its "
                    "saved_models/<name>-linear/ directory")
        raise ValueError(hint)
    return version_dir, metadata


def load_export(path, expect="encoder"):
    """Load a myol_keras SavedModel export, checking that it is the expected kind.

    Args:
        path: a version directory or its model base path (highest version).
        expect: "encoder" (linear probe, kNN, embeddings) or "classifier" (attacks).

    Raises:
        FileNotFoundError: no SavedModel or no myol_keras metadata at `path`.
        ValueError: the export is of the other kind.

    Example:
    ```python
    encoder = load_export("saved_models/byol-cifar10")
    encoder.serve_uint8(images)["embedding"]
    ```
    """
    version_dir, metadata = read_export_metadata(path, expect)
    module = tf.saved_model.load(version_dir)
    return LoadedExport(version_dir, metadata, module)


class ProgressLine:
    """A one-line progress display on stderr (`\\r`-updated on a terminal, a few lines otherwise)."""

    def __init__(self, description, total, unit="images", stream=None, enabled=True):
        self.description = description
        self.total = int(total) if total else None
        self.unit = unit
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.count = 0
        self.start = time.perf_counter()
        self._last = 0.0
        self._tty = getattr(self.stream, "isatty", lambda: False)()

    def _line(self):
        elapsed = time.perf_counter() - self.start
        rate = self.count / elapsed if elapsed > 0 else 0.0
        of = f"/{self.total}" if self.total else ""
        return f"{self.description}: {self.count}{of} {self.unit} ({rate:.0f} {self.unit}/s, {elapsed:.1f} s)"

    def update(self, n):
        self.count += int(n)
        if not self.enabled:
            return
        now = time.perf_counter()
        if self._tty and now - self._last > 0.2:
            self.stream.write("\r" + self._line())
            self.stream.flush()
            self._last = now

    def close(self):
        if self.enabled:
            self.stream.write(("\r" if self._tty else "") + self._line() + "\n")
            self.stream.flush()
        return time.perf_counter() - self.start


def load_labelled_arrays(dataset, split, data_dir=None, download=True, max_images=None):
    """All of a labelled split as numpy: (uint8 images [N, H, W, 3], int64 labels [N], DatasetInfo).

    Raises:
        ValueError: an unknown dataset, one without labels or an empty split.
        myol_keras.data.DataUnavailableError: the data is not on this machine.
    """
    from myol_keras import data

    if dataset not in data.DATASETS:
        raise ValueError(f"unknown --dataset={dataset!r}; choose one of: {', '.join(data.DATASETS)}")
    try:
        ds, info = data.load_labelled(dataset, split, data_dir, download=download)
    except data.DataUnavailableError:
        raise
    except ValueError as e:
        raise ValueError(f"--dataset={dataset} cannot give labelled {split} images for this protocol: {e}") from None
    if info.num_classes is None:
        raise ValueError(f"--dataset={dataset} has no labels; a labelled protocol needs a labelled dataset")
    if max_images:
        ds = ds.take(int(max_images))
    images, labels = [], []
    for x, y in ds.batch(1024).as_numpy_iterator():
        images.append(x)
        labels.append(y)
    if not images:
        raise ValueError(f"--dataset={dataset} split {split!r} is empty")
    images = np.concatenate(images)
    labels = np.concatenate(labels).astype(np.int64)
    return images, labels, info


def extract_features(fn, images, batch_size=256, description="features", output_key="embedding", verbose=True):
    """Run `fn` (e.g. `LoadedExport.serve_uint8`) over `images` in batches -> float32 numpy.

    Args:
        fn: maps a batch to a dict of outputs (or a tensor).
        images: numpy array [N, ...].
        batch_size: images per call.
        description: label of the progress line.
        output_key: which output of the dict to keep.
    """
    progress = ProgressLine(description, len(images), enabled=verbose)
    outputs = []
    for start in range(0, len(images), batch_size):
        out = fn(images[start:start + batch_size])
        if isinstance(out, dict):
            out = out[output_key]
        outputs.append(np.asarray(out, dtype=np.float32))
        progress.update(min(batch_size, len(images) - start))
    progress.close()
    return np.concatenate(outputs) if outputs else np.zeros((0, 0), np.float32)


def results_path(run_dir):
    return os.path.join(run_dir, RESULTS_FILE)


def append_result(run_dir, record):
    """Append `record` (a dict) to `<run_dir>/results.json` atomically; returns the path or None."""
    if not run_dir:
        return None
    os.makedirs(run_dir, exist_ok=True)
    path = results_path(run_dir)
    records = read_results(run_dir)
    record = dict(record)
    record.setdefault("timestamp", time.strftime("%Y-%m-%dT%H:%M:%S"))
    records.append(record)
    return rundir.atomic_write(path, json.dumps(records, indent=2, sort_keys=True, default=_json_default) + "\n")


def read_results(run_dir):
    """The list of records in `<run_dir>/results.json` ([] if none)."""
    path = results_path(run_dir)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        records = json.load(f)
    return records if isinstance(records, list) else [records]


THUMBNAIL = 32  # pixels: the side of the images kept with the embedding sample (the projector's sprite)


def save_embedding_sample(run_dir, features, labels, max_points=2000, seed=0, images=None):
    """Keep at most `max_points` test features for the report's 2-D embedding map and TensorBoard's projector.

    With `images` (the test images, uint8 `[N, H, W, 3]`), their thumbnails (at most `THUMBNAIL` px a side)
    are kept too, as the projector's sprite.
    """
    if not run_dir:
        return None
    os.makedirs(run_dir, exist_ok=True)
    rng = np.random.default_rng(seed)
    index = np.sort(rng.permutation(len(features))[:max_points])
    arrays = {"features": features[index].astype(np.float32), "labels": labels[index]}
    if images is not None and len(images) == len(features):
        arrays["thumbnails"] = _thumbnails(np.asarray(images)[index])
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return rundir.atomic_write(os.path.join(run_dir, SAMPLE_FILE), buffer.getvalue())


def _thumbnails(images, side=THUMBNAIL):
    """uint8 images shrunk (area average, Pillow) so that neither side exceeds `side`; smaller ones as they are."""
    if max(images.shape[1:3]) <= side:
        return images.astype(np.uint8)
    from PIL import Image

    scale = side / max(images.shape[1:3])
    size = (max(1, round(images.shape[2] * scale)), max(1, round(images.shape[1] * scale)))
    return np.stack([np.asarray(Image.fromarray(np.asarray(im, np.uint8).squeeze()).convert("RGB")
                                .resize(size, Image.BOX)) for im in images])


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)
