"""How reports word things for people: sizes and extractor names (shared by the CLI, the HTML page and the
notebook summary)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def human_bytes(n: float) -> str:
    """``1834242`` -> ``"1.8 MB"`` (powers of 1000, as file managers show sizes)."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"


def extractor_label(extractor: Mapping[str, Any]) -> str:
    """The extractor of a report as shown to people: ``"phash+thumb+color (fallback for vgg16)"``."""
    name = str(extractor.get("name", "?"))
    if extractor.get("fallback_used"):
        name += f" (fallback for {extractor.get('requested')})"
    return name
