"""Embeddings of a folder of images from an encoder export.

    python -m myol_keras.embed --saved_model=saved_models/myol_stl10 --images=photos/ \
        --output=photos_embeddings.npy
    python -m myol_keras.embed --saved_model=saved_models/myol_stl10 --images=photos/ --format=onnx

Every readable image under `--images` (recursively; jpg, png, bmp, gif) is
decoded to RGB, centre-cropped to a square and resized (antialiased) to the
export's image size — `myol_keras.preprocessing.resize_pixels`, the rule of
the export's own endpoints — and embedded in batches, with a progress line.
The embeddings go to `--output` (float32 [N, D]) and the file names, relative
to `--images` and in the same order, one per line, to the `.txt` beside it.

`--format` picks the file of the export that computes them:

* `saved_model` (default): the SavedModel's `serve_pixels` endpoint, fed the
  resized [0, 1] pixels;
* `onnx` (`model.onnx` under onnxruntime) or `litert` (`model.tflite` under
  the LiteRT interpreter): uint8 images at the file's fixed input size S
  (images of another size are cropped and resized to S first, then rounded
  to uint8), so a deployed file can be checked from the shell. These need
  `pip install "myol_keras[export]"` and an export written with
  `--export_formats=...,onnx,litert`; an export without the file is one line
  saying which formats it has.
"""

import io
import os
import sys

import numpy as np
from absl import flags

from myol_keras import cli, rundir
from myol_keras.export import registry

PROG = "myol_keras.embed"
EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")

FLAGS = flags.FlagValues()
flags.DEFINE_string("saved_model", None, "Encoder export: saved_models/<name>[/<version>].", flag_values=FLAGS)
cli.require(FLAGS, "saved_model", "an encoder export, saved_models/<name>")
flags.DEFINE_string("images", None, "Folder of images (searched recursively).", flag_values=FLAGS)
cli.require(FLAGS, "images", "a folder of images")
flags.DEFINE_string("output", "embeddings.npy", "Output .npy; the file names go to the .txt beside it.", flag_values=FLAGS)
flags.register_validator("output", lambda path: path.endswith(".npy"), message="give a .npy path", flag_values=FLAGS)
flags.DEFINE_integer("batch_size", 64, "Images per call.", lower_bound=1, flag_values=FLAGS)
flags.DEFINE_enum("format", "saved_model", registry.FORMATS, "Which file of the export computes the embeddings: the "
                  "SavedModel, model.onnx (onnxruntime) or model.tflite (LiteRT).", flag_values=FLAGS)


def list_images(folder):
    """Sorted relative paths of the image files under `folder`.

    Raises:
        FileNotFoundError: `folder` is not a directory.
        ValueError: it holds no image file.
    """
    if not folder or not os.path.isdir(folder):
        raise FileNotFoundError(f"images folder {folder!r} is not a directory")
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [os.path.relpath(os.path.join(root, f), folder) for f in sorted(files)
                  if f.lower().endswith(EXTENSIONS) and not f.startswith(".")]
    if not found:
        raise ValueError(f"no images ({', '.join(EXTENSIONS)}) under {folder}")
    return found


def decode_image(path, image_size, uint8=False):
    """One image file -> float32 [0, 1] pixels `[image_size, image_size, 3]` (`preprocessing.resize_pixels`).

    With `uint8=True`: uint8 pixels, the file's own if it is `image_size`
    square already, else the resized pixels rounded.
    """
    import tensorflow as tf

    from myol_keras.preprocessing import resize_pixels

    image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    if uint8 and tuple(image.shape[:2]) == (image_size, image_size):
        return image.numpy()
    pixels = resize_pixels(image, image_size).numpy()
    return np.clip(np.round(pixels * 255.0), 0, 255).astype(np.uint8) if uint8 else pixels


def load_embedder(saved_model, format="saved_model"):  # noqa: A002 (the flag's name)
    """`(embed, size, uint8)`: a batch -> embeddings function of an export's `format` file and what it takes.

    `saved_model`: float32 [0, 1] pixels at the export's image size through
    `serve_pixels`; `onnx` / `litert`: uint8 images at the file's fixed input size.

    Raises:
        FileNotFoundError: no export.
        ValueError: a classifier export, an unknown format, or an export without that file.
        registry.MissingDependencyError: the format's runtime is not installed.
    """
    from myol_keras import export
    from myol_keras.evaluation import features

    if format not in registry.FORMATS:
        raise ValueError(f"Expected `format` to be one of {', '.join(registry.FORMATS)}. Received: format={format!r}")
    if format == "saved_model":
        encoder = features.load_export(saved_model, expect="encoder")
        return (lambda batch: encoder.serve_pixels(batch)["embedding"]), encoder.image_size, False
    features.read_export_metadata(saved_model, expect="encoder")  # a classifier export: the message says which to pass
    runner = export.load_format(saved_model, format)
    return runner, runner.input_size, True


def embed_folder(saved_model, images, output=None, *, batch_size=64, verbose=True, format="saved_model"):  # noqa: A002
    """Embed every image under `images`; returns {"embeddings", "names", "skipped", "output", "names_file"}.

    Unreadable files are skipped and listed (a warning line on stderr). The
    embeddings and the names are written atomically.

    Args:
        saved_model: the export (version directory or model base path).
        images: the folder of images.
        output: the `.npy` to write (None: write nothing).
        batch_size: images per call.
        verbose: show a progress line.
        format: the export's file that computes the embeddings: `saved_model`,
            `onnx` or `litert` (`load_embedder`).

    Raises:
        FileNotFoundError: no folder or no export.
        ValueError: a bad batch size or output name, no image file, none decodable,
            a classifier export, or an export without the `format` file.
        registry.MissingDependencyError: the format's runtime is not installed.

    Example:
    ```python
    out = embed_folder("saved_models/myol_stl10", "photos/", "photos.npy")
    out["embeddings"].shape
    ```
    """
    from myol_keras.evaluation import common, features

    common.check_positive_ints(batch_size=batch_size)
    if output and not str(output).endswith(".npy"):
        raise ValueError(f"Expected `output` to be a .npy path. Received: output={output!r}")
    names = list_images(images)
    embed, size, uint8 = load_embedder(saved_model, format)
    progress = features.ProgressLine("embedding", len(names), enabled=verbose)
    kept, skipped, chunks, batch = [], [], [], []

    def flush():
        if batch:
            chunks.append(np.asarray(embed(np.stack(batch)), np.float32))
            progress.update(len(batch))
            batch.clear()

    for name in names:
        try:
            batch.append(decode_image(os.path.join(images, name), size, uint8=uint8))
            kept.append(name)
        except Exception:  # noqa: BLE001 (any undecodable file is skipped and reported)
            skipped.append(name)
        if len(batch) >= batch_size:
            flush()
    flush()
    progress.close()
    if not kept:
        raise ValueError(f"none of the {len(names)} image files under {images} could be decoded")
    if skipped:
        print(f"{PROG}: skipped {len(skipped)} unreadable file(s): {', '.join(skipped[:5])}"
              f"{' ...' if len(skipped) > 5 else ''}", file=sys.stderr)
    embeddings = np.concatenate(chunks)
    result = {"embeddings": embeddings, "names": kept, "skipped": skipped, "output": None, "names_file": None}
    if output:
        os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
        buffer = io.BytesIO()
        np.save(buffer, embeddings)
        rundir.atomic_write(output, buffer.getvalue())
        names_file = os.path.splitext(output)[0] + ".txt"
        rundir.atomic_write(names_file, "".join(n + "\n" for n in kept))
        result.update(output=output, names_file=names_file)
    return result


def _run():
    out = cli.call_with_flags(embed_folder, FLAGS)
    print(f"{PROG}: {out['embeddings'].shape[0]} embeddings of size {out['embeddings'].shape[1]} ({FLAGS.format}) -> "
          f"{out['output']} (names: {out['names_file']})")


main = cli.entry_point(PROG, FLAGS, _run, __doc__)


if __name__ == "__main__":
    raise SystemExit(main())
