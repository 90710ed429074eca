"""The Flower app project (``fedsurv-query/``) and its bundle's identity.

The bundle (FAB) that ``flwr build`` makes of the project is deterministic, so a site can
compute the hash it pins from the reviewed project installed with its own fedsurv.
"""

from __future__ import annotations

import hashlib
from importlib.resources import files
from pathlib import Path


def app_dir() -> Path:
    """The Flower app project directory shipped with fedsurv."""
    return Path(str(files("fedsurv") / "flower_app" / "fedsurv-query"))


def build_fab(app: Path | None = None) -> bytes:
    """The bundle bytes exactly as ``flwr build`` / ``flwr run`` make them."""
    from flwr.cli.build import build_fab_from_disk

    return build_fab_from_disk(app or app_dir())


def fab_hash(app: Path | None = None) -> str:
    """SHA-256 (hex) of the bundle: the value a site pins in ``allowed_fab_hashes``."""
    return hashlib.sha256(build_fab(app)).hexdigest()
