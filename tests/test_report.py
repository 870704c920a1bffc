"""What the report shows of a run: the retrieval grid, the trained vs random-init table (issue 19).

The neighbour ranking is checked on tiny vectors whose cosine similarities are
known by hand; the grid and the report on a run directory written here.
"""

import json
import os

import numpy as np
import pytest

from myol_keras import report
from myol_keras.evaluation import random_init, retrieval

# Cosines to the query (1, 0): 0.995, 0, -1, 0.707, 1; to the query (0, 1): 0.0995, 1, 0, 0.707, 0.
GALLERY = np.array([[1.0, 0.1], [0.0, 1.0], [-1.0, 0.0], [1.0, 1.0], [2.0, 0.0]])


def test_nearest_neighbours_rank_by_cosine_similarity():
    index, similarity = retrieval.nearest_neighbours(np.array([[1.0, 0.0], [0.0, 3.0]]), GALLERY, k=5)
    np.testing.assert_array_equal(index[0], [4, 0, 3, 1, 2])  # (2, 0) is as close as (1, 0) itself: norm ignored
    np.testing.assert_allclose(similarity[0], [1.0, 1 / np.sqrt(1.01), 1 / np.sqrt(2), 0.0, -1.0], atol=1e-6)
    np.testing.assert_array_equal(index[1], [1, 3, 0, 2, 4])  # the tie at cosine 0: lower index first
    np.testing.assert_allclose(similarity[1], [1.0, 1 / np.sqrt(2), 0.1 / np.sqrt(1.01), 0.0, 0.0], atol=1e-6)
    top2, _ = retrieval.nearest_neighbours(np.array([[1.0, 0.0], [0.0, 3.0]]), GALLERY, k=2)
    np.testing.assert_array_equal(top2, [[4, 0], [1, 3]])
    chunked, _ = retrieval.nearest_neighbours(np.array([[1.0, 0.0], [0.0, 3.0]]), GALLERY, k=5, chunk=1)
    np.testing.assert_array_equal(chunked, index)


@pytest.mark.parametrize("query, k, match", [
    (np.ones((1, 3)), 2, r"the same D. Received: shapes \(1, 3\) and \(5, 2\)"),
    (np.ones((1, 2)), 0, r"Received: k=0"),
    (np.ones((1, 2)), 6, r"at most the gallery size \(5\). Received: k=6"),
])
def test_nearest_neighbours_bad_input(query, k, match):
    with pytest.raises(ValueError, match=match):
        retrieval.nearest_neighbours(query, GALLERY, k)


def test_queries_are_the_first_image_of_each_class_in_class_order():
    labels = np.array([3, 1, 3, 0, 1, 2])
    np.testing.assert_array_equal(retrieval.pick_queries(labels), [3, 1, 5, 0])
    np.testing.assert_array_equal(retrieval.pick_queries(labels, max_queries=2), [3, 1])
    np.testing.assert_array_equal(retrieval.pick_queries(None, count=5, max_queries=3), [0, 1, 2])


def _images(n, offset=0):
    """n 4x4 images whose first pixel is their index + offset (to tell them apart)."""
    images = np.zeros((n, 4, 4, 3), np.uint8)
    images[:, 0, 0, 0] = np.arange(n) + offset
    return images


def _sample(labels=True):
    # Two test images, classes 0 and 1; gallery items 0..4 with classes 0, 1, 1, 0, 1 (so (2, 0), item 4, is
    # the nearest to the class-0 query but of class 1: a wrong neighbour).
    query_emb = np.array([[1.0, 0.0], [0.0, 1.0]])
    kwargs = {"query_labels": np.array([0, 1]), "gallery_labels": np.array([0, 1, 1, 0, 1])} if labels else {}
    return retrieval.retrieval_sample(_images(2), query_emb, _images(5, offset=100), GALLERY, k=3, **kwargs)


def test_retrieval_sample_marks_the_neighbours_of_another_class():
    sample = _sample()
    np.testing.assert_array_equal(sample["neighbour_index"], [[4, 0, 3], [1, 3, 0]])
    np.testing.assert_array_equal(sample["neighbour_labels"], [[1, 0, 0], [1, 0, 0]])
    np.testing.assert_array_equal(sample["wrong"], [[True, False, False], [False, True, True]])
    np.testing.assert_array_equal(sample["neighbour_images"][:, :, 0, 0, 0], [[104, 100, 103], [101, 103, 100]])
    np.testing.assert_array_equal(sample["query_images"][:, 0, 0, 0], [0, 1])
    assert bool(sample["has_labels"]) and int(sample["gallery_size"]) == 5

    unlabelled = _sample(labels=False)
    assert not unlabelled["wrong"].any() and not bool(unlabelled["has_labels"])
    np.testing.assert_array_equal(unlabelled["neighbour_index"], sample["neighbour_index"])
    with pytest.raises(ValueError, match="for both the queries and the gallery"):
        retrieval.retrieval_sample(_images(2), np.eye(2), _images(5), GALLERY, query_labels=np.array([0, 1]))


def _run_dir(tmp_path, name="tiny", labels=True):
    run = tmp_path / name
    run.mkdir()
    retrieval.save_retrieval_sample(str(run), _sample(labels))
    records = [
        {"evaluation": "linear", "encoder": "/e/1", "top1": 0.9, "top5": 1.0},
        {"evaluation": "knn", "encoder": "/e/1", "top1": 0.8, "top5": 1.0, "k": 200},
        {"evaluation": "random_init", "encoder": "/e/1", "init_seed": 0,
         "linear": {"top1": 0.5, "top5": 0.9}, "knn": {"top1": 0.4, "top5": 0.8}},
    ]
    (run / "results.json").write_text(json.dumps(records))
    (run / "config.json").write_text(json.dumps({"method": "myol", "dataset": "digits", "epochs": 10,
                                                 "resolved": {"image_size": 32}}))
    return str(run)


def _png_size(path):
    with open(path, "rb") as f:
        header = f.read(24)
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")


@pytest.mark.parametrize("labels", [True, False], ids=["labelled", "unlabelled"])
def test_retrieval_grid_is_written_as_png(tmp_path, labels):
    run = _run_dir(tmp_path, labels=labels)
    path = report.plot_retrieval(run, str(tmp_path / "retrieval.png"))
    width, height = _png_size(path)
    assert width > 300 and height > 200  # 2 rows of 1 query + 3 neighbours
    assert report.plot_retrieval(str(tmp_path), str(tmp_path / "none.png")) is None  # no sample, no grid


def test_report_shows_what_the_encoder_learned(tmp_path):
    run = _run_dir(tmp_path)
    out = report.render_report(run)
    text = open(out["report"]).read()
    assert "## What tiny learned" in text
    assert "| trained (myol, 10 epochs) | 90.0 % | 80.0 % |" in text
    assert "| random init (seed 0) | 50.0 % | 40.0 % |" in text
    assert "![retrieval tiny](plots/retrieval_tiny.png)" in text
    assert os.path.exists(os.path.join(run, "plots", "retrieval_tiny.png"))
    row = out["rows"][0]
    assert row["random-init linear top-1"] == 0.5 and row["random-init kNN top-1"] == 0.4
    assert row["method"] == "myol" and row["dataset"] == "digits"  # config.json: the PretrainConfig dict


def test_comparison_table_in_percent():
    rows = random_init.comparison_rows({"top1": 0.934}, {"top1": 0.9}, {"init_seed": 3, "linear": {"top1": 0.52},
                                                                         "knn": {"top1": 0.611}}, "trained (myol)")
    assert [r["encoder"] for r in rows] == ["trained (myol)", "random init (seed 3)"]
    lines = random_init.format_comparison(rows).splitlines()
    assert lines[0].split() == ["encoder", "linear", "top-1", "kNN", "top-1"]
    assert set(lines[1]) == {"-", " "}
    assert lines[2].startswith("trained (myol)") and lines[2].split()[-4:] == ["93.4", "%", "90.0", "%"]
    assert lines[3].startswith("random init (seed 3)") and lines[3].split()[-4:] == ["52.0", "%", "61.1", "%"]
    assert random_init.format_comparison([]) == ""
