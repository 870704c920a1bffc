"""Embeddings of a folder of images from an encoder export.

    python -m myol_keras.embed --saved_model=saved_models/myol_stl10 --images=photos/ \
        --output=photos_embeddings.npy

Every readable image under `--images` (recursively; jpg, png, bmp, gif) is
decoded to RGB, centre-cropped to a square and resized (antialiased) to the
export's image size — `myol_keras.preprocessing.resize_pixels`, the rule of
the export's own endpoints — and embedded through the SavedModel's
`serve_pixels` endpoint in batches, with a progress line. The
embeddings go to `--output` (float32 [N, D]) and the file names, relative to
`--images` and in the same order, one per line, to the `.txt` beside it.
"""

import io
import os
import sys

import numpy as np
from absl import flags

from myol_keras import cli, rundir

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


def decode_image(path, image_size):
    """One image file -> float32 [0, 1] pixels `[image_size, image_size, 3]` (`preprocessing.resize_pixels`)."""
    import tensorflow as tf

    from myol_keras.preprocessing import resize_pixels

    image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    return resize_pixels(image, image_size).numpy()


def embed_folder(saved_model, images, output=None, *, batch_size=64, verbose=True):
    """Embed every image under `images`; returns {"embeddings", "names", "skipped", "output", "names_file"}.

    Unreadable files are skipped and listed (a warning line on stderr). The
    embeddings and the names are written atomically.

    Raises:
        FileNotFoundError: no folder or no export.
        ValueError: a bad batch size or output name, no image file, none decodable,
            or a classifier export.

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
    encoder = features.load_export(saved_model, expect="encoder")
    size = encoder.image_size
    progress = features.ProgressLine("embedding", len(names), enabled=verbose)
    kept, skipped, chunks, batch = [], [], [], []

    def flush():
        if batch:
            chunks.append(np.asarray(encoder.serve_pixels(np.stack(batch))["embedding"], np.float32))
            progress.update(len(batch))
            batch.clear()

    for name in names:
        try:
            batch.append(decode_image(os.path.join(images, name), size))
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
    print(f"{PROG}: {out['embeddings'].shape[0]} embeddings of size {out['embeddings'].shape[1]} -> "
          f"{out['output']} (names: {out['names_file']})")


main = cli.entry_point(PROG, FLAGS, _run, __doc__)


if __name__ == "__main__":
    raise SystemExit(main())
