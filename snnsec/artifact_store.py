"""Content-addressed artifacts of a results folder: ``<out>/artifacts/<sha256>.safetensors`` with a JSON card
``<sha256>.json`` (architecture, config, input spec, digest), each with the digest file every snnsec file has
(so an edited card is noticed too).
Nothing is pickled.

A bench publishes the models its runs used (``Workspace.publish_artifacts``): the record then names the
published file, whose name is its content's digest, so a results folder carries (and ``snnsec verify``
checks) the exact weights behind each row, independent of the cache that trained them. The same weights
are stored once, however many runs use them.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from snnsec import integrity
from snnsec.integrity import DamagedFileError

STORE = "artifacts"


def publish(out_dir: Path, path: Path) -> Path:
    """Store the model file ``path`` (checked against its digest first) in ``out_dir``'s content store with
    its card; returns the stored path (``out_dir/artifacts/<sha256>.safetensors``)."""
    from snnsec.artifacts import read_card

    path = Path(path)
    why = integrity.problem(path)
    if why is not None:
        raise DamagedFileError(f"model file {path} {why}; it is not published")
    digest = integrity.digest_path(path).read_text().split()[0]
    dest = Path(out_dir) / STORE / f"{digest}{path.suffix}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    with integrity.locked(dest.parent):
        integrity.sweep_temps(dest.parent)  # left by a publish that was killed
        if not (dest.exists() and integrity.sha256_file(dest) == digest):
            tmp = integrity.temp_path(dest)
            try:
                shutil.copyfile(path, tmp)
                if integrity.sha256_file(tmp) != digest:
                    raise DamagedFileError(f"model file {path} changed while it was published; run again")
                os.chmod(tmp, 0o644)
                integrity.commit(tmp, dest)  # with its .sha256, as every file snnsec reads back
            finally:
                tmp.unlink(missing_ok=True)
        card, card_file = card_for(read_card(path), digest, dest), dest.with_suffix(".json")
        text = json.dumps(card, indent=1, sort_keys=True)
        if not (card_file.exists() and integrity.problem(card_file) is None and card_file.read_text() == text):
            tmp = integrity.temp_path(card_file)
            try:
                tmp.write_text(text)
                integrity.commit(tmp, card_file)  # with its .sha256: verify notices an edited card
            finally:
                tmp.unlink(missing_ok=True)
    return dest


def card_for(card: dict[str, Any], digest: str, dest: Path) -> dict[str, Any]:
    """The published card: what the model is (architecture), what trained it (config), its input spec and
    the SHA-256 of its weights file."""
    architecture = {"model": card.get("model"), "model_config": card.get("model_config")}
    config = {k: v for k, v in card.items() if k not in ("model", "model_config", "input_spec")}
    return {"file": dest.name, "sha256": digest, "bytes": dest.stat().st_size, "format": "safetensors",
            "architecture": architecture, "input_spec": card.get("input_spec"), "config": config}


def recorded_artifacts(publish_to: Path | None, artifacts: dict[str, Path | str]) -> dict[str, str]:
    """A record's artifacts as strings; with ``publish_to`` (a results folder), model files are published
    there and the record names the published copies."""
    out: dict[str, str] = {}
    for name, path in artifacts.items():
        path = Path(path)
        if publish_to is not None and path.suffix == ".safetensors":
            path = publish(publish_to, path)
        out[name] = str(path)
    return out


def published_file(recorded: Path, out_dir: Path) -> Path:
    """The published file a record names (as recorded, else in ``out_dir``'s store, e.g. after the folder
    moved), checked against the digest that is its name; one line when missing or damaged."""
    path = recorded if recorded.is_file() else Path(out_dir) / STORE / recorded.name
    if not path.is_file():
        raise DamagedFileError(f"published artifact {recorded.name} is in neither {recorded.parent} nor "
                               f"{Path(out_dir) / STORE}")
    actual = integrity.sha256_file(path)
    if actual != path.stem:
        raise DamagedFileError(f"published artifact {path} is damaged (sha256 {actual[:12]}..., its name says "
                               f"{path.stem[:12]}...)")
    return path


def check_store(out_dir: Path) -> list[str]:
    """Problems with ``out_dir``'s content store: a file whose content is not its name's digest, or whose
    card does not match it. Empty when all is well (or there is no store)."""
    problems = []
    folder = Path(out_dir) / STORE
    for path in sorted(folder.glob("*.safetensors")) if folder.is_dir() else []:
        if integrity.orphaned_temp(path) is not None:  # a publish in progress, or killed (its next one sweeps it)
            continue
        actual = integrity.sha256_file(path)
        if actual != path.stem:
            problems.append(f"{path}: content sha256 {actual[:12]}... does not match its name")
            continue
        card_file = path.with_suffix(".json")
        try:
            card = json.loads(card_file.read_text())
        except (OSError, ValueError) as err:
            problems.append(f"{card_file}: card missing or unreadable ({integrity.describe(err)})")
            continue
        why = integrity.problem(card_file) if integrity.digest_path(card_file).exists() else None  # older: none
        if why is not None:
            problems.append(f"{card_file}: card {why}")
            continue
        if card.get("sha256") != actual or card.get("file") != path.name:
            problems.append(f"{path.with_suffix('.json')}: card names another file or digest")
    return problems


def locate(recorded: str, folder: Path) -> Path | None:
    """Where an artifact a record names is now: for the folder's own files (``artifacts/``, ``runs/``),
    the file in ``folder`` (it may have moved, or been cloned elsewhere); else its recorded path. None if
    it is not there."""
    path = Path(recorded)
    if path.parent.name in (STORE, "runs"):
        path = folder / path.parent.name / path.name
    return path if path.is_file() else None
