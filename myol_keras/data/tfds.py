"""The tfds source kind: cifar10, cifar100, stl10, fashion_mnist, mnist, svhn_cropped (docs/DECISIONS.md §4.10).

Images stream from `tensorflow_datasets` (the arrays are read into memory). When a dataset cannot be
found or fetched, a `DataUnavailableError` says, on one line, which dataset, where it looked and which
offline routes exist. tfds itself, offline, retries a download for minutes before failing; the
reachability of the download host is checked first (at most 3 s) instead. TensorFlow and tfds are
imported only when a dataset is loaded.

Example:
    ds, info = SOURCES[0].pretrain_dataset(None)  # cifar10
"""

from __future__ import annotations

import dataclasses
import os
import socket
import threading
import urllib.parse
import urllib.request
from pathlib import Path

from myol_keras.data import source
from myol_keras.data.types import NORMALIZATIONS
from myol_keras.data.types import DataUnavailableError
from myol_keras.data.types import DatasetInfo

_NETWORK_TIMEOUT = 3.0


@dataclasses.dataclass(frozen=True)
class _TfdsSpec:
    image_size: int
    pretrain_split: str
    num_pretrain_images: int
    download_url: str


_TFDS = {
    "cifar10": _TfdsSpec(32, "train", 50_000, "https://www.cs.toronto.edu/~kriz/"),
    "cifar100": _TfdsSpec(32, "train", 50_000, "https://www.cs.toronto.edu/~kriz/"),
    "stl10": _TfdsSpec(64, "unlabelled+train", 105_000, "http://ai.stanford.edu/~acoates/stl10/"),
    "fashion_mnist": _TfdsSpec(
        28, "train", 60_000, "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
    ),
    "mnist": _TfdsSpec(28, "train", 60_000, "https://storage.googleapis.com/cvdf-datasets/mnist/"),
    "svhn_cropped": _TfdsSpec(32, "train", 73_257, "http://ufldl.stanford.edu/housenumbers/"),
}


class TfdsSource(source.DataSource):
    """One tfds dataset: streamed as `tf.data`, read into memory for the array forms.

    Args:
        name: the tfds name (a key of the built-in table).

    Example:
        images, info = TfdsSource("cifar10").pretrain_array("~/tensorflow_datasets")
    """

    group = "tfds"

    def __init__(self, name):
        self.name = name
        self.spec = _TFDS[name]

    def pretrain_dataset(self, data_dir, *, download=True, image_size=None, cache_dir=None):
        import tensorflow as tf

        ds, info = _load_tfds(self.name, self.spec.pretrain_split, data_dir, download)
        return ds.map(lambda image, label: _to_rgb(image), num_parallel_calls=tf.data.AUTOTUNE), info

    def labelled_dataset(self, split, data_dir, *, download=True, image_size=None, cache_dir=None):
        import tensorflow as tf

        ds, info = _load_tfds(self.name, split, data_dir, download)
        return (
            ds.map(lambda image, label: (_to_rgb(image), tf.cast(label, tf.int64)),
                   num_parallel_calls=tf.data.AUTOTUNE),
            info,
        )

    def pretrain_array(self, data_dir, *, download=True, image_size=None, cache_dir=None):
        from myol_keras.data import pipeline

        ds, info = self.pretrain_dataset(data_dir, download=download)
        return pipeline.materialise(ds), info

    def labelled_array(self, split, data_dir, *, download=True, image_size=None, cache_dir=None):
        from myol_keras.data import pipeline

        ds, info = self.labelled_dataset(split, data_dir, download=download)
        images, labels = pipeline.materialise(ds)
        return images, labels, info


SOURCES = tuple(TfdsSource(name) for name in _TFDS)


def _to_rgb(image):
    """Repeat a greyscale image to 3 channels and drop an alpha channel (static channel count)."""
    import tensorflow as tf

    channels = image.shape[-1]
    if channels == 1:
        return tf.repeat(image, 3, axis=-1)
    if channels == 4:
        return image[..., :3]
    return image


def _tfds_dir(data_dir):
    return str(
        Path(os.path.expanduser(str(data_dir or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets")))
    )


def _offline_routes(name):
    routes = []
    if name == "stl10":
        routes.append(
            "--dataset=stl10_binary --data_dir=DIR with the STL-10 binary archive (stl10_binary/*.bin)"
        )
    routes += [
        "--dataset=folder --data_dir=DIR",
        "--dataset=npz --data_dir=FILE.npz",
        "--dataset=digits (embedded, no download)",
    ]
    return "Offline routes: " + ", ".join(routes[:-1]) + ", or " + routes[-1] + "."


def _download_possible(name, timeout=_NETWORK_TIMEOUT):
    """Whether the download host of a tfds dataset (or the proxy for it) answers within `timeout` s."""
    url = urllib.parse.urlsplit(_TFDS[name].download_url)
    proxy = urllib.request.getproxies().get(url.scheme)
    if proxy and not urllib.request.proxy_bypass(url.hostname):
        target = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        host, port = target.hostname, target.port or 80
    else:
        host, port = url.hostname, url.port or (443 if url.scheme == "https" else 80)
    result = []

    def probe():  # in a thread: name resolution ignores socket timeouts
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def _load_tfds(name, split, data_dir, download):
    """`builder.as_dataset(split, as_supervised=True)`, preparing the data first only when possible.

    `as_dataset` is tried before anything else, so `tfds.testing.mock_data` (which patches it) works.
    """
    import tensorflow_datasets as tfds

    directory = _tfds_dir(data_dir)
    builder = tfds.builder(name, data_dir=directory)
    spec = _TFDS[name]
    if not builder.is_prepared():
        try:
            ds = builder.as_dataset(split=split, as_supervised=True)
        except AssertionError:  # tfds: "could not find data in ..."
            ds = None
        if ds is None:
            if not download:
                raise DataUnavailableError(
                    f"Dataset {name!r} is not prepared in {directory} (tfds) and downloading is off. "
                    + _offline_routes(name)
                )
            if not _download_possible(name):
                raise DataUnavailableError(
                    f"Dataset {name!r} is not available offline: looked in {directory} (tfds) and nothing "
                    "is prepared there, and downloads are not possible from this machine. "
                    + _offline_routes(name)
                )
            try:
                builder.download_and_prepare()
            except ModuleNotFoundError as error:
                raise ModuleNotFoundError(
                    f"tfds could not prepare {name!r}: {error}; install it with pip "
                    f"(tensorflow-datasets 4.9.x needs importlib_resources)."
                ) from error
            ds = builder.as_dataset(split=split, as_supervised=True)
    else:
        ds = builder.as_dataset(split=split, as_supervised=True)
    num_pretrain = spec.num_pretrain_images
    try:
        splits = builder.info.splits
        if splits:
            num_pretrain = sum(splits[s].num_examples for s in spec.pretrain_split.split("+"))
    except (KeyError, ValueError, TypeError):
        pass
    mean, std = NORMALIZATIONS[name]
    info = DatasetInfo(
        name=name,
        num_classes=int(builder.info.features["label"].num_classes),
        image_size=spec.image_size,
        mean=mean,
        std=std,
        num_pretrain_images=num_pretrain,
    )
    return ds, info
