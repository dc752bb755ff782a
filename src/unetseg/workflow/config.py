"""Checks of the workflow configuration with messages a user can act on.

Snakemake's own ``validate`` reports a JSON Schema error with the whole config attached;
:func:`check_config` runs first and says which key is wrong, what it should be, and, for a
misspelt key, which known key was probably meant.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from unetseg.data.masks import check_classes
from unetseg.errors import InputError

__all__ = ["check_config", "coerce_scalars", "config_errors"]

_TYPES = {"integer": int, "number": (int, float), "boolean": bool}


def _location(path: Any) -> str:
    return ".".join(str(part) for part in path) or "(top level)"


def _schema_at(schema: dict[str, Any], path: Any) -> dict[str, Any]:
    for part in path:
        schema = schema.get("properties", {}).get(part, {}) if isinstance(part, str) else schema.get("items", {})
    return schema


def _message(error: jsonschema.ValidationError, schema: dict[str, Any]) -> list[str]:
    where = _location(error.absolute_path)
    if error.validator == "additionalProperties":
        known = sorted(_schema_at(schema, error.absolute_path).get("properties", {}))
        unknown = sorted(set(error.instance) - set(known))
        messages = []
        for key in unknown:
            key_path = f"{where}.{key}" if error.absolute_path else key
            close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
            hint = f"did you mean '{close[0]}'?" if close else f"known keys here: {', '.join(known)}"
            messages.append(f"unknown key '{key_path}'; {hint}")
        return messages
    description = _schema_at(schema, error.absolute_path).get("description", "").strip()
    about = f" ({description})" if description else ""
    text = error.message
    if error.validator in ("oneOf", "anyOf") and error.context:
        # A number or 'auto': say what is wrong with the number, and that auto is allowed.
        specific = [e for e in error.context if e.validator != "const"]
        if specific and any(e.validator == "const" for e in error.context):
            text = f"{specific[0].message} (or 'auto')"
    return [f"key '{where}': {text}{about}"]


def coerce_scalars(config: Any, schema: dict[str, Any]) -> Any:
    """Turn strings into the numbers and booleans the schema expects, in place.

    Snakemake's ``--config 'train={epochs: 5}'`` delivers nested values as strings; they are
    read as YAML scalars where the schema wants a number or a boolean.
    """
    if isinstance(config, dict):
        for key, value in config.items():
            sub = schema.get("properties", {}).get(key, {})
            # A number-or-'auto' key (oneOf) takes the type of its first typed alternative.
            kind = next(
                (t for t in (sub.get("type"), *(a.get("type") for a in sub.get("oneOf", []))) if t in _TYPES), None
            )
            if isinstance(value, str) and kind and value != "auto":
                parsed = yaml.safe_load(value)
                if isinstance(parsed, _TYPES[kind]) and not (kind != "boolean" and isinstance(parsed, bool)):
                    config[key] = parsed
            else:
                coerce_scalars(value, sub)
    elif isinstance(config, list):
        for i, value in enumerate(config):
            items = schema.get("items", {})
            if isinstance(value, str) and items.get("type") in _TYPES:
                parsed = yaml.safe_load(value)
                if isinstance(parsed, _TYPES[items["type"]]) and not isinstance(parsed, bool):
                    config[i] = parsed
            else:
                coerce_scalars(value, items)
    return config


def config_errors(config: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    """Every problem of ``config`` against ``schema``, one readable line each."""
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: [str(p) for p in e.absolute_path])
    return [line for error in errors for line in _message(error, schema)]


def check_config(config: dict[str, Any], schema_path: str | os.PathLike, *, source: str = "config") -> None:
    """Raise :class:`InputError` listing every problem of ``config``, or return quietly.

    Strings standing for numbers or booleans are converted first (:func:`coerce_scalars`).
    """
    with open(schema_path) as handle:
        schema = yaml.safe_load(handle)
    coerce_scalars(config, schema)
    problems = config_errors(config, schema)
    if problems:
        listing = "\n  - ".join(problems)
        # The workflow's own config/README.md, by a path that works from any directory (a
        # workflow run with `snakemake -s /path/to/unetseg/Snakefile` from a project elsewhere).
        readme = Path(schema_path).resolve().parents[2] / "config" / "README.md"
        raise InputError(
            f"{source}: {len(problems)} problem(s):\n  - {listing}\n"
            f"Fix them in your config file (keys and defaults: {readme if readme.is_file() else 'config/README.md'})."
        )
    inference = config.get("inference") or {}
    if inference.get("border") == "none" and (config.get("model") or {}).get("padding") == "valid":
        raise InputError(
            f"{source}: inference.border 'none' adds no context beyond the image, which a valid-padded "
            "network (model.padding: valid) needs; set inference.border: mirror, or model.padding: same."
        )
    if inference.get("border") == "none" and inference.get("blend") == "gaussian":
        raise InputError(
            f"{source}: inference.blend 'gaussian' overlaps tiles beyond the image, which inference.border "
            "'none' does not allow; set inference.border: mirror, or inference.blend: none."
        )
    labels = config.get("labels") or {}
    if labels.get("classes"):
        check_classes(labels["classes"], key=f"{source}: labels.classes")
        if labels.get("foreground", "nonzero") != "nonzero":
            raise InputError(
                f"{source}: labels.classes and labels.foreground {labels['foreground']!r} are both set; "
                "with classes, the classes say which values are foreground: remove labels.foreground."
            )
