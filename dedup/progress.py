"""Progress of long calls: the phase names every ``progress(phase, done, total)`` callback receives, and
:class:`NotebookProgress`, a callback that draws one bar per phase in a Jupyter notebook.

The library never prints; a caller passes a callback. The CLI passes its rich bars
(:class:`dedup.cli.common.ProgressReporter`); in a notebook pass ``NotebookProgress()``::

    from dedup import find_duplicates
    from dedup.progress import NotebookProgress
    result = find_duplicates(["photos/"], progress=NotebookProgress())
    result            # a compact HTML summary with the first groups' thumbnails
"""

from __future__ import annotations

import html
import time
from collections.abc import Callable
from typing import Any

#: Phase name -> what it is called on screen.
PHASES = {
    "discover": "Discovering files",
    "extract": "Decoding + extracting",
    "index": "Building neighbour graph",
    "keypoints": "Computing keypoints",
    "verify": "Verifying candidate pairs",
    "calibrate": "Calibrating thresholds",
    "cluster": "Clustering",
    "map": "Laying out the map",
    "thumbnails": "Making thumbnails",
    "tune": "Sweeping thresholds",
    "apply": "Applying operations",
    "undo": "Undoing",
    "grouping": "Clustering collection",
}


class _Html:
    """Something Jupyter displays as HTML (any object with ``_repr_html_``)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def _repr_html_(self) -> str:
        return self.text


def _ipython_display() -> Callable[..., Any] | None:
    try:
        from IPython.display import display
    except ImportError:
        return None
    return display


class NotebookProgress:
    """A ``progress(phase, done, total)`` callback for Jupyter: one progress bar per phase, updated in place.

    With ipywidgets installed it uses ``IntProgress`` widgets; otherwise one HTML block (``<progress>``
    elements) refreshed in place through a display handle. Outside IPython (no ``IPython.display``) it
    does nothing -- it never prints.

    Args:
        display: the display function (``IPython.display.display`` when omitted); called as
            ``display(obj, display_id=True)`` and must return a handle with ``update(obj)``.
        interval: seconds between two refreshes of the HTML block (the last state is always drawn).
        widgets: use ipywidgets when they can be imported (False = always the HTML block).
    """

    def __init__(
        self,
        *,
        display: Callable[..., Any] | None = None,
        interval: float = 0.25,
        widgets: bool = True,
    ) -> None:
        self.display = display
        self.interval = interval
        self.widgets = widgets
        self.phases: dict[str, tuple[int, int | None]] = {}
        self._handle: Any = None
        self._bars: dict[str, Any] = {}
        self._box: Any = None
        self._last = 0.0
        self._started = False
        self._off = False

    def __call__(self, phase: str, done: int, total: int | None) -> None:
        self.phases[phase] = (done, total)
        if self._off:
            return
        if not self._started:
            self._start()
            if self._off:
                return
        if self._box is not None:
            self._widget(phase, done, total)
            return
        now = time.monotonic()
        finished = total is not None and done >= total
        if finished or now - self._last >= self.interval:
            self._last = now
            self._handle.update(_Html(self.html()))

    def _start(self) -> None:
        self._started = True
        given = self.display
        display = given or _ipython_display()
        if display is None:
            self._off = True
            return
        self.display = display
        if self.widgets and given is None:
            try:
                import ipywidgets

                self._box = ipywidgets.VBox([])
                display(self._box)
                return
            except ImportError:
                self._box = None
        self._handle = display(_Html(self.html()), display_id=True)
        if self._handle is None:
            self._off = True

    def _widget(self, phase: str, done: int, total: int | None) -> None:
        import ipywidgets

        bar = self._bars.get(phase)
        if bar is None:
            bar = ipywidgets.IntProgress(min=0, max=max(1, total or 1), description=PHASES.get(phase, phase))
            bar.style.description_width = "initial"
            self._bars[phase] = bar
            self._box.children = (*self._box.children, bar)
        bar.max = max(1, total or max(done, 1))
        bar.value = min(done, bar.max)
        bar.bar_style = "success" if total is not None and done >= total else ""

    def html(self) -> str:
        """The HTML block: one ``<progress>`` per phase seen so far, with ``done/total``."""
        rows = []
        for phase, (done, total) in self.phases.items():
            label = html.escape(PHASES.get(phase, phase))
            if total:
                bar = f'<progress value="{min(done, total)}" max="{total}"></progress>'
                count = f"{done}/{total}"
            else:
                bar, count = "<progress></progress>", str(done)
            cells = f"<td>{label}</td><td>{bar}</td><td style='text-align:right'>{html.escape(count)}</td>"
            rows.append(f"<tr>{cells}</tr>")
        return f"<table class='dedup-progress'>{''.join(rows)}</table>"
