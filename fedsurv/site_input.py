"""What a local run needs to know of one site: its files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SiteInput:
    """One site of a local run: its data file, and optionally its mapping and policy."""

    name: str
    data: Path
    mapping: Path | None = None
    policy: Path | None = None
