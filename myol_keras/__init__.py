"""myol_keras: BYOL and the mixing family (MYOL, ...) for small images, in Keras 3.

Public names are imported lazily, so `import myol_keras` does not import
TensorFlow until a name is used. (`python -m myol_keras.main` imports it once
at start-up: its flags are generated from `PretrainConfig`, whose choices come
from the method and dataset registries.)

Example (one call, the command line's run directory):
```python
import myol_keras

path = myol_keras.pretrain(myol_keras.PretrainConfig(method="myol", dataset="digits", epochs=10, width=16))
```

Example (your own `fit`):
```python
import keras
import myol_keras

backbone = myol_keras.ResNet(depth=18, stem="cifar", width=64)
model = myol_keras.MYOL(backbone, alpha=2.0, gamma=1.0, weight_decay=1e-4)
model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
model.fit(two_view_dataset, epochs=100, callbacks=[myol_keras.EMATargetUpdate(0.996)])
```
"""

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    # methods
    "BootstrapMethod": "myol_keras.methods",
    "BYOL": "myol_keras.methods",
    "MYOL": "myol_keras.methods",
    "METHODS": "myol_keras.methods",
    "get_method": "myol_keras.methods",
    # networks
    "ResNet": "myol_keras.backbones",
    "resnet18": "myol_keras.backbones",
    "resnet34": "myol_keras.backbones",
    "resnet50": "myol_keras.backbones",
    "minimum_image_size": "myol_keras.backbones",
    "MLPHead": "myol_keras.heads",
    "projection_head": "myol_keras.heads",
    "prediction_head": "myol_keras.heads",
    # augmentation
    "RandomResizedCrop": "myol_keras.augment",
    "RandomApply": "myol_keras.augment",
    "ColorJitter": "myol_keras.augment",
    "Normalize": "myol_keras.augment",
    "ToFloat": "myol_keras.augment",
    "myol_view_recipe": "myol_keras.augment",
    "eval_recipe": "myol_keras.augment",
    "EvaluationTransform": "myol_keras.augment",
    "evaluation_transform": "myol_keras.preprocessing",
    "make_view_fn": "myol_keras.augment",
    # data
    "load_pretrain_images": "myol_keras.data",
    "load_pretrain_array": "myol_keras.data",
    "load_labelled": "myol_keras.data",
    "load_labelled_array": "myol_keras.data",
    "pretrain_pipeline": "myol_keras.data",
    "ImageCacheError": "myol_keras.data",
    "DatasetInfo": "myol_keras.data",
    "DataUnavailableError": "myol_keras.data",
    # training
    "PretrainConfig": "myol_keras.config",
    "pretrain": "myol_keras.training",
    "EMATargetUpdate": "myol_keras.callbacks",
    "LearningRateLogger": "myol_keras.callbacks",
    "WarmupSchedule": "myol_keras.schedules",
    "warmup_learning_rate": "myol_keras.schedules",
    "ema_tau": "myol_keras.ema",
    # export
    "export_encoder": "myol_keras.export",
    "load_backbone": "myol_keras.export",
    "load_export_metadata": "myol_keras.export",
    "load_format": "myol_keras.export",
    "ExportError": "myol_keras.export",
    "MissingDependencyError": "myol_keras.export",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'myol_keras' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
