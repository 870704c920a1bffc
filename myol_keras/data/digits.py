"""The embedded source kind: scikit-learn's 8×8 digits at 32 px, so the quick start runs offline.

Example:
    images, info = DigitsSource().pretrain_array(None)  # 1437 images, 32 px
"""

from __future__ import annotations

import numpy as np

from myol_keras.data import source
from myol_keras.data import types
from myol_keras.data.types import DatasetInfo


class DigitsSource(source.DataSource):
    """scikit-learn's 8×8 digits at 32 px RGB uint8, split 80/20 (stratified, seed 0), held in memory.

    Example:
        x_test, y_test, info = DigitsSource().labelled_array("test", None)
    """

    name = "digits"
    summary = "embedded, offline"

    def pretrain_array(self, data_dir, *, download=True, image_size=None, cache_dir=None):
        (x_train, _), _, info = _digits()
        return x_train, info

    def labelled_array(self, split, data_dir, *, download=True, image_size=None, cache_dir=None):
        train, test, info = _digits()
        x, y = train if split == "train" else test
        return x, y, info


_DIGITS_CACHE = {}


def _digits():
    """scikit-learn's 8×8 digits at 32 px RGB uint8, split 80/20 (stratified, seed 0)."""
    if "data" not in _DIGITS_CACHE:
        from PIL import Image
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        digits = load_digits()
        small = np.round(digits.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
        big = np.stack(
            [np.asarray(Image.fromarray(im, mode="L").resize((32, 32), Image.BILINEAR)) for im in small]
        )
        images = np.repeat(big[..., None], 3, axis=-1)
        labels = digits.target.astype(np.int64)
        x_train, x_test, y_train, y_test = train_test_split(
            images, labels, test_size=types.TEST_FRACTION, random_state=0, stratify=labels
        )
        for array in (x_train, x_test, y_train, y_test):
            array.setflags(write=False)
        mean, std = source.image_stats(x_train)
        info = DatasetInfo("digits", 10, 32, mean, std, len(x_train))
        _DIGITS_CACHE["data"] = ((x_train, y_train), (x_test, y_test), info)
    return _DIGITS_CACHE["data"]
