"""Self-contained HTML pages for the report: the data, the metrics tables, the model card.

Snakemake's report embeds HTML items as they are, so each page carries its own small style
sheet and no external resources (it opens offline, from an e-mail or an archive).
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Sequence
from typing import Any

import pandas as pd
import yaml

from unetseg.data.sample import open_sample
from unetseg.io.files import atomic_path
from unetseg.nn.card import read_card

__all__ = ["data_page", "metrics_page", "model_card_page"]

STYLE = """
body { font-family: system-ui, sans-serif; font-size: 14px; margin: 1em; color: #222; }
h1 { font-size: 1.3em; } h2 { font-size: 1.1em; margin-top: 1.5em; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #f2f2f2; } td:first-child, th:first-child { text-align: left; }
pre { background: #f7f7f7; padding: 0.8em; border: 1px solid #ddd; overflow-x: auto; }
p.note { color: #555; max-width: 60em; }
"""


def _page(title: str, body: str) -> str:
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>\n{body}\n</body></html>\n"
    )


def _write(output: str | os.PathLike, text: str) -> None:
    with atomic_path(output) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _table(frame: pd.DataFrame) -> str:
    return frame.to_html(index=False, float_format=lambda v: f"{v:.4g}", na_rep="", border=0)


def data_page(preprocessed: Sequence[str | os.PathLike], splits: Sequence[str], output: str | os.PathLike) -> None:
    """One table row per sample: split, files, axes, shape, channels, foreground fraction.

    Parameters
    ----------
    preprocessed : sequence of path-like
        Preprocessed samples (Zarr groups).
    splits : sequence of str
        The split of each, same order.
    """
    rows = []
    for path, split in zip(preprocessed, splits, strict=True):
        if not os.path.exists(path):  # a test or predict image that failed to segment
            continue
        attrs = open_sample(path).attrs
        rows.append({
            "sample": attrs["sample"], "split": split, "image": attrs["image"], "mask": attrs["mask"] or "",
            "axes": attrs["source_axes"], "shape": "x".join(map(str, attrs["spatial_shape"])),
            "channels": attrs["channels"], "dtype": attrs["source_dtype"],
            "foreground fraction": attrs.get("foreground_fraction"),
        })  # fmt: skip
    table = pd.DataFrame(rows)
    counts = table.groupby("split", sort=False).size() if rows else pd.Series(dtype=int)
    summary = ", ".join(f"{n} {split}" for split, n in counts.items())
    note = (
        f"<p class='note'>{len(rows)} images ({html.escape(summary)}). Foreground fraction: share of "
        "ground-truth pixels that count as foreground after <code>labels.foreground</code>.</p>"
    )
    _write(output, _page("Data", note + _table(table)))


def metrics_page(summary: dict[str, Any], output: str | os.PathLike) -> None:
    """Statistics over the test split, pooled object matching, and the per-image scores.

    Parameters
    ----------
    summary : dict
        As :func:`unetseg.evaluation.evaluate`.
    """
    from unetseg.evaluation.evaluate import metrics_table

    boot = summary["bootstrap"]
    stats = metrics_table(summary)
    objects = pd.DataFrame(summary["instances"])
    per_image = pd.DataFrame(summary["per_image"])
    body = (
        f"<p class='note'>{summary['n_images']} test image(s). Mean, sample standard deviation, median "
        f"and a bootstrap {boot['confidence']:.0%} confidence interval of the mean ({boot['resamples']} "
        f"resamples of the images, seed {boot['seed']}); <i>n</i> counts the images where the score is "
        "defined and finite.</p>"
        + _table(stats)
        + "<h2>Objects, pooled over the test images</h2><p class='note'>Predicted objects are the "
        "connected components of the prediction; a pair matches when its IoU reaches the threshold. "
        "AP = TP / (TP + FP + FN) as in the Data Science Bowl 2018; PQ is the panoptic quality.</p>"
        + _table(objects)
        + _per_class(summary)
        + "<h2>Per image</h2>"
        + _table(per_image)
    )
    _write(output, _page("Metrics", body))


def _per_class(summary: dict[str, Any]) -> str:
    """The per-class section of the metrics page (multi-class runs), else nothing."""
    if not summary.get("per_class"):
        return ""
    rows = [
        {"class": name, **{k: v for k, v in scores.items() if k != "pooled"},
         **{f"pooled_{k}": v for k, v in scores["pooled"].items()}}
        for name, scores in summary["per_class"].items()
    ]  # fmt: skip
    unlisted = sum(int(r.get("unlisted_pixels", 0)) for r in summary["per_image"])
    note = (
        f" {unlisted} ground-truth pixel(s) held mask values that no class lists and counted as background "
        "(per image: <code>unlisted_pixels</code>)."
        if unlisted
        else ""
    )
    return (
        "<h2>Classes</h2><p class='note'>Each class against the rest: the mean over the test images, and "
        f"the scores of the pooled pixels (<code>pooled_</code>).{note}</p>" + _table(pd.DataFrame(rows))
    )


def model_card_page(model_dir: str | os.PathLike, output: str | os.PathLike) -> None:
    """The model card as a page: scalar sections as tables, nested ones as YAML.

    Sections: architecture, normalisation, threshold, labels, training data and outcome,
    the full workflow config, and the versions of Python and the packages that made it.
    """
    card = read_card(model_dir)
    scalars = {k: v for k, v in card.items() if not isinstance(v, dict | list)}
    parts = [_table(pd.DataFrame({"key": list(scalars), "value": [str(v) for v in scalars.values()]}))]
    for key, value in card.items():
        if key in scalars:
            continue
        flat = isinstance(value, dict) and all(not isinstance(v, dict | list) for v in value.values())
        content = (
            _table(pd.DataFrame({"key": list(value), "value": [str(v) for v in value.values()]}))
            if flat
            else f"<pre>{html.escape(yaml.safe_dump(json.loads(json.dumps(value)), sort_keys=False))}</pre>"
        )
        parts.append(f"<h2>{html.escape(key)}</h2>{content}")
    _write(output, _page(f"Model card: {model_dir}", "\n".join(parts)))
