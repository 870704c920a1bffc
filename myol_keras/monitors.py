"""Is it learning? Online monitors of pre-training, as Keras callbacks.

The loss of a bootstrap method says little about the representation, and
`z_std` (the train step's collapse monitor) looks at the projection of the
augmented views only. These callbacks look at the online encoder
(`model.backbone`, the network that is exported and evaluated) in inference
mode every `every` epochs and after the last epoch, the way solo-learn and
LightlySSL run a kNN monitor beside the SSL loss:

* `KNNMonitor` -> `knn_top1`: the weighted kNN top-1 of
  `myol_keras.evaluation.knn` (the same function, so the same number as the
  evaluation on the same bank and queries): a fixed subsample of the labelled
  training images is the memory bank, a fixed subsample of the test split
  the queries.
* `HealthMonitor` -> `embed_std`, `rankme` on a fixed batch of images:
  `embedding_std` (lightly's `std_of_l2_normalized`: the per-dimension std of
  the L2-normalised features, averaged over dimensions; about 1/sqrt(d) for
  features spread over a d-dimensional sphere, 0 when collapsed) and
  `rankme` (Garrido et al. 2023: the exponential of the entropy of the
  normalised singular values, between 1 and min(n, d)). When the features
  collapse (`embed_std < 0.1 / sqrt(d)` or `rankme < 2`, both settings) it
  warns with a `CollapseWarning` (Python `warnings`, as the rest of the
  library). The measures are numpy functions in `myol_keras.evaluation.health`.

Both write their values into the epoch `logs`, so `EpochHistoryCSV`
(history.csv), `keras.callbacks.CSVLogger`, `TensorBoard` and the progress
bar show them: put them *before* those callbacks in the list. Epochs without
a measurement have no key (an empty cell in history.csv). Each measurement
also prints one line.

Resume: the subsamples are drawn from `seed` when the callback is built and
the epochs measured depend on the epoch number only (`is_due`: every
`every`-th epoch, 1-based, and the last), so a run resumed with
`fit(..., initial_epoch=k)` measures at the same epochs on the same images.
(Keras' `CSVLogger` fixes its columns at its first epoch; `EpochHistoryCSV` does not.)

Example:
```python
monitors = myol_keras.monitors.build_monitors(
    "knn,rank", image_size=32, mean=mean, std=std, every=5,
    bank_images=x_train, bank_labels=y_train, query_images=x_test, query_labels=y_test)
model.fit(ds, epochs=100, callbacks=[*monitors, EMATargetUpdate(0.996), EpochHistoryCSV("history.csv")])
```
"""

import hashlib
import math
import time
import warnings

import keras
import numpy as np

from myol_keras.evaluation import common
from myol_keras.evaluation import knn
from myol_keras.evaluation.health import RANKME_EPS  # noqa: F401 - re-exported with the measures
from myol_keras.evaluation.health import collapse_reasons
from myol_keras.evaluation.health import embedding_std
from myol_keras.evaluation.health import one_blas_thread
from myol_keras.evaluation.health import rankme

#: monitor names `build_monitors` accepts (the CLI's `--monitor`).
MONITORS = ("knn", "rank")


class CollapseWarning(UserWarning):
    """The encoder's features collapsed (see `HealthMonitor`)."""


def is_due(epoch, every, epochs=None):
    """Whether a monitor measures after `epoch` (0-based): every `every`-th epoch (1-based) and the last one."""
    return (epoch + 1) % every == 0 or (epochs is not None and epoch + 1 == epochs)


def fixed_subsample(count, size, seed, stream):
    """Sorted indices of a subsample of `size` out of `count` items, a pure function of (seed, stream).

    All `count` items, in order, when `size` is None or at least `count`.
    `stream` separates the draws of one seed (bank, queries, health batch).
    """
    if size is None or size >= count:
        return np.arange(count, dtype=np.int64)
    rng = np.random.default_rng([int(seed), int(stream)])
    return np.sort(rng.choice(count, size=int(size), replace=False)).astype(np.int64)


# --- the callbacks -------------------------------------------------------------


class FeatureCache:
    """Embeds uint8 images with an encoder in inference mode; shared by monitors, once per image set and epoch.

    Monitors given the same cache trace one embedding function per encoder
    and transform, and an image set two of them hold (the kNN queries, which
    `build_monitors` also makes the health batch) is embedded once per epoch.

    Example:
    ```python
    cache = FeatureCache()
    callbacks = [KNNMonitor(..., feature_cache=cache), HealthMonitor(..., feature_cache=cache)]
    ```
    """

    def __init__(self):
        self._functions = {}
        self._memo = {}
        self._stamp = None

    def features(self, encoder, images, *, image_size, mean, std, batch_size=256, stamp=None, fingerprint=None):
        """float32 `[n, d]` features of `images`; memoised under `fingerprint` while `stamp` (a hashable
        mark of the model state, e.g. `(epoch, optimizer step)`) stays the same, when both are given."""
        import tensorflow as tf

        from myol_keras.preprocessing import evaluation_transform

        if stamp != self._stamp:
            self._memo, self._stamp = {}, stamp
        transform = (id(encoder), image_size, tuple(mean), tuple(std))
        memo_key = (transform, fingerprint, batch_size) if stamp is not None and fingerprint is not None else None
        if memo_key in self._memo:
            return self._memo[memo_key]
        if transform not in self._functions:

            @tf.function(reduce_retracing=True)
            def embed(batch):
                x = evaluation_transform(batch, image_size, mean, std)
                return tf.cast(encoder(x, training=False), tf.float32)

            self._functions[transform] = (encoder, embed)  # the encoder kept alive: its id stays unique
        embed = self._functions[transform][1]
        out = np.concatenate([embed(images[i:i + batch_size]).numpy() for i in range(0, len(images), batch_size)])
        if memo_key is not None:
            self._memo[memo_key] = out
        return out


def fingerprint(images):
    """A content hash of an image array (which monitors hold the same images)."""
    images = np.ascontiguousarray(images)
    return hashlib.blake2b(images.tobytes() + repr((images.shape, images.dtype.str)).encode(), digest_size=16).hexdigest()


class EncoderMonitor(keras.callbacks.Callback):
    """Base of the monitors: embeds uint8 images with the model's encoder in inference mode, on schedule.

    A subclass implements `measure(epoch) -> dict` (the values for the logs)
    and `describe(values) -> str` (the printed line).

    Args:
        image_size: the training size; images go through
            `preprocessing.evaluation_transform` (the export's transform).
        mean: normalisation mean (3 floats).
        std: normalisation std (3 floats).
        every: measure every N epochs (and after the last).
        batch_size: images per forward pass.
        encoder_attribute: the model attribute holding the encoder (`backbone`: the online one).
        feature_cache: a `FeatureCache` shared with other monitors (default: one of its own).
        verbose: print one line per measurement.
    """

    def __init__(self, *, image_size, mean, std, every=1, batch_size=256, encoder_attribute="backbone",
                 feature_cache=None, verbose=True):
        super().__init__()
        from myol_keras import preprocessing

        common.check_positive_ints(every=every, batch_size=batch_size)
        self.image_size = preprocessing.check_image_size(image_size)
        self.mean, self.std = preprocessing.check_mean_std(mean, std)
        self.every = int(every)
        self.batch_size = int(batch_size)
        self.encoder_attribute = encoder_attribute
        self.feature_cache = feature_cache if feature_cache is not None else FeatureCache()
        self.verbose = bool(verbose)
        self.seconds = []  # wall time of each measurement

    def encoder(self):
        """The encoder the monitor measures."""
        encoder = getattr(self.model, self.encoder_attribute, None)
        if encoder is None:
            raise ValueError(f"{type(self).__name__} needs a model with an encoder attribute "
                             f"`{self.encoder_attribute}`. Received: {type(self.model).__name__}")
        return encoder

    def features(self, images, epoch=None, key=None):
        """float32 `[n, d]` features of uint8 `images` (inference mode).

        With `epoch` and `key` (a `fingerprint` of the image set) the features
        are shared through the `feature_cache` with the other monitors measuring
        after the same epoch and optimizer step.
        """
        stamp = None
        if epoch is not None:
            optimizer = getattr(self.model, "optimizer", None)
            step = int(optimizer.iterations.numpy()) if optimizer is not None else -1
            stamp = (int(epoch), step)
        return self.feature_cache.features(self.encoder(), images, image_size=self.image_size, mean=self.mean,
                                           std=self.std, batch_size=self.batch_size, stamp=stamp, fingerprint=key)

    def measure(self, epoch=None):
        raise NotImplementedError

    def describe(self, values):
        raise NotImplementedError

    def on_epoch_end(self, epoch, logs=None):
        epochs = (self.params or {}).get("epochs")
        if not is_due(epoch, self.every, epochs):
            return
        start = time.perf_counter()
        values = self.measure(epoch)
        seconds = time.perf_counter() - start
        self.seconds.append(seconds)
        if logs is not None:
            logs.update(values)
        if self.verbose:
            total = f"/{epochs}" if epochs else ""
            print(f"monitor: epoch {epoch + 1}{total}: {self.describe(values)} ({seconds:.1f} s)", flush=True)
        self.after_measure(epoch, values)

    def after_measure(self, epoch, values):
        """Hook after a measurement (the health monitor warns here)."""

class KNNMonitor(EncoderMonitor):
    """kNN top-1 of the online encoder on a labelled split during pre-training, logged as `knn_top1`.

    A fixed subsample of `bank_size` labelled training images is the memory
    bank and a fixed subsample of `query_size` test images the queries (both
    drawn from `seed` once, so a resumed run uses the same ones). When due,
    the encoder embeds both in inference mode and
    `myol_keras.evaluation.knn.knn_accuracy` votes (weighted kNN, cosine
    similarity, weight exp(s / T)), so the value equals what the kNN
    evaluation gives for the same encoder, images and settings.

    Args:
        bank_images: uint8 images `[N, H, W, 3]` the bank is drawn from (labelled training split).
        bank_labels: their int labels.
        query_images: uint8 images the queries are drawn from (the test split).
        query_labels: their labels.
        image_size, mean, std, every, batch_size, encoder_attribute, feature_cache, verbose: as for
            `EncoderMonitor`.
        k: neighbours (200, the evaluation's; capped at the bank size).
        temperature: vote temperature (0.1).
        bank_size: bank images (None: all).
        query_size: query images (None: all).
        seed: seed of the two subsamples.
        num_classes: classes (default: the largest label + 1).

    Example:
    ```python
    monitor = KNNMonitor(x_train, y_train, x_test, y_test, image_size=32, mean=mean, std=std, every=5)
    model.fit(ds, epochs=100, callbacks=[monitor, EMATargetUpdate(0.996)])
    ```
    """

    def __init__(self, bank_images, bank_labels, query_images, query_labels, *, image_size, mean, std,
                 k=200, temperature=0.1, every=1, bank_size=512, query_size=256, seed=0, batch_size=256,
                 encoder_attribute="backbone", num_classes=None, feature_cache=None, verbose=True):
        super().__init__(image_size=image_size, mean=mean, std=std, every=every, batch_size=batch_size,
                         encoder_attribute=encoder_attribute, feature_cache=feature_cache, verbose=verbose)
        common.check_positive_ints(k=k)
        common.check_positive(temperature=temperature)
        for name, size in (("bank_size", bank_size), ("query_size", query_size)):
            if size is not None:
                common.check_positive_ints(**{name: size})
        bank_labels = _labels(bank_images, bank_labels, "bank")
        query_labels = _labels(query_images, query_labels, "query")
        self.k = int(k)
        self.temperature = float(temperature)
        self.bank_size = bank_size
        self.query_size = query_size
        self.seed = int(seed)
        self.num_classes = int(num_classes or max(bank_labels.max(), query_labels.max()) + 1)
        self.bank_index = fixed_subsample(len(bank_labels), bank_size, seed, stream=1)
        self.query_index = fixed_subsample(len(query_labels), query_size, seed, stream=2)
        # Only the subsamples are kept (a copy), not the arrays they come from.
        self.bank_images = np.asarray(bank_images)[self.bank_index]
        self.bank_labels = bank_labels[self.bank_index]
        self.query_images = np.asarray(query_images)[self.query_index]
        self.query_labels = query_labels[self.query_index]
        self._keys = (fingerprint(self.bank_images), fingerprint(self.query_images))

    def measure(self, epoch=None):
        """`{"knn_top1": ...}` of the model's encoder now (`epoch`: share features through the cache)."""
        bank = self.features(self.bank_images, epoch, self._keys[0])
        queries = self.features(self.query_images, epoch, self._keys[1])
        if not (np.all(np.isfinite(bank)) and np.all(np.isfinite(queries))):
            return {"knn_top1": float("nan")}  # a diverged encoder: NaN, not a vote among NaNs
        with one_blas_thread():
            acc = knn.knn_accuracy(bank, self.bank_labels, queries, self.query_labels, self.num_classes, self.k,
                                   self.temperature)
        return {"knn_top1": acc["top1"]}

    def describe(self, values):
        return (f"knn_top1 {values['knn_top1']:.4f} (k={min(self.k, len(self.bank_labels))}, T={self.temperature:g}, "
                f"{len(self.bank_labels)} bank / {len(self.query_labels)} query images)")


class HealthMonitor(EncoderMonitor):
    """Representation health on a fixed batch: `embed_std` and `rankme`, with a collapse warning.

    When due, the encoder embeds the same `sample_size` images (drawn from
    `seed` once) in inference mode; `embedding_std` and `rankme` of those
    features go into the logs. If `embed_std < std_factor / sqrt(d)` or
    `rankme < min_rank` (a constant or one-dimensional representation) it
    warns with a `CollapseWarning` naming the epoch and the threshold crossed.
    RankMe is at most min(n, d): with fewer images than feature dimensions it
    measures the rank of the sample.

    Args:
        images: uint8 images `[N, H, W, 3]` the batch is drawn from (labels not needed).
        image_size, mean, std, every, batch_size, encoder_attribute, feature_cache, verbose: as for
            `EncoderMonitor`.
        sample_size: images in the fixed batch (None: all).
        seed: seed of the subsample.
        std_factor: collapse when `embed_std < std_factor / sqrt(d)` (0.1).
        min_rank: collapse when `rankme < min_rank` (2).

    Example:
    ```python
    health = HealthMonitor(x_train, image_size=32, mean=mean, std=std, every=1)
    model.fit(ds, epochs=100, callbacks=[health, EMATargetUpdate(0.996)])
    ```
    """

    def __init__(self, images, *, image_size, mean, std, every=1, sample_size=256, seed=0, batch_size=256,
                 encoder_attribute="backbone", std_factor=0.1, min_rank=2.0, feature_cache=None, verbose=True):
        super().__init__(image_size=image_size, mean=mean, std=std, every=every, batch_size=batch_size,
                         encoder_attribute=encoder_attribute, feature_cache=feature_cache, verbose=verbose)
        if sample_size is not None:
            common.check_positive_ints(sample_size=sample_size)
        common.check_positive(std_factor=std_factor, min_rank=min_rank)
        images = np.asarray(images)
        if images.ndim != 4 or len(images) < 2:
            raise ValueError(f"Expected at least 2 images shaped [N, H, W, C]. Received: shape={images.shape}")
        self.sample_size = sample_size
        self.seed = int(seed)
        self.std_factor = float(std_factor)
        self.min_rank = float(min_rank)
        self.index = fixed_subsample(len(images), sample_size, seed, stream=3)
        self.images = images[self.index]
        self._key = fingerprint(self.images)
        self.dim = None

    def measure(self, epoch=None):
        """`{"embed_std", "rankme"}` of the model's encoder now (`epoch`: share features through the cache)."""
        features = self.features(self.images, epoch, self._key)
        self.dim = features.shape[1]
        if not np.all(np.isfinite(features)):
            return {"embed_std": float("nan"), "rankme": float("nan")}  # diverged: no SVD of NaNs
        with one_blas_thread():
            return {"embed_std": embedding_std(features), "rankme": rankme(features)}

    def describe(self, values):
        healthy = 1.0 / math.sqrt(self.dim)
        return (f"embed_std {values['embed_std']:.4f} (1/sqrt({self.dim}) = {healthy:.4f}), "
                f"rankme {values['rankme']:.1f} of at most {min(self.dim, len(self.images))} "
                f"({len(self.images)} images)")

    def after_measure(self, epoch, values):
        reasons = collapse_reasons(values["embed_std"], values["rankme"], self.dim, self.std_factor, self.min_rank)
        if reasons:
            warnings.warn(f"the representation collapsed at epoch {epoch + 1}: {'; '.join(reasons)}. "
                          "Check the learning rate, the EMA and the augmentation.", CollapseWarning, stacklevel=2)


def _labels(images, labels, name):
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) != len(images) or len(labels) == 0:
        raise ValueError(f"Expected one int label per {name} image. Received: {len(images)} images, "
                         f"labels of shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0:
        raise ValueError(f"Expected {name} labels to be ints >= 0. Received: dtype {labels.dtype}, "
                         f"min {labels.min()}")
    return labels.astype(np.int64)


def parse_monitors(names):
    """`"knn,rank"` (or a list) -> a tuple of monitor names; raises `ValueError` on an unknown one."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",")]
    names = tuple(n for n in names if n)
    unknown = [n for n in names if n not in MONITORS]
    if unknown:
        raise ValueError(f"unknown monitor {unknown[0]!r}; choose from: {', '.join(MONITORS)}")
    return tuple(dict.fromkeys(names))


def build_monitors(names, *, image_size, mean, std, every=1, bank_images=None, bank_labels=None,
                   query_images=None, query_labels=None, health_images=None, k=200, temperature=0.1,
                   bank_size=512, query_size=256, health_size=256, seed=0, batch_size=256,
                   encoder_attribute="backbone", verbose=True):
    """The monitor callbacks named in `names` (`"knn"`, `"rank"`), in that order, sharing one `FeatureCache`.

    With both monitors and no `health_images`, the health batch is the kNN
    monitor's query subsample, embedded once per measurement for both.

    Args:
        names: `"knn,rank"`, a list of names, or empty (no monitor).
        image_size, mean, std: the training size and normalisation (the export's transform).
        every: measure every N epochs (and after the last).
        bank_images, bank_labels: labelled training images (uint8) and labels (`knn`).
        query_images, query_labels: test images and labels (`knn`).
        health_images: images the health batch is drawn from (`rank`; default: the
            kNN queries, else the query images, else the bank images; labels not needed).
        k, temperature, bank_size, query_size: `KNNMonitor`.
        health_size: images in the health batch.
        seed: seed of the fixed subsamples (the run's seed).
        batch_size, encoder_attribute, verbose: as for `EncoderMonitor`.

    Returns:
        a list of `keras.callbacks.Callback`; put them before the history, TensorBoard and backup callbacks.

    Raises:
        ValueError: an unknown name, `knn` without labelled bank and queries, `rank` without images.

    Example:
    ```python
    callbacks = build_monitors("knn,rank", image_size=32, mean=mean, std=std, every=5, bank_images=x_tr,
                               bank_labels=y_tr, query_images=x_te, query_labels=y_te, seed=0)
    ```
    """
    names = parse_monitors(names)
    shared = dict(image_size=image_size, mean=mean, std=std, every=every, batch_size=batch_size,
                  encoder_attribute=encoder_attribute, feature_cache=FeatureCache(), verbose=verbose)
    callbacks = []
    knn_monitor = None
    if "knn" in names:
        if any(a is None for a in (bank_images, bank_labels, query_images, query_labels)):
            raise ValueError("the knn monitor needs labelled images: pass bank_images, bank_labels, "
                             "query_images and query_labels (a dataset with labels)")
        knn_monitor = KNNMonitor(bank_images, bank_labels, query_images, query_labels, k=k, temperature=temperature,
                                 bank_size=bank_size, query_size=query_size, seed=seed, **shared)
    for name in names:
        if name == "knn":
            callbacks.append(knn_monitor)
            continue
        images = health_images
        if images is None and knn_monitor is not None:
            images = knn_monitor.query_images
        if images is None:
            images = query_images if query_images is not None else bank_images
        if images is None:
            raise ValueError("the rank monitor needs images: pass health_images (or query/bank images)")
        callbacks.append(HealthMonitor(images, sample_size=health_size, seed=seed, **shared))
    return callbacks


def for_run(config, plan):
    """The monitor callbacks a run's settings ask for (`config.monitor`), or [] (`none`).

    Args:
        config: the run's `PretrainConfig` (`monitor`, `monitor_every`, `monitor_knn_k`, the data settings).
        plan: its `training.RunPlan` (image size, normalisation, the pre-training images).

    `auto` is knn,rank when the data set has labels (a train and a test split), else rank. An explicit
    `knn` on data without labels raises ValueError (the run turns it into one line before writing).

    Example:
    ```python
    callbacks = for_run(config, training.plan_run(config))
    ```
    """
    from myol_keras.evaluation import features

    requested = config.monitor.strip()
    if requested == "none":
        return []
    names = ["knn", "rank"] if requested == "auto" else list(parse_monitors(requested))
    bank = queries = None
    if "knn" in names:
        try:
            bank = features.load_labelled_arrays(config.dataset, "train", config.data_dir, config.download)
            queries = features.load_labelled_arrays(config.dataset, "test", config.data_dir, config.download)
        except (ValueError, FileNotFoundError) as e:
            if requested != "auto":
                raise ValueError(f"--monitor={requested}: the kNN monitor needs labelled train and test images: "
                                 f"{e}") from None
            names.remove("knn")
    return build_monitors(
        names, image_size=plan.image_size, mean=plan.mean, std=plan.std, every=config.monitor_every,
        bank_images=bank[0] if bank else None, bank_labels=bank[1] if bank else None,
        query_images=queries[0] if queries else None, query_labels=queries[1] if queries else None,
        health_images=None if bank else plan.images, k=config.monitor_knn_k, seed=config.seed,
        verbose=config.verbose > 0)
