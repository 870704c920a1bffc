"""The README's library example: `model.fit` from a user script, then export and reload."""

import keras
import numpy as np
import tensorflow as tf

import myol_keras
from myol_keras import augment, data


def test_readme_library_example_runs(tmp_path):
    images, info = data.load_pretrain_images("digits")
    images = images.take(64)
    recipe = lambda seed: augment.myol_view_recipe(16, info.mean, info.std, seed=seed)  # noqa: E731
    ds = data.pretrain_pipeline(images, augment.make_view_fn([recipe(1), recipe(2)]), batch_size=16)

    model = myol_keras.MYOL(
        myol_keras.ResNet(depth=18, stem="cifar", width=4),
        projector_hidden_dim=32, projection_dim=16, predictor_hidden_dim=32,
        alpha=2.0, gamma=1.0, weight_decay=1e-4,
    )
    model.compile(optimizer=keras.optimizers.SGD(myol_keras.WarmupSchedule(0.05, steps_per_epoch=4), momentum=0.9))
    history = model.fit(ds, epochs=2, verbose=0, callbacks=[myol_keras.EMATargetUpdate(tau=0.996)])
    assert np.all(np.isfinite(history.history["loss"]))
    assert int(model.optimizer.iterations.numpy()) == 8

    path = myol_keras.export_encoder(
        model.backbone, str(tmp_path / "enc"), image_size=16, mean=info.mean, std=info.std
    )
    assert path.endswith("/1")
    backbone = myol_keras.load_backbone(str(tmp_path / "enc"))
    x = tf.random.uniform((3, 16, 16, 3))
    np.testing.assert_allclose(
        backbone(x, training=False).numpy(), model.backbone(x, training=False).numpy(), atol=1e-5
    )


def test_public_names_resolve():
    for name in myol_keras.__all__:
        assert getattr(myol_keras, name) is not None
