"""FGSM / PGD (docs/METHODS.md §3.4): closed forms on a linear model, the ε-ball, the faithful clipping."""

import numpy as np
import pytest
import tensorflow as tf

from myol_keras.evaluation import attack

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)


def _linear_model(seed=0, size=4, classes=3):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(size * size * 3, classes)).astype("float32")
    b = rng.normal(size=(classes,)).astype("float32")

    def model_fn(pixels):
        flat = tf.reshape(pixels, (tf.shape(pixels)[0], -1))
        return flat @ w + b

    return model_fn, w, b


def _analytic_gradient(x, y, w, b):
    logits = x.reshape(len(x), -1) @ w + b
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    p[np.arange(len(y)), y] -= 1.0
    return (p @ w.T).reshape(x.shape)


def _images(n=6, size=4, seed=1):
    return np.random.default_rng(seed).uniform(size=(n, size, size, 3)).astype("float32")


@pytest.mark.parametrize("eps", [4 / 255, 8 / 255, 0.1])
def test_fgsm_on_a_linear_model_is_the_analytic_sign_gradient_step(eps):
    model_fn, w, b = _linear_model()
    x = _images()
    y = np.array([0, 1, 2, 0, 1, 2])
    expected = np.clip(x + eps * np.sign(_analytic_gradient(x, y, w, b)), 0.0, 1.0)
    got = attack.fgsm(model_fn, x, y, eps).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_fgsm_faithful_steps_in_normalised_space_and_clips_there():
    model_fn, w, b = _linear_model()
    x = _images()
    y = np.array([2, 1, 0, 0, 1, 2])
    eps = 8 / 255
    mean, std = np.array(CIFAR_MEAN, "float32"), np.array(CIFAR_STD, "float32")
    # d/dz = d/dx * std (std > 0), so the sign is that of the pixel gradient.
    z = np.clip((x - mean) / std + eps * np.sign(_analytic_gradient(x, y, w, b)), 0.0, 1.0)
    got = attack.fgsm(model_fn, x, y, eps, attack_space="normalized_clip01", mean=CIFAR_MEAN, std=CIFAR_STD)
    np.testing.assert_allclose(got.numpy(), z * std + mean, atol=1e-5)


def test_faithful_fgsm_with_zero_epsilon_still_changes_inputs_as_documented():
    model_fn, _, _ = _linear_model(size=1)
    # docs/METHODS.md §3.4: red 0.10 -> normalised -1.935 -> 0 -> pixel 0.4914; red 0.90 -> 2.020 -> 1 -> 0.6937.
    x = np.array([[[[0.10, 0.5, 0.5]]], [[[0.90, 0.5, 0.5]]]], "float32")
    y = np.array([0, 1])
    out = attack.fgsm(model_fn, x, y, 0.0, attack_space="normalized_clip01", mean=CIFAR_MEAN, std=CIFAR_STD).numpy()
    assert out[0, 0, 0, 0] == pytest.approx(0.4914, abs=1e-6)
    assert out[1, 0, 0, 0] == pytest.approx(0.4914 + 0.2023, abs=1e-6)  # 0.6937
    assert not np.allclose(out, x)
    # In pixel space, eps = 0 is the identity.
    np.testing.assert_allclose(attack.fgsm(model_fn, x, y, 0.0).numpy(), x)


@pytest.mark.parametrize("steps", [1, 8])
def test_pgd_in_pixel_space_stays_in_the_eps_ball_and_in_unit_range(steps):
    model_fn, _, _ = _linear_model()
    x = _images(n=8)
    x[:, 0] = 0.0  # pixels at the box edges
    x[:, 1] = 1.0
    y = np.arange(8) % 3
    eps = 4 / 255
    out, projected = attack.pgd(model_fn, x, y, eps, steps, seed=3, return_unclipped=True)
    out = out.numpy()
    assert np.max(np.abs(out - x)) <= eps + 1e-6
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert max(projected) <= eps + 1e-6
    assert len(projected) == steps
    assert np.max(np.abs(out - x)) > 0.5 * eps  # it does move


def test_pgd_faithful_projection_holds_before_the_clip_but_not_after():
    model_fn, _, _ = _linear_model()
    x = _images(n=8)
    y = np.arange(8) % 3
    eps = 4 / 255
    out, projected = attack.pgd(model_fn, x, y, eps, 8, seed=0, attack_space="normalized_clip01",
                                mean=CIFAR_MEAN, std=CIFAR_STD, return_unclipped=True)
    assert max(projected) <= eps + 1e-6  # in normalised units, before the clip
    z_out = (out.numpy() - np.array(CIFAR_MEAN)) / np.array(CIFAR_STD)
    z_in = (x - np.array(CIFAR_MEAN)) / np.array(CIFAR_STD)
    assert np.max(np.abs(z_out - z_in)) > 10 * eps  # the [0, 1] clip in normalised space
    assert z_out.min() >= -1e-6 and z_out.max() <= 1 + 1e-6


def test_pgd_random_start_is_seeded():
    model_fn, _, _ = _linear_model()
    x, y = _images(), np.zeros(6, int)
    a = attack.pgd(model_fn, x, y, 4 / 255, 1, seed=5).numpy()
    b = attack.pgd(model_fn, x, y, 4 / 255, 1, seed=5).numpy()
    np.testing.assert_array_equal(a, b)


def test_default_attacks_are_the_reference_columns():
    names = [a["name"] for a in attack.default_attacks()]
    assert names == ["fgsm(4/255)", "fgsm(8/255)", "pgd(8)", "pgd(16)"]
    assert all(a["alpha"] == a["eps"] == 4 / 255 for a in attack.default_attacks() if a["kind"] == "pgd")


def test_robust_accuracy_counts_clean_and_attacked():
    model_fn, _, _ = _linear_model()
    x = _images(n=10)
    y = np.argmax(model_fn(x).numpy(), 1)  # all clean-correct
    acc, _ = attack.robust_accuracy(model_fn, x, y, attack.default_attacks(pgd_steps=(2,)), batch_size=4, verbose=False)
    assert acc["clean"] == 1.0
    assert set(acc) == {"clean", "fgsm(4/255)", "fgsm(8/255)", "pgd(2)"}
    assert all(0.0 <= v <= 1.0 for v in acc.values())


@pytest.mark.parametrize("eps", [-0.1, 1.5, float("nan")])
def test_epsilon_outside_unit_interval_is_a_value_error(eps):
    with pytest.raises(ValueError, match="outside") as error:
        attack.check_epsilon(eps)
    assert type(error.value) in (ValueError, FileNotFoundError)  # the library raises plain exceptions


# --- compiled (default) vs eager: the same adversarial images on a small network -------------------------------


@pytest.fixture(scope="module")
def tiny_classifier():
    """Pixels in [0, 1] -> CIFAR normalisation -> width-4 ResNet-18 (inference BN) -> Dense(10); 8 images at 16 px."""
    import keras

    from myol_keras.backbones import ResNet

    keras.utils.set_random_seed(0)
    backbone = ResNet(depth=18, stem="cifar", width=4)
    head = keras.layers.Dense(10)
    mean, std = tf.constant(CIFAR_MEAN), tf.constant(CIFAR_STD)

    def model_fn(pixels):
        return head(backbone((pixels - mean) / std, training=False))

    x = _images(n=8, size=16, seed=2)
    y = np.argmax(model_fn(x).numpy(), 1)
    y[::2] = (y[::2] + 1) % 10  # half clean-correct, half not
    return model_fn, x, y


@pytest.mark.parametrize("attack_space", attack.ATTACK_SPACES)
@pytest.mark.parametrize("eps", [4 / 255, 8 / 255])
def test_compiled_fgsm_gives_the_eager_adversarial_images(tiny_classifier, attack_space, eps):
    model_fn, x, y = tiny_classifier
    kwargs = dict(attack_space=attack_space, mean=CIFAR_MEAN, std=CIFAR_STD)
    eager = attack.fgsm(model_fn, x, y, eps, compiled=False, **kwargs).numpy()
    compiled = attack.fgsm(model_fn, x, y, eps, **kwargs).numpy()
    assert np.max(np.abs(eager - x)) > 0.5 * eps * min(CIFAR_STD)  # it does move
    np.testing.assert_allclose(compiled, eager, atol=1e-5, rtol=0)


@pytest.mark.parametrize("attack_space", attack.ATTACK_SPACES)
@pytest.mark.parametrize("steps", [1, 8])
def test_compiled_pgd_gives_the_eager_adversarial_images_and_projections(tiny_classifier, attack_space, steps):
    model_fn, x, y = tiny_classifier
    kwargs = dict(seed=7, attack_space=attack_space, mean=CIFAR_MEAN, std=CIFAR_STD, return_unclipped=True)
    eager, eager_projected = attack.pgd(model_fn, x, y, 4 / 255, steps, compiled=False, **kwargs)
    compiled, compiled_projected = attack.pgd(model_fn, x, y, 4 / 255, steps, **kwargs)
    np.testing.assert_allclose(compiled.numpy(), eager.numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(compiled_projected, eager_projected, atol=1e-6)
    assert len(compiled_projected) == steps
    # Same random start: another seed moves the compiled result.
    other = attack.pgd(model_fn, x, y, 4 / 255, steps, seed=8, attack_space=attack_space, mean=CIFAR_MEAN, std=CIFAR_STD)
    assert np.max(np.abs(other.numpy() - compiled.numpy())) > 1e-3


def test_pgd_random_start_is_bit_identical_eager_and_compiled():
    # An ulp of difference here flips gradient signs a few PGD steps later on a trained network.
    z = tf.constant(_images(n=20, size=32, seed=3))
    eager = attack._random_start(z, 4 / 255, 5)
    compiled = tf.function(attack._random_start)(z, tf.constant(4 / 255), tf.constant(5, tf.int64))
    np.testing.assert_array_equal(compiled.numpy(), eager.numpy())
    delta = eager.numpy() - z.numpy()
    assert np.abs(delta).max() <= 4 / 255 + 1e-7 and np.abs(delta).max() > 3.9 / 255  # U[-eps, eps]
    assert abs(delta.mean()) < 1e-3 * 4 / 255 * 30


@pytest.mark.parametrize("attack_space", attack.ATTACK_SPACES)
def test_compiled_robust_accuracy_equals_eager_and_traces_once_per_batch_shape(tiny_classifier, attack_space):
    network, x, y = tiny_classifier

    def model_fn(pixels):  # a callable of its own: fresh compiled functions
        return network(pixels)

    attacks = attack.default_attacks(pgd_steps=(1, 3))
    kwargs = dict(attack_space=attack_space, mean=CIFAR_MEAN, std=CIFAR_STD, batch_size=6, seed=4, verbose=False)
    eager, _ = attack.robust_accuracy(model_fn, x, y, attacks, compiled=False, **kwargs)
    compiled, _ = attack.robust_accuracy(model_fn, x, y, attacks, **kwargs)
    assert compiled == eager
    assert eager["clean"] == 0.5 and eager["pgd(3)"] < eager["clean"]  # the attacks bite
    # Batches of 6 and 2: two shapes; the two FGSM epsilons and two PGD step counts share a trace.
    for kind in ("fgsm", "pgd"):
        fn = attack._compiled(model_fn, kind, attack_space, CIFAR_MEAN, CIFAR_STD)
        assert fn.experimental_get_tracing_count() == 2, kind
    # A second evaluation reuses the traces.
    attack.robust_accuracy(model_fn, x, y, attacks, **kwargs)
    assert attack._compiled(model_fn, "pgd", attack_space, CIFAR_MEAN, CIFAR_STD).experimental_get_tracing_count() == 2


def test_compiled_attacks_run_through_a_restored_saved_model_endpoint(tmp_path):
    # What attack_evaluate feeds them: a restored SavedModel function (here a linear model), called inside the graph.
    _, w, b = _linear_model()
    module = tf.Module()
    module.w, module.b = tf.Variable(w), tf.Variable(b)
    module.serve_pixels = tf.function(
        lambda pixels: {"logits": tf.reshape(pixels, (tf.shape(pixels)[0], -1)) @ module.w + module.b},
        input_signature=[tf.TensorSpec([None, 4, 4, 3], tf.float32)])
    tf.saved_model.save(module, str(tmp_path / "export"))
    restored = tf.saved_model.load(str(tmp_path / "export"))

    def model_fn(pixels):
        return restored.serve_pixels(pixels)["logits"]

    x, y = _images(), np.array([0, 1, 2, 0, 1, 2])
    for space in attack.ATTACK_SPACES:
        kwargs = dict(attack_space=space, mean=CIFAR_MEAN, std=CIFAR_STD)
        np.testing.assert_allclose(attack.fgsm(model_fn, x, y, 8 / 255, **kwargs).numpy(),
                                   attack.fgsm(model_fn, x, y, 8 / 255, compiled=False, **kwargs).numpy(), atol=1e-5, rtol=0)
        np.testing.assert_allclose(attack.pgd(model_fn, x, y, 4 / 255, 4, seed=1, **kwargs).numpy(),
                                   attack.pgd(model_fn, x, y, 4 / 255, 4, seed=1, compiled=False, **kwargs).numpy(),
                                   atol=1e-5, rtol=0)
    expected = np.clip(x + 8 / 255 * np.sign(_analytic_gradient(x, y, w, b)), 0.0, 1.0)
    np.testing.assert_allclose(attack.fgsm(model_fn, x, y, 8 / 255).numpy(), expected, atol=1e-6)
