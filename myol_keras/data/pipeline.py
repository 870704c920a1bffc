"""The pre-training input pipelines (docs/DECISIONS.md §4.10): shuffle indices, not images.

`epoch_pipeline` (the CLI's) and `pretrain_pipeline` shuffle indices, not images: every epoch is a full
permutation of the data set (for `epoch_pipeline` a pure function of (seed, epoch), so a resumed run
sees the batches it would have seen), and each batch is gathered from the array by index. Also here:
the batch-size rules (`validate_batch_size`, `steps_in_epoch`) and the conversions between image arrays
and `tf.data` that the sources use (`dataset_from_arrays`, `materialise`).

Example:
    images, info = load_pretrain_array("digits")
    ds = pretrain_pipeline(images, lambda batch: (batch, batch), batch_size=64)
"""

from __future__ import annotations

import itertools

import numpy as np
import tensorflow as tf

from myol_keras.data import types

_IN_MEMORY_BYTES = 256 * 2**20  # arrays above this are streamed in chunks instead of copied into a tensor


def pretrain_pipeline(
    images, view_fn, batch_size, *, drop_remainder=True, shuffle_buffer=0, seed=None, cache=True
):
    """shuffle → batch → map(view_fn) → prefetch, reshuffled every epoch; for `model.fit(ds, epochs=...)`.

    Every epoch is a full random permutation of the images (indices are shuffled, then each batch is
    gathered from the array). Not resumable: `epoch_pipeline` is the deterministic stream the CLI uses.

    Args:
        images: `uint8 [N, H, W, 3]` images (an array, e.g. from `load_pretrain_array`, or a
            `tf.data.Dataset` of un-batched images, read into memory once).
        view_fn: maps a `uint8` batch `(B, H, W, 3)` to a tuple of views; runs with AUTOTUNE parallelism.
        batch_size: images per batch (at least 2: BatchNorm needs two samples).
        drop_remainder: drop the last partial batch (the default; a batch of one breaks BatchNorm).
        shuffle_buffer: 0 (default): a full permutation every epoch. N > 1: instead, the previous
            pipeline's `tf.data` shuffle buffer of N images over a dataset in source order (local,
            class-clustered on class-sorted folders; `cache` keeps the images in memory). 1: no shuffle.
        seed: shuffle seed; the order still differs between epochs.
        cache: with `shuffle_buffer > 0`, cache the decoded images in memory after the first epoch.

    Example:
        ds = pretrain_pipeline(images, recipe.two_views, batch_size=256, seed=0)
    """
    if shuffle_buffer:
        ds = images if isinstance(images, tf.data.Dataset) else dataset_from_arrays(as_image_array(images))
        num_images = int(ds.cardinality())
        validate_batch_size(batch_size, num_images if num_images >= 0 else None, drop_remainder)
        ds = ds.cache() if cache else ds
        if shuffle_buffer > 1:
            ds = ds.shuffle(int(shuffle_buffer), seed=seed, reshuffle_each_iteration=True)
        ds = ds.batch(int(batch_size), drop_remainder=drop_remainder)
        ds = ds.map(view_fn, num_parallel_calls=tf.data.AUTOTUNE)
        return ds.prefetch(tf.data.AUTOTUNE)
    array = as_image_array(images)
    validate_batch_size(batch_size, len(array), drop_remainder)
    gather = gather_images(array)
    ds = tf.data.Dataset.range(len(array)).shuffle(len(array), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(int(batch_size), drop_remainder=drop_remainder)
    ds = ds.map(lambda indices: view_fn(gather(indices)), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def epoch_seed(seed, epoch):
    """The stateless `[2]` int64 seed of one epoch: a pure function of (seed, epoch)."""
    base = tf.stack([tf.cast(seed, tf.int64), tf.constant(0x5EED, tf.int64)])
    return tf.random.experimental.stateless_fold_in(base, tf.cast(epoch, tf.int64))


def batch_seed(seed, epoch, index):
    """The stateless augmentation seed of batch `index` of `epoch`."""
    return tf.random.experimental.stateless_fold_in(epoch_seed(seed, epoch), tf.cast(index, tf.int64))


def epoch_order(seed, epoch, num_images, stream=0):
    """The permutation of `range(num_images)` that epoch `epoch` visits: a pure function of its arguments.

    Args:
        seed: the run's integer seed.
        epoch: the epoch.
        num_images: the size of the data set.
        stream: 0 for the order of the images, 1 for their representation-mixing counterparts
            (an independent permutation).

    Returns:
        An `int64 [num_images]` tensor.
    """
    key = tf.random.experimental.stateless_fold_in(epoch_seed(seed, epoch), tf.cast(stream, tf.int64))
    return tf.random.experimental.stateless_shuffle(tf.range(num_images, dtype=tf.int64), seed=key)


def epoch_pipeline(
    images,
    view_fn,
    batch_size,
    *,
    seed=0,
    start_epoch=0,
    steps_per_epoch=None,
    drop_remainder=True,
    shuffle_buffer=0,
    counterparts=False,
):
    """A resumable, deterministic pre-training stream: epochs `start_epoch, start_epoch + 1, ...`.

    Every epoch is a full permutation of the data set (`epoch_order`), drawn
    statelessly from `(seed, epoch)` instead of from stateful generators, which
    Keras does not checkpoint. The permutation shuffles indices, not images
    (8 MB for a million images): it is cut into batches of indices, each batch
    is gathered from the image array (reading a memory-mapped cache in sorted
    order, returned in permutation order), and batch `i` of epoch `e` is
    augmented with `view_fn(batch, seed=batch_seed(seed, e, i))`. A run resumed
    at epoch `e` therefore sees exactly the batches an uninterrupted run would
    have seen. The stream is infinite; give `fit` a `steps_per_epoch`.

    Args:
        images: `uint8 [N, H, W, 3]` images: an array (`load_pretrain_array`; an
            `np.memmap` is read batch by batch) or a `tf.data.Dataset` of
            un-batched images (read into memory once).
        view_fn: `(batch, seed) -> tuple of views` (`augment.make_view_fn`);
            with `counterparts=True`, `(x, r, seed)`. None: no augmentation
            here; each element is `{"images": batch (or (x, r)), "seed":
            [batch, 2]}` (the batch seed on every row, so a distributed
            dataset can split it) for a model that augments on the device
            (`BootstrapMethod.set_device_augmentation`).
        batch_size: images per batch.
        seed: the run's integer seed.
        start_epoch: the first epoch of the stream (the resumed epoch).
        steps_per_epoch: batches per epoch (default: one pass, `len // batch_size`
            with `drop_remainder`, else rounded up); a smaller cap takes the
            first batches of each epoch's permutation.
        drop_remainder: drop the last partial batch of each epoch.
        shuffle_buffer: 0 (default): the global permutation above. N > 1: the
            previous pipeline instead, a `tf.data` shuffle buffer of N images
            over the images in source order, seeded from `(seed, epoch)` (local:
            class-clustered batches on class-sorted folders, and every image
            held in memory); kept to resume runs started with it. 1: source order.
        counterparts: pair every image with a counterpart from an independent
            permutation of the data set (representation mixing, docs/METHODS.md §2.6).

    Example:
        ds = epoch_pipeline(images, augment.make_view_fn([r, r]), 256, seed=0, start_epoch=12)
    """
    if shuffle_buffer:
        batches, load = _buffered_epochs(images, batch_size, seed, start_epoch, steps_per_epoch, drop_remainder,
                                         shuffle_buffer, counterparts)
    else:
        batches, load = _permuted_epochs(images, batch_size, seed, start_epoch, steps_per_epoch, drop_remainder,
                                         counterparts)

    def views(epoch, index, batch):
        batch = load(batch)
        batch_key = batch_seed(seed, epoch, index)
        if view_fn is None:
            rows = tf.shape(tf.nest.flatten(batch)[0])[0]
            return {"images": batch, "seed": tf.tile(batch_key[None], [rows, 1])}
        if isinstance(batch, tuple):
            return view_fn(*batch, seed=batch_key)
        return view_fn(batch, seed=batch_key)

    ds = batches.map(views, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


def _permuted_epochs(images, batch_size, seed, start_epoch, steps_per_epoch, drop_remainder, counterparts):
    """`(epoch, index, batch of indices)` elements, each epoch a full permutation, and the gather."""
    array = as_image_array(images)
    num_images = len(array)
    steps = steps_in_epoch(num_images, batch_size, drop_remainder, steps_per_epoch)
    gather = gather_images(array)

    def one_epoch(epoch):
        ds = tf.data.Dataset.from_tensor_slices(epoch_order(seed, epoch, num_images))
        if counterparts:
            others = tf.data.Dataset.from_tensor_slices(epoch_order(seed, epoch, num_images, stream=1))
            ds = tf.data.Dataset.zip((ds, others))
        ds = ds.batch(int(batch_size), drop_remainder=drop_remainder).take(steps)
        return ds.enumerate().map(lambda index, batch: (epoch, index, batch))

    def load(indices):
        if counterparts:
            return gather(indices[0]), gather(indices[1])
        return gather(indices)

    return tf.data.Dataset.range(int(start_epoch), 2**62).flat_map(one_epoch), load


def _buffered_epochs(images, batch_size, seed, start_epoch, steps_per_epoch, drop_remainder, shuffle_buffer,
                     counterparts):
    """`(epoch, index, batch of images)` elements of the previous pipeline (a shuffle buffer of images per
    epoch), and the identity."""
    source = images if isinstance(images, tf.data.Dataset) else dataset_from_arrays(as_image_array(images))
    num_images = int(source.cardinality())
    if num_images < 0:
        num_images = sum(1 for _ in source)
    steps = steps_in_epoch(num_images, batch_size, drop_remainder, steps_per_epoch)
    source = source.cache()
    shuffle = shuffle_buffer > 1

    def shuffled(op_seed):
        if not shuffle:
            return source
        return source.shuffle(int(shuffle_buffer), seed=op_seed, reshuffle_each_iteration=False)

    def one_epoch(epoch):
        # The shuffle seeds are tensors derived from (seed, epoch). Give this
        # function graph its own fixed non-zero graph seed, so the op seeds do
        # not combine with (and, for a global seed of 0, trip over) whatever
        # global seed the caller set: the order depends on (seed, epoch) only.
        tf.compat.v1.get_default_graph().seed = 0x5EED
        order_seed, counterpart_seed = tf.unstack(epoch_seed(seed, epoch))
        ds = shuffled(order_seed)
        if counterparts:
            others = source.shuffle(
                max(int(shuffle_buffer), 2), seed=counterpart_seed, reshuffle_each_iteration=False
            ).repeat()
            ds = tf.data.Dataset.zip((ds, others))
        ds = ds.batch(int(batch_size), drop_remainder=drop_remainder).take(steps)
        return ds.enumerate().map(lambda index, batch: (epoch, index, batch))

    return tf.data.Dataset.range(int(start_epoch), 2**62).flat_map(one_epoch), lambda batch: batch


def validate_batch_size(batch_size, num_images, drop_remainder):
    """Raise `ValueError` for a batch size that BatchNorm training cannot use.

    Args:
        batch_size: images per batch; must be an integer ≥ 2.
        num_images: images per epoch, or `None` when unknown (then only `batch_size` is checked).
        drop_remainder: whether the last partial batch is dropped.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 2:
        raise ValueError(
            f"batch_size must be an integer >= 2 (BatchNorm needs at least two images per batch). "
            f"Received: batch_size={batch_size!r}"
        )
    if num_images is None:
        return
    if drop_remainder and num_images < batch_size:
        raise ValueError(
            f"batch_size={batch_size} is larger than the dataset ({num_images} images), so with "
            f"drop_remainder every batch is dropped; use --batch_size <= {num_images} or --nodrop_remainder."
        )
    if not drop_remainder and num_images % batch_size == 1:
        raise ValueError(
            f"With {num_images} images and batch_size={batch_size} the last batch holds one image, "
            "which breaks BatchNorm; use --drop_remainder or another batch size."
        )


def steps_in_epoch(num_images, batch_size, drop_remainder=True, cap=None):
    """Optimizer steps in one epoch: one pass over `num_images`, or `cap` if it is smaller.

    Validates the batch size first (`validate_batch_size`); the one place the
    number of steps per epoch is decided (the pipeline and the schedules agree).

    Args:
        num_images: images per epoch.
        batch_size: images per batch.
        drop_remainder: whether the last partial batch is dropped.
        cap: at most this many steps (None or 0: a full pass).

    Example:
    >>> steps_in_epoch(4660, 128), steps_in_epoch(4660, 128, drop_remainder=False), steps_in_epoch(4660, 128, cap=10)
    (36, 37, 10)
    """
    validate_batch_size(batch_size, num_images, drop_remainder)
    full = num_images // batch_size if drop_remainder else -(-num_images // batch_size)
    if cap is not None and cap < 0:
        raise ValueError(f"steps_per_epoch={cap} must be 0 (a full pass) or a positive cap.")
    return min(full, int(cap)) if cap else full


def dataset_from_arrays(images, labels=None):
    """A tf.data.Dataset over `images` (and int64 `labels`), streamed in chunks when large.

    Small in-memory arrays become one tensor; memory-mapped or large arrays are read `CHUNK` images
    at a time, so they are never copied whole.
    """
    n = len(images)
    if labels is not None:
        labels = np.asarray(labels, dtype=np.int64)
    if not (isinstance(images, np.memmap) or images.nbytes > _IN_MEMORY_BYTES):
        return tf.data.Dataset.from_tensor_slices(images if labels is None else (images, labels))

    def chunks():
        for start in range(0, n, types.CHUNK):
            x = np.ascontiguousarray(images[start : start + types.CHUNK], dtype=np.uint8)
            yield x if labels is None else (x, labels[start : start + types.CHUNK])

    image_spec = tf.TensorSpec((None, *images.shape[1:]), tf.uint8)
    spec = image_spec if labels is None else (image_spec, tf.TensorSpec((None,), tf.int64))
    ds = tf.data.Dataset.from_generator(chunks, output_signature=spec).unbatch()
    return ds.apply(tf.data.experimental.assert_cardinality(n))


def as_image_array(images):
    """An indexable array of un-batched images: arrays as given (a memmap stays mapped), a Dataset read once."""
    if isinstance(images, tf.data.Dataset):
        images = materialise(images)
    elif tf.is_tensor(images):
        images = images.numpy()
    elif not isinstance(images, np.ndarray):
        images = np.asarray(images)
    if images.ndim < 2 or len(images) == 0:
        raise ValueError(f"images must be a non-empty array of images [N, H, W, C]. Received shape {images.shape}")
    return images


def materialise(ds):
    """All elements of a finite dataset of images (or of tuples) as NumPy arrays, read `CHUNK` at a time.

    With a known cardinality the arrays are allocated once and filled (no second copy at the end).
    """
    count = int(ds.cardinality())
    batches = ds.batch(types.CHUNK).as_numpy_iterator()
    first = next(batches, None)
    if first is None:
        raise ValueError("the dataset holds no images")
    single = not isinstance(first, tuple)
    first = (first,) if single else first
    if count > 0:
        out = tuple(np.empty((count, *part.shape[1:]), part.dtype) for part in first)
        start = 0
        for batch in itertools.chain([first], ((b,) if single else b for b in batches)):
            for array, part in zip(out, batch):
                array[start : start + len(part)] = part
            start += len(batch[0])
        out = tuple(array[:start] for array in out)
    else:
        parts = [first] + [(b,) if single else b for b in batches]
        out = tuple(np.concatenate([p[i] for p in parts]) for i in range(len(first)))
    return out[0] if single else out


def gather_images(array):
    """`indices [B] -> images [B, ...]` in tf.data: a NumPy gather from `array` (in memory or memory-mapped).

    The rows are read in sorted index order (sequential reads from a memory-mapped cache) and returned in
    the order of `indices`.
    """
    shape = tuple(array.shape[1:])

    def take(indices):
        order = np.argsort(indices, kind="stable")
        rows = np.asarray(array[indices[order]])  # sorted reads
        inverse = np.empty_like(order)
        inverse[order] = np.arange(len(order))
        return rows[inverse]  # a gather: several times faster than scattering into a new array

    def gather(indices):
        batch = tf.numpy_function(take, [indices], tf.as_dtype(array.dtype), stateful=False)
        batch.set_shape(indices.shape.concatenate(shape))
        return batch

    return gather
