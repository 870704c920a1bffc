"""Datasets for pre-training and evaluation (docs/DECISIONS.md §4.10): a registry of source kinds, the epoch
pipeline and the decoded-image cache.

| module | what |
|---|---|
| `registry` | `DATASETS`, `register`, `describe_datasets`, the `load_*` loaders |
| `types` | `DatasetInfo`, `DataUnavailableError`, `NORMALIZATIONS`, `resolve_normalization` |
| `source` | `DataSource` (what a source kind implements) and the route of files into the cache |
| `pipeline` | `epoch_pipeline`, `pretrain_pipeline` (global shuffle by index), batch-size rules |
| `tfds`, `npz`, `folder`, `stl10`, `digits` | one module per source kind |
| `cache`, `lock`, `progress` | the on-disk cache of decoded images, one builder per entry, status lines |

Names are imported lazily (PEP 562), so `import myol_keras.data` and the registry names (`DATASETS`,
`NORMALIZATIONS`, `describe_datasets`, `register`, ...) import no TensorFlow; the loaders and the
pipelines import it when they need it.

Example:
    from myol_keras import data

    images, info = data.load_pretrain_array("digits")
    ds = data.pretrain_pipeline(images, lambda batch: (batch, batch), batch_size=64)
"""

from myol_keras import lazy_exports

_EXPORTS = {
    # registry
    "DATASETS": "registry",
    "describe_datasets": "registry",
    "get_source": "registry",
    "register": "registry",
    "unregister": "registry",
    "load_labelled": "registry",
    "load_labelled_array": "registry",
    "load_pretrain_array": "registry",
    "load_pretrain_images": "registry",
    # shared types
    "DataSource": "source",
    "DataUnavailableError": "types",
    "DatasetInfo": "types",
    "NORMALIZATIONS": "types",
    "SPLITS": "types",
    "resolve_normalization": "types",
    "IMAGE_EXTENSIONS": "folder",
    # pipelines
    "batch_seed": "pipeline",
    "epoch_order": "pipeline",
    "epoch_pipeline": "pipeline",
    "epoch_seed": "pipeline",
    "pretrain_pipeline": "pipeline",
    "steps_in_epoch": "pipeline",
    "validate_batch_size": "pipeline",
    # cache
    "ImageCacheError": "cache",
}

_SUBMODULES = ("cache", "digits", "folder", "lock", "npz", "pipeline", "progress", "registry", "source", "stl10", "tfds",
               "types")

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports.attach(__name__, _EXPORTS, _SUBMODULES, globals())
