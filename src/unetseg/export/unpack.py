"""Use a bioimage.io package written by ``unetseg export`` as a unetseg model directory.

:func:`open_exported` turns such a package (the ``.zip``, or the folder it unzips to) into
the ``weights.pt`` + ``card.json`` directory that :func:`unetseg.load_model` and
``unetseg predict --model`` read, in a cache folder beside it (``NAME.zip.model``). The
original ``card.json`` and ``weights.pt`` travel in the package (the card as an
attachment), so the round trip is byte-exact. Only the package's YAML, ``zipfile`` and
SHA-256 are needed: neither bioimageio.spec nor torch is imported here.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from unetseg.errors import InputError
from unetseg.nn.card import CARD, WEIGHTS, read_card

__all__ = ["open_exported", "is_package", "CONFIG_KEY", "RDF_NAMES", "ARCHITECTURE"]

CONFIG_KEY = "unetseg"  # config.unetseg of the package's bioimageio.yaml marks our packages
RDF_NAMES = ("bioimageio.yaml", "rdf.yaml")
ARCHITECTURE = {"callable": "UNet", "import_from": "unetseg.nn.model"}
_SOURCE = "package.json"  # in the cache folder: which package (and its SHA-256) it was built from
_BLOCK = 1 << 20


def is_package(path: str | os.PathLike) -> bool:
    """True for a ``.zip`` file or a folder holding a bioimage.io description."""
    path = Path(path)
    if path.is_dir():
        return any((path / name).is_file() for name in RDF_NAMES)
    return path.suffix.lower() == ".zip"


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def _sha256_folder(path: Path) -> str:
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        digest.update(_sha256_file(file).encode())
    return digest.hexdigest()


class _Package:
    """Read access to the files of a package, zipped or unzipped."""

    def __init__(self, path: Path):
        self.path = path
        self._zip: zipfile.ZipFile | None = None
        if path.is_dir():
            self.names = {p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()}
        else:
            try:
                self._zip = zipfile.ZipFile(path)
            except (zipfile.BadZipFile, OSError) as err:
                raise InputError(
                    f"{path}: not a readable zip file ({err}); give the .zip that `unetseg export` wrote, "
                    "or a model directory."
                ) from None
            self.names = set(self._zip.namelist())

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()

    def read(self, name: str) -> bytes:
        name = PurePosixPath(name).as_posix().removeprefix("./")
        if name not in self.names:
            raise InputError(
                f"{self.path}: the package lists {name} but does not contain it; export the model again "
                "with `unetseg export`."
            )
        if self._zip is not None:
            return self._zip.read(name)
        return (self.path / name).read_bytes()


def _description(package: _Package) -> tuple[str, dict[str, Any]]:
    rdf = next((name for name in RDF_NAMES if name in package.names), None)
    if rdf is None:
        rdf = next((name for name in sorted(package.names) if name.endswith(".bioimageio.yaml")), None)
    if rdf is None:
        raise InputError(
            f"{package.path}: not a bioimage.io package (no bioimageio.yaml inside); give a package written "
            "by `unetseg export`, or a model directory (results/<dataset>/model)."
        )
    try:
        content = yaml.safe_load(package.read(rdf))
    except yaml.YAMLError as err:
        raise InputError(f"{package.path}: {rdf} is not valid YAML ({err}); export the model again.") from None
    if not isinstance(content, dict):
        raise InputError(f"{package.path}: {rdf} is not a bioimage.io description; export the model again.")
    return rdf, content


def _check_ours(path: Path, content: dict[str, Any]) -> dict[str, Any]:
    """The ``config.unetseg`` entry of a package unetseg wrote; raise for any other package."""
    weights = (content.get("weights") or {}).get("pytorch_state_dict") or {}
    architecture = weights.get("architecture") or {}
    ours = (content.get("config") or {}).get(CONFIG_KEY)
    kind = content.get("type")
    if kind != "model" or not isinstance(ours, dict) or any(architecture.get(k) != v for k, v in ARCHITECTURE.items()):
        what = (
            f"a bioimage.io {kind or 'resource'} ({content.get('name', 'unnamed')!r}"
            + (
                f", architecture {architecture.get('import_from', '?')}.{architecture.get('callable', '?')}"
                if architecture
                else ", no pytorch_state_dict weights"
            )
            + ")"
        )
        raise InputError(
            f"{path}: {what} that unetseg did not export; unetseg predicts only with its own U-Nets, so run "
            "this package with bioimage.io software (bioimageio.core, deepImageJ, ilastik) or train a unetseg model."
        )
    return {"card": ours.get("card", CARD), "weights": weights.get("source"), "sha256": weights.get("sha256"),
            "attachments": {a.get("source"): a.get("sha256") for a in content.get("attachments") or []
                            if isinstance(a, dict)}}  # fmt: skip


def _verified(package: _Package, name: str | None, sha256: str | None, what: str) -> bytes:
    if not name:
        raise InputError(f"{package.path}: the package names no {what}; export the model again with `unetseg export`.")
    data = package.read(name)
    if sha256 and hashlib.sha256(data).hexdigest() != sha256:
        raise InputError(
            f"{package.path}: {name} does not match its SHA-256 in the package (damaged file?); copy or "
            "export the package again."
        )
    return data


def _cache_is_current(cache: Path, fingerprint: str) -> bool:
    try:
        recorded = json.loads((cache / _SOURCE).read_text())
    except (OSError, ValueError):
        return False
    return recorded.get("sha256") == fingerprint and (cache / CARD).is_file() and (cache / WEIGHTS).is_file()


def open_exported(path: str | os.PathLike) -> Path:
    """The unetseg model directory of ``path``: itself, or rebuilt from a unetseg bioimage.io package.

    Parameters
    ----------
    path : path-like
        A model directory (``weights.pt`` + ``card.json``, returned as it is), a ``.zip``
        written by ``unetseg export``, or the folder such a zip unzips to.

    Returns
    -------
    Path
        A model directory. For a package: ``NAME.model`` beside it (``model.zip`` ->
        ``model.zip.model``), holding the exported ``weights.pt`` and ``card.json`` byte
        for byte (plus ``history.csv`` if it was exported). It is rebuilt only when the
        package changes (its SHA-256 is recorded), and replaced atomically.

    Raises
    ------
    InputError
        One line naming the file and what to do: the path does not exist, is neither a model
        directory nor a bioimage.io package, is a package unetseg did not write (another
        architecture), or is damaged (a file missing or not matching its SHA-256).
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such model directory or package; check the path.")
    if path.is_dir() and (path / CARD).is_file():
        return path
    if not is_package(path):
        raise InputError(
            f"{path}: neither a unetseg model directory (weights.pt + card.json) nor a bioimage.io package "
            "(.zip); give results/<dataset>/model or the .zip that `unetseg export` wrote."
        )
    fingerprint = _sha256_folder(path) if path.is_dir() else _sha256_file(path)
    cache = path.with_name(f"{path.name}.model")
    if _cache_is_current(cache, fingerprint):
        return cache
    package = _Package(path)
    try:
        _, content = _description(package)
        ours = _check_ours(path, content)
        card = _verified(package, ours["card"], ours["attachments"].get(ours["card"]), "model card (card.json)")
        weights = _verified(package, ours["weights"], ours["sha256"], "pytorch_state_dict weights")
        extras = {
            name: _verified(package, name, sha, name)
            for name, sha in ours["attachments"].items()
            if name and name != ours["card"] and PurePosixPath(name).name == "history.csv"
        }
    finally:
        package.close()
    tmp = cache.with_name(f".{cache.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.mkdir(parents=True)
        (tmp / CARD).write_bytes(card)
        (tmp / WEIGHTS).write_bytes(weights)
        for name, data in extras.items():
            (tmp / PurePosixPath(name).name).write_bytes(data)
        (tmp / _SOURCE).write_text(json.dumps({"package": str(path), "sha256": fingerprint}, indent=2) + "\n")
        try:
            read_card(tmp)
        except InputError as err:  # a card of another unetseg format: say so about the package
            message = str(err).replace(str(tmp / CARD), f"{path} (its card.json)")
            raise InputError(message) from None
        try:
            os.rename(tmp, cache)  # fails if another process put a cache there meanwhile
        except OSError:
            if not _cache_is_current(cache, fingerprint):
                shutil.rmtree(cache, ignore_errors=True)
                os.replace(tmp, cache)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return cache
