"""Small line charts without a plotting dependency: SVG text, or PNG drawn with Pillow.

A chart is a list of :class:`Panel` stacked vertically. Both back ends draw the same list of primitive
shapes computed once by :func:`_layout`, so the SVG and the PNG show the same thing.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dedup.errors import InputError

PLOT_FORMATS = (".svg", ".png")
PALETTE = ("#1f77b4", "#ff7f0e", "#9467bd", "#2ca02c", "#d62728", "#7f7f7f")


@dataclass(frozen=True)
class Series:
    """One line: ``ys[i]`` at ``xs[i]``; ``None`` values leave a gap."""

    label: str
    xs: Sequence[float]
    ys: Sequence[float | None]
    colour: str = PALETTE[0]


@dataclass(frozen=True)
class Marker:
    """A vertical line at ``x`` (``y`` None) or a dot at ``(x, y)``, with a label."""

    x: float
    label: str
    colour: str = PALETTE[3]
    y: float | None = None
    dashed: bool = False


@dataclass(frozen=True)
class Panel:
    title: str
    xlabel: str
    series: Sequence[Series]
    markers: Sequence[Marker] = field(default_factory=tuple)


WIDTH, PANEL_HEIGHT = 820, 280
_LEFT, _RIGHT, _TOP, _BOTTOM = 70, 170, 34, 44

Op = tuple[Any, ...]


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / (n - 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=raw)
    first = math.ceil(lo / step - 1e-9) * step
    out = []
    v = first
    while v <= hi + 1e-9 * max(1.0, abs(hi)):
        out.append(round(v, 10))
        v += step
    return out


def _fmt(v: float) -> str:
    if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
        return f"{v:.1e}"
    return f"{v:.3f}".rstrip("0").rstrip(".") if abs(v) < 100 else f"{v:.0f}"


def _layout(panels: Sequence[Panel]) -> tuple[int, int, list[Op]]:
    """``(width, height, ops)``; ops: ("line", x1, y1, x2, y2, colour, width, dashed), ("text", x, y, text,
    anchor, size, colour), ("poly", [(x, y), ...], colour), ("dot", x, y, r, colour), ("rect", x, y, w, h)."""
    ops: list[Op] = []
    height = PANEL_HEIGHT * len(panels)
    x0, x1 = _LEFT, WIDTH - _RIGHT
    for k, panel in enumerate(panels):
        top = k * PANEL_HEIGHT
        y0, y1 = top + _TOP, top + PANEL_HEIGHT - _BOTTOM
        xs = [float(x) for s in panel.series for x in s.xs] + [m.x for m in panel.markers]
        ys = [float(y) for s in panel.series for y in s.ys if y is not None]
        ys += [m.y for m in panel.markers if m.y is not None]
        xlo, xhi = (min(xs), max(xs)) if xs else (0.0, 1.0)
        ylo, yhi = (min(ys + [0.0]), max(ys)) if ys else (0.0, 1.0)
        if xhi <= xlo:
            xlo, xhi = xlo - 0.5, xhi + 0.5
        if yhi <= ylo:
            yhi = ylo + 1.0
        yhi += (yhi - ylo) * 0.05

        def px(x: float, xlo: float = xlo, xhi: float = xhi) -> float:
            return x0 + (x - xlo) / (xhi - xlo) * (x1 - x0)

        def py(y: float, ylo: float = ylo, yhi: float = yhi, y0: int = y0, y1: int = y1) -> float:
            return y1 - (y - ylo) / (yhi - ylo) * (y1 - y0)

        ops.append(("text", x0, top + 20, panel.title, "start", 14, "#111"))
        ops.append(("rect", x0, y0, x1 - x0, y1 - y0))
        for t in _ticks(ylo, yhi):
            ops.append(("line", x0, py(t), x1, py(t), "#e3e3e3", 1, False))
            ops.append(("text", x0 - 6, py(t) + 4, _fmt(t), "end", 11, "#444"))
        for t in _ticks(xlo, xhi, 7):
            ops.append(("line", px(t), y1, px(t), y1 + 4, "#444", 1, False))
            ops.append(("text", px(t), y1 + 17, _fmt(t), "middle", 11, "#444"))
        ops.append(("text", (x0 + x1) / 2, y1 + 35, panel.xlabel, "middle", 12, "#222"))
        legend_y = y0 + 6
        for s in panel.series:
            run: list[tuple[float, float]] = []
            for x, y in zip(s.xs, s.ys, strict=True):
                if y is None:
                    if len(run) > 1:
                        ops.append(("poly", run, s.colour))
                    run = []
                    continue
                run.append((px(float(x)), py(float(y))))
            if len(run) > 1:
                ops.append(("poly", run, s.colour))
            elif len(run) == 1:
                ops.append(("dot", run[0][0], run[0][1], 3, s.colour))
            ops.append(("line", x1 + 12, legend_y, x1 + 34, legend_y, s.colour, 3, False))
            ops.append(("text", x1 + 40, legend_y + 4, s.label, "start", 11, "#222"))
            legend_y += 18
        for m in panel.markers:
            if m.y is None:
                ops.append(("line", px(m.x), y0, px(m.x), y1, m.colour, 2, m.dashed))
            else:
                ops.append(("dot", px(m.x), py(m.y), 5, m.colour))
            ops.append(("line", x1 + 12, legend_y, x1 + 34, legend_y, m.colour, 2, m.dashed))
            ops.append(("text", x1 + 40, legend_y + 4, m.label, "start", 11, "#222"))
            legend_y += 18
    return WIDTH, height, ops


def to_svg(panels: Sequence[Panel]) -> str:
    """The panels as a standalone SVG document."""
    width, height, ops = _layout(panels)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif">',
        f'<rect width="{width}" height="{height}" fill="#fff"/>',
    ]
    for op in ops:
        kind = op[0]
        if kind == "line":
            _, xa, ya, xb, yb, colour, w, dashed = op
            dash = ' stroke-dasharray="6 4"' if dashed else ""
            out.append(
                f'<line x1="{xa:.1f}" y1="{ya:.1f}" x2="{xb:.1f}" y2="{yb:.1f}" stroke="{colour}" '
                f'stroke-width="{w}"{dash}/>'
            )
        elif kind == "text":
            _, x, y, text, anchor, size, colour = op
            out.append(
                f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" font-size="{size}" '
                f'fill="{colour}">{html.escape(text)}</text>'
            )
        elif kind == "poly":
            _, pts, colour = op
            points = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
            out.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2"/>')
        elif kind == "dot":
            _, x, y, r, colour = op
            out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{r}" fill="{colour}"/>')
        elif kind == "rect":
            _, x, y, w, h = op
            out.append(f'<rect x="{x}" y="{y}" width="{w}" height="{h}" fill="none" stroke="#999"/>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def to_png(panels: Sequence[Panel]) -> bytes:
    """The panels drawn with Pillow (its built-in font), as PNG bytes."""
    import io

    from PIL import Image, ImageDraw, ImageFont

    width, height, ops = _layout(panels)
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    fonts: dict[int, Any] = {}

    def font(size: int) -> Any:
        if size not in fonts:
            try:
                fonts[size] = ImageFont.load_default(size=size)
            except TypeError:  # Pillow < 10.1: one bitmap size
                fonts[size] = ImageFont.load_default()
        return fonts[size]

    for op in ops:
        kind = op[0]
        if kind == "line":
            _, xa, ya, xb, yb, colour, w, dashed = op
            if dashed:
                length = math.hypot(xb - xa, yb - ya)
                steps = max(1, int(length // 10))
                for i in range(steps):
                    a, b = i / steps, min(1.0, (i + 0.6) / steps)
                    seg = [(xa + (xb - xa) * a, ya + (yb - ya) * a), (xa + (xb - xa) * b, ya + (yb - ya) * b)]
                    draw.line(seg, fill=colour, width=w)
            else:
                draw.line([(xa, ya), (xb, yb)], fill=colour, width=w)
        elif kind == "text":
            _, x, y, text, anchor, size, colour = op
            pil_anchor = {"start": "ls", "middle": "ms", "end": "rs"}[anchor]
            draw.text((x, y), text, fill=colour, font=font(size), anchor=pil_anchor)
        elif kind == "poly":
            _, pts, colour = op
            draw.line(pts, fill=colour, width=2, joint="curve")
        elif kind == "dot":
            _, x, y, r, colour = op
            draw.ellipse([x - r, y - r, x + r, y + r], fill=colour)
        elif kind == "rect":
            _, x, y, w, h = op
            draw.rectangle([x, y, x + w, y + h], outline="#999")
    buf = io.BytesIO()
    image.save(buf, "PNG", optimize=True)
    return buf.getvalue()


def check_plot_destination(path: str | Path) -> Path:
    """Validate a plot destination (``.svg`` or ``.png``, existing writable folder) before long work.

    Raises:
        InputError: unsupported extension or missing folder.
    """
    p = Path(path)
    if p.suffix.lower() not in PLOT_FORMATS:
        raise InputError(f"plot {p}: unsupported format {p.suffix or '(none)'}; use .svg or .png")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"cannot write plot {p}: folder {parent} does not exist")
    return p


def write_plot(panels: Sequence[Panel], path: str | Path) -> Path:
    """Write the panels as SVG or PNG, by the extension of ``path``.

    Raises:
        InputError: unsupported extension, or the file cannot be written.
    """
    p = check_plot_destination(path)
    try:
        if p.suffix.lower() == ".svg":
            p.write_text(to_svg(panels), encoding="utf-8")
        else:
            p.write_bytes(to_png(panels))
    except OSError as e:
        raise InputError(f"cannot write plot {p}: {e.strerror or e}") from e
    return p
