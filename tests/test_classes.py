"""Multi-class labels (labels.classes): mapping, objects per class, out-of-core labels, scores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from scipy import ndimage as ndi
from skimage.measure import label

from unetseg.data.demo import synthetic_cells
from unetseg.data.masks import check_classes, class_map
from unetseg.data.preprocess import preprocess_sample
from unetseg.data.sample import open_sample
from unetseg.errors import InputError
from unetseg.evaluation.classes import class_confusion, per_class_scores
from unetseg.evaluation.evaluate import evaluate, write_evaluation
from unetseg.objects.components import label_components
from unetseg.objects.labels import class_objects
from unetseg.report.figures import confusion_figure
from unetseg.training.validation import mean_class_dice
from unetseg.workflow.config import check_config

CLASSES = {"cell_body": [1], "nucleus": [2, 3]}


@pytest.mark.parametrize(
    ("classes", "message"),
    [
        ({"cell": [1], "nucleus": [1]}, "mask value 1 is listed for both 'cell' and 'nucleus'"),
        ({"cell": []}, "labels.classes.cell lists no mask value"),
        ({"cell body": [1]}, "'cell body' is not a valid identifier"),
        ({"background": [1]}, "'background' is class 0"),
        ({"cell": [1.5]}, "1.5 is not an integer mask value"),
        ([1, 2], "must map class names to lists of mask values"),
    ],
)
def test_bad_classes_are_named_with_the_fix(classes, message):
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_classes(classes)


def test_classes_keep_their_order_and_single_values_become_lists():
    assert list(check_classes({"nucleus": 2, "cell": [1]})) == ["nucleus", "cell"]
    assert check_classes({"nucleus": 2, "cell": [1]}) == {"nucleus": [2], "cell": [1]}


def test_class_map_indexes_in_order_and_reports_unlisted_values():
    mask = np.array([[0, 1, 2, 3], [9, 9, 1, 0]])
    indices, unlisted = class_map(mask, CLASSES)
    np.testing.assert_array_equal(indices, [[0, 1, 2, 2], [0, 0, 1, 0]])
    assert indices.dtype == np.uint8 and unlisted.tolist() == [9]


def test_objects_of_different_classes_that_touch_stay_apart():
    classes = np.zeros((20, 20), np.uint8)
    classes[2:10, 2:10] = 1
    classes[4:8, 4:8] = 2  # a nucleus inside a cell body: two objects, not one
    classes[12:18, 2:6], classes[12:18, 6:10] = 1, 1  # two halves of one class: one object
    objects = class_objects(classes)
    assert objects.max() == 3
    assert len(np.unique(objects[classes == 2])) == 1 and objects[5, 5] != objects[2, 2]


@pytest.mark.parametrize("chunk", [7, 16, 64])
def test_out_of_core_labels_of_a_class_map_equal_the_whole_image(tmp_path, chunk):
    rng = np.random.default_rng(1)
    noise = ndi.gaussian_filter(rng.standard_normal((64, 64)), 2)
    classes = np.digitize(noise, np.quantile(noise, [0.4, 0.7])).astype(np.uint8)  # 0, 1, 2 touching
    count = label_components(classes, tmp_path / "labels.tif", chunk=chunk)
    labels = tifffile.imread(tmp_path / "labels.tif")
    reference = label(classes, background=0, connectivity=2)
    assert count == reference.max()
    # Same partition: a one-to-one map between the two labellings.
    pairs = np.unique(np.stack([labels.ravel(), reference.ravel()]), axis=1)
    assert len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]
    pairs = np.unique(np.stack([labels.ravel(), classes.ravel()]), axis=1)
    assert len(np.unique(pairs[0])) == pairs.shape[1]  # no object spans two classes


def test_confusion_and_per_class_scores_by_hand():
    truth = np.array([0, 0, 1, 1, 1, 2, 2, 2])
    pred = np.array([0, 1, 1, 1, 2, 2, 2, 0])
    confusion = class_confusion(truth, pred, 3)
    np.testing.assert_array_equal(confusion, [[1, 1, 0], [0, 2, 1], [1, 0, 2]])
    body, nucleus = per_class_scores(confusion)
    # cell body: tp 2, fp 1 (a background pixel), fn 1 (called nucleus).
    assert body == pytest.approx({"dice": 4 / 6, "iou": 2 / 4, "precision": 2 / 3, "recall": 2 / 3})
    assert nucleus == pytest.approx({"dice": 4 / 6, "iou": 2 / 4, "precision": 2 / 3, "recall": 2 / 3})
    assert mean_class_dice(confusion) == pytest.approx(4 / 6)
    with pytest.raises(InputError, match="pred.tif: holds class 255 but the ground truth has 2 classes"):
        class_confusion(truth, np.where(pred > 0, 255, 0), 3, "pred.tif")


def _write(tmp_path, name, classes, prediction, **kw):
    tifffile.imwrite(tmp_path / f"{name}.tif", (classes.astype(np.uint16) * 1000 + 100))
    tifffile.imwrite(tmp_path / f"{name}_mask.tif", classes)
    tifffile.imwrite(tmp_path / f"{name}_pred.tif", prediction.astype(np.uint8))
    preprocess_sample(name, tmp_path / f"{name}.tif", tmp_path / f"{name}.zarr",
                      mask_path=tmp_path / f"{name}_mask.tif", classes=CLASSES, **kw)  # fmt: skip
    return tmp_path / f"{name}.zarr", tmp_path / f"{name}_pred.tif"


def test_preprocess_stores_class_indices_objects_per_class_and_unlisted_values(tmp_path, capsys):
    _, classes = synthetic_cells((64, 64), rng=np.random.default_rng(0))
    raw = classes.astype(np.uint16)
    raw[raw == 2] = 3  # nuclei stored as 3: listed for 'nucleus' too
    raw[:2, :2] = 9  # a value no class lists
    path, _ = _write(tmp_path, "a", raw, classes)
    assert "mask value(s) [9] (4 pixels) belong to no class" in capsys.readouterr().err
    sample = open_sample(path)
    assert sample.classes == ["cell_body", "nucleus"] and sample.attrs["unlisted_pixels"] == 4
    expected = np.where(raw == 9, 0, classes)
    np.testing.assert_array_equal(sample.mask.read(0)[0], expected)
    objects = sample.objects.read(0)[0]
    np.testing.assert_array_equal(objects > 0, expected > 0)
    for obj in np.unique(objects[objects > 0]):  # every object lies in one class
        assert len(np.unique(expected[objects == obj])) == 1


def test_evaluation_gives_per_class_scores_and_the_pooled_confusion(tmp_path):
    truth = np.zeros((32, 32), np.uint8)
    truth[4:20, 4:20], truth[8:14, 8:14] = 1, 2
    pred = truth.copy()
    pred[8:14, 8:11] = 1  # half of the nucleus called cell body
    first = _write(tmp_path, "a", truth, pred)
    second = _write(tmp_path, "b", truth, truth)
    summary = evaluate(["a", "b"], [first[0], second[0]], [first[1], second[1]])
    a, b = summary["per_image"]
    assert a["dice_nucleus"] == pytest.approx(2 * 18 / (18 + 36)) and b["dice_nucleus"] == 1.0
    assert a["recall_nucleus"] == pytest.approx(0.5) and a["precision_cell_body"] == pytest.approx(220 / 238)
    assert a["dice"] == 1.0  # the foreground (any class) is right
    assert summary["per_class"]["nucleus"]["dice"] == pytest.approx((a["dice_nucleus"] + 1) / 2)
    assert summary["per_class"]["nucleus"]["pooled"]["recall"] == pytest.approx(54 / 72)
    assert summary["confusion"]["classes"] == ["background", "cell_body", "nucleus"]
    assert np.array(summary["confusion"]["counts"]).sum() == 2 * truth.size
    assert summary["confusion"]["counts"][2][1] == 18
    write_evaluation(summary, tmp_path / "summary.json", tmp_path / "per_image.csv")
    confusion_figure(summary, tmp_path / "confusion.png")
    assert (tmp_path / "confusion.png").stat().st_size > 0
    assert "dice_nucleus" in json.loads((tmp_path / "summary.json").read_text())["metrics"]
    # Objects per class: the nucleus and the cell body are two true objects.
    assert b["n_true_objects"] == 2 and b["ap_50"] == 1.0


def test_config_refuses_bad_classes_and_classes_with_listed_foreground():
    schema = Path(__file__).resolve().parents[1] / "workflow" / "schemas" / "config.schema.yaml"
    base = {"dataset": "d", "samples": "s.tsv"}
    with pytest.raises(InputError, match="labels.classes: mask value 2 is listed for both 'a' and 'b'"):
        check_config({**base, "labels": {"classes": {"a": [2], "b": [2]}}}, schema)
    with pytest.raises(InputError, match="remove labels.foreground"):
        check_config({**base, "labels": {"classes": {"a": [2]}, "foreground": [0]}}, schema)
    check_config({**base, "labels": {"classes": {"a": [2], "b": 3}}}, schema)


def test_binary_evaluation_has_a_two_by_two_confusion(tmp_path):
    truth = np.zeros((16, 16), np.uint8)
    truth[2:8, 2:8] = 255
    pred = np.roll(truth, 1, axis=0)
    tifffile.imwrite(tmp_path / "a.tif", truth.astype(np.uint16) + 10)
    tifffile.imwrite(tmp_path / "a_mask.tif", truth)
    tifffile.imwrite(tmp_path / "a_pred.tif", pred)
    preprocess_sample("a", tmp_path / "a.tif", tmp_path / "a.zarr", mask_path=tmp_path / "a_mask.tif")
    summary = evaluate(["a"], [tmp_path / "a.zarr"], [tmp_path / "a_pred.tif"])
    row = summary["per_image"][0]
    assert summary["confusion"] == {
        "classes": ["background", "foreground"],
        "counts": [[row["tn"], row["fp"]], [row["fn"], row["tp"]]],
    }
    assert row["fp"] == row["fn"] == 6 and "per_class" not in summary
