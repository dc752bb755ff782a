"""Touching objects kept apart: the training target, the weight map on the separation lines,
small objects dropped from the instance labels, and the membrane weight map's connectivity."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import tifffile
from skimage.draw import disk
from skimage.measure import label

from unetseg.data.patches import _plane_weights
from unetseg.data.preprocess import preprocess_sample
from unetseg.data.sample import open_sample
from unetseg.data.samples import check_sample_sheet
from unetseg.data.targets import CONTACT, contact_target, separated_foreground, touching_pixels
from unetseg.errors import InputError
from unetseg.io.images import open_image
from unetseg.objects.components import label_components


def two_touching_disks(shape=(48, 72)) -> np.ndarray:
    """Ids 1 and 2: disks of radius 12 whose centres are 22 px apart, so they share an edge."""
    objects = np.zeros(shape, np.uint16)
    for index, centre in enumerate(((24, 24), (24, 46)), start=1):
        rr, cc = disk(centre, 12, shape=shape)
        objects[rr, cc] = index
    assert label(objects > 0, connectivity=2).max() == 1  # one blob without separation
    return objects


def test_two_touching_disks_come_out_as_two_objects():
    objects = two_touching_disks()
    target = separated_foreground(objects)
    assert label(target, connectivity=2).max() == 2  # apart even with diagonal neighbours
    removed = (objects > 0) & ~target
    assert set(np.unique(objects[removed])) == {1, 2}  # both sides of the contact
    # Every removed pixel touches the other object; nothing else of either disk is lost.
    np.testing.assert_array_equal(removed, touching_pixels(objects))
    assert removed.sum() < 0.06 * (objects > 0).sum()
    one_side = separated_foreground(objects, both_sides=False)  # the thinner line
    assert label(one_side, connectivity=2).max() == 2 and set(np.unique(objects[(objects > 0) & ~one_side])) == {2}


def test_separate_objects_and_binary_masks_are_unchanged():
    objects = np.zeros((40, 60), np.uint8)
    objects[5:15, 5:15], objects[20:30, 30:50] = 1, 2  # apart: nothing to separate
    np.testing.assert_array_equal(separated_foreground(objects), objects > 0)
    np.testing.assert_array_equal(separated_foreground(objects > 0), objects > 0)  # one id: no lines
    assert not separated_foreground(np.zeros((4, 4), int)).any()


def test_preprocessing_stores_the_separated_target_and_the_full_truth(tmp_path):
    objects = two_touching_disks()
    tifffile.imwrite(tmp_path / "img.tif", (objects > 0).astype(np.float32) * 100)
    tifffile.imwrite(tmp_path / "mask.tif", objects)
    preprocess_sample("s", tmp_path / "img.tif", tmp_path / "s.zarr", mask_path=tmp_path / "mask.tif", separate="line")
    sample = open_sample(tmp_path / "s.zarr")
    np.testing.assert_array_equal(sample.mask.read(0)[0], objects > 0)  # the truth, for scoring
    np.testing.assert_array_equal(sample.target.read(0)[0], separated_foreground(objects))  # what is learnt
    np.testing.assert_array_equal(sample.objects.read(0)[0], objects)
    preprocess_sample("p", tmp_path / "img.tif", tmp_path / "p.zarr", mask_path=tmp_path / "mask.tif", separate=False)
    np.testing.assert_array_equal(open_sample(tmp_path / "p.zarr").target.read(0)[0], objects > 0)
    default = preprocess_sample("d", tmp_path / "img.tif", tmp_path / "d.zarr", mask_path=tmp_path / "mask.tif")
    assert default["target"] == "contact"  # labels.separate_touching: true


def test_weight_map_peaks_on_the_line_between_touching_objects(tmp_path):
    objects = two_touching_disks()
    tifffile.imwrite(tmp_path / "img.tif", (objects > 0).astype(np.float32) * 100)
    tifffile.imwrite(tmp_path / "mask.tif", objects)
    preprocess_sample("s", tmp_path / "img.tif", tmp_path / "s.zarr", mask_path=tmp_path / "mask.tif")
    sample = open_sample(tmp_path / "s.zarr")
    weights = _plane_weights(sample, 0, {"w0": 10.0, "sigma": 5.0})
    line = touching_pixels(objects)
    far_background = np.zeros_like(line)
    far_background[:, :2] = True  # background far from both disks
    assert weights[line].min() > 8  # w_c + w0 exp(-(1 + 1)^2 / 50): close to w0 on the line
    assert weights[line].mean() > 2 * weights[(objects == 1) & ~line].max()  # above anything inside an object
    assert weights[far_background].max() < 2


def test_contact_target_weights_peak_on_the_contacts(tmp_path):
    objects = two_touching_disks()
    target = contact_target(objects)
    np.testing.assert_array_equal(target > 0, objects > 0)  # the full extent: the mask to learn
    np.testing.assert_array_equal(target == CONTACT, touching_pixels(objects))
    assert label(target == 1, connectivity=2).max() == 2  # the objects without contacts are apart
    tifffile.imwrite(tmp_path / "img.tif", (objects > 0).astype(np.float32) * 100)
    tifffile.imwrite(tmp_path / "mask.tif", objects)
    attrs = preprocess_sample("s", tmp_path / "img.tif", tmp_path / "s.zarr", mask_path=tmp_path / "mask.tif",
                              separate="contact")  # fmt: skip
    sample = open_sample(tmp_path / "s.zarr")
    assert attrs["target"] == "contact"
    np.testing.assert_array_equal(sample.target.read(0)[0], target)
    np.testing.assert_array_equal(sample.mask.read(0)[0], objects > 0)  # the truth, for scoring
    weights = _plane_weights(sample, 0, {"w0": 10.0, "sigma": 5.0})
    contact = target == CONTACT
    assert weights[contact].min() > 8 and weights[contact].mean() > 2 * weights[target == 1].max()


@pytest.mark.parametrize("in_memory", [True, False])
def test_a_contact_model_segments_touching_disks_as_two_whole_objects(tmp_path, monkeypatch, in_memory):
    """A contact model's probabilities (background / object / contact) give the full mask and
    two instances covering it, in memory and out of core."""
    import unetseg.batch.segment as segment
    from unetseg.batch.segment import BatchSample, BatchSegmenter, SegmentSettings
    from unetseg.inference.run import InferenceOptions
    from unetseg.nn.model import UNet
    from unetseg.nn.modelcard import save_model

    objects = two_touching_disks()
    tifffile.imwrite(tmp_path / "img.tif", (objects > 0).astype(np.float32) * 100)
    card = {"normalization": {"method": "percentile", "percentiles": [1.0, 99.8]}, "target": "contact"}
    save_model(UNet(in_channels=1, out_channels=3, depth=2, base_channels=4), tmp_path / "model", card)
    segmenter = BatchSegmenter(tmp_path / "model", InferenceOptions(tile=32, threads=1),
                               SegmentSettings(results=str(tmp_path / "results")))  # fmt: skip
    onehot = np.eye(3, dtype=np.float32)[contact_target(objects)].transpose(2, 0, 1)

    def predict(source, out, **options):
        out[0] = onehot

    monkeypatch.setattr(segmenter.predictor, "predict", predict)
    if not in_memory:
        monkeypatch.setattr(segment, "fits_one_block", lambda *args: False)
    (row,) = segmenter.run([BatchSample("disks", str(tmp_path / "img.tif"))])
    assert row["status"] == "ok" and row["object_count"] == 2, row
    mask = tifffile.imread(tmp_path / "results/masks/disks.tif")
    instances = tifffile.imread(tmp_path / "results/instances/disks.tif")
    np.testing.assert_array_equal(mask > 0, objects > 0)
    np.testing.assert_array_equal(instances > 0, objects > 0)  # the contacts given back to the objects
    for found in (1, 2):
        true = np.bincount(objects[instances == found]).argmax()
        overlap = ((instances == found) & (objects == true)).sum() / ((instances == found) | (objects == true)).sum()
        assert overlap > 0.95


def test_membrane_weight_map_counts_cells_with_4_connectivity(tmp_path):
    # Two cells split by a one-pixel diagonal membrane: 8-connected they would be one cell,
    # and the membrane between them would get no border weight.
    membrane = np.eye(32, dtype=bool)
    tifffile.imwrite(tmp_path / "img.tif", membrane.astype(np.float32))
    tifffile.imwrite(tmp_path / "mask.tif", membrane.astype(np.uint8))
    preprocess_sample("m", tmp_path / "img.tif", tmp_path / "m.zarr", mask_path=tmp_path / "mask.tif")
    weights = _plane_weights(open_sample(tmp_path / "m.zarr"), 0, {"w0": 10.0, "sigma": 5.0, "objects": "background"})
    assert weights[membrane].min() > 8  # both cells are 1 px away on every membrane pixel


def test_small_objects_are_dropped_and_ids_stay_consecutive(tmp_path):
    mask = np.zeros((70, 90), np.uint8)
    mask[2:4, 2:4] = 1  # 4 px: a speck
    mask[10:30, 10:30] = 1  # 400 px
    mask[40:45, 60:63] = 1  # 15 px: kept at min_size 15
    mask[50:69, 70:88] = 1  # crosses the block borders below
    for chunk in (16, 1024):
        count = label_components(mask, tmp_path / f"l{chunk}.tif", chunk=chunk, min_size=15)
        labels = tifffile.imread(tmp_path / f"l{chunk}.tif")
        assert count == 3 and sorted(np.unique(labels)) == [0, 1, 2, 3]
        assert labels[3, 3] == 0 and labels[42, 61] > 0 and len(np.unique(labels[50:69, 70:88])) == 1
    assert label_components(mask, tmp_path / "all.tif") == 4


def test_the_same_image_in_two_rows_is_refused_naming_both():
    sheet = pd.DataFrame(
        {
            "sample": ["a", "b", "c"],
            "image": ["img/a.tif", "img/b.tif", "img/./a.tif"],
            "mask": ["m/a.tif", "m/b.tif", "m/a.tif"],
            "split": ["train", "val", "test"],
        }
    )
    with pytest.raises(InputError, match=r"lines 2 and 4: samples 'a' \(train\) and 'c' \(test\)"):
        check_sample_sheet(sheet, "sheet.tsv")


def test_written_masks_record_the_pixel_size(tmp_path):
    from unetseg.inference.masks import write_mask
    from unetseg.io.pixelsize import read_pixel_size

    probabilities = np.random.default_rng(0).random((1, 1, 40, 50)).astype(np.float32)
    write_mask(probabilities, tmp_path / "m.tif", pixel_size=(0.5, 0.25))
    assert read_pixel_size(tmp_path / "m.tif") == pytest.approx((0.5, 0.25))
    with open_image(tmp_path / "m.tif") as mask:
        assert mask.spatial_shape == (40, 50)
    label_components(np.ones((40, 50), np.uint8), tmp_path / "l.tif", pixel_size=(0.5, 0.25))
    assert read_pixel_size(tmp_path / "l.tif") == pytest.approx((0.5, 0.25))


def test_contact_targets_train_a_three_class_model_whose_predictions_are_binary_masks(tmp_path):
    """labels.separate_touching: contact end to end on tiny demo data: preprocessing, patches,
    a softmax head of three, no threshold, and a 0/255 mask with instances from unetseg predict."""
    from unetseg.data.demo import write_demo_dataset
    from unetseg.data.patches import write_patches
    from unetseg.inference.run import InferenceOptions, PredictOutputs, predict_image
    from unetseg.nn.card import read_card
    from unetseg.training.run import train_model

    write_demo_dataset(tmp_path / "data", shape=(64, 64), n_train=2, n_val=1, n_test=0, n_predict=0)
    splits = {"train": [], "val": []}
    for name in ("train_00", "train_01", "val_00"):
        out = tmp_path / f"{name}.zarr"
        image, mask = tmp_path / f"data/images/{name}.tif", tmp_path / f"data/masks/{name}.tif"
        assert preprocess_sample(name, image, out, mask_path=mask, separate="contact")["target"] == "contact"
        splits[name[:-3].rstrip("_")].append(out)
    write_patches(tmp_path / "patches.zarr", splits, patch_size=32, weight_map={"w0": 10.0, "sigma": 5.0})
    train_model(tmp_path / "patches.zarr", tmp_path / "model", model_settings={"depth": 2, "base_channels": 4},
                train_settings={"epochs": 2, "batch_size": 4, "max_minutes": 5}, val_images=splits["val"],
                card={"normalization": {"method": "percentile", "percentiles": [1.0, 99.8]}})  # fmt: skip
    card = read_card(tmp_path / "model")
    assert card["target"] == "contact" and card["architecture"]["out_channels"] == 3
    assert not card["separated_target"] and card["classes"] is None
    outputs = PredictOutputs(str(tmp_path / "mask.tif"), instances=str(tmp_path / "objects.tif"))
    predict_image(str(tmp_path / "model"), str(tmp_path / "data/images/val_00.tif"), outputs, InferenceOptions(tile=32))
    mask, objects = tifffile.imread(tmp_path / "mask.tif"), tifffile.imread(tmp_path / "objects.tif")
    assert set(np.unique(mask)) <= {0, 255} and mask.shape == (64, 64)
    assert not ((objects > 0) & (mask == 0)).any()  # objects only where the mask is
