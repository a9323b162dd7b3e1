"""How reports word things: sizes and extractor names for people (shared by the CLI, the HTML page and the
notebook summary), and text that is safe to write whatever the file names (JSON with lone surrogates
escaped, display text with a non-UTF-8 name's bytes shown as ``\\xff``)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

_SURROGATE = re.compile("[\ud800-\udfff]")


def json_text(data: Any, *, indent: int | None = None, separators: tuple[str, str] | None = None) -> str:
    """``json.dumps`` keeping UTF-8 characters, with every lone surrogate written as its ``\\uXXXX`` escape.

    A file name that is not valid UTF-8 (``x\\xff.jpg``) is held by Python as a surrogate escape
    (``"x\\udcff.jpg"``); written raw it cannot be encoded, escaped it is valid JSON and ``json.loads``
    gives back the very string the OS takes for that file. Reports and manifests are written this way.
    """
    text = json.dumps(data, indent=indent, separators=separators, ensure_ascii=False)
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def display_text(text: str) -> str:
    """``text`` as it can be shown and written as UTF-8: a file name that is not valid UTF-8 (held by Python
    as surrogate escapes) shows its bad bytes as ``\\xff``; any other text is returned unchanged."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


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
