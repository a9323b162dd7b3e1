"""What every command shares: the consoles, the error edge, progress rendering, the shared options and how
they become config overrides, and how paths are shown."""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from dedup.config import Config, load_config
from dedup.errors import DedupError
from dedup.progress import PHASES
from dedup.report.wording import display_text

stdout = Console()
stderr = Console(stderr=True)


@contextmanager
def errors() -> Iterator[None]:
    """Turn library errors into one ``Error:`` line and exit code 1; Ctrl-C into exit code 130."""
    try:
        yield
    except DedupError as e:
        stderr.print(f"[bold red]Error:[/] {escape(display_text(str(e)))}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        stderr.print("Interrupted.", highlight=False)
        raise typer.Exit(130) from None


def warn(message: str) -> None:
    stderr.print(f"[yellow]Warning:[/] {escape(display_text(message))}", highlight=False, soft_wrap=True)


def usage_error(message: str, option: str) -> typer.BadParameter:
    """A usage error (exit code 2, with the command's usage line), like Typer's own for a bad option."""
    return typer.BadParameter(message, param_hint=option)


def quiet_pillow() -> None:
    """Keep Pillow's ``DecompressionBombWarning`` (images above its 89-megapixel soft limit) off the
    terminal: ``decode.max_pixels`` is dedup's own limit, and an image over it is skipped with a reason."""
    warnings.filterwarnings("ignore", message=r"Image size \(\d+ pixels\) exceeds limit")


def safe_streams() -> None:
    """Let stdout/stderr show any text: a character the terminal's encoding cannot take (a file name that
    is not valid UTF-8 reaching a message unescaped) becomes a backslash escape instead of a crash."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            with suppress(ValueError, OSError):  # a stream that cannot be reconfigured stays as it is
                reconfigure(errors="backslashreplace")


def shown(path: str, base: str | None) -> str:
    """A path as the user is likely to recognise it: relative to ``base`` (the scanned root) when under it."""
    if base:
        try:
            return display_text(str(Path(path).relative_to(base)))
        except ValueError:
            pass
    return display_text(path)


def common_base(roots: Sequence[str]) -> str | None:
    """The folder all scanned roots share (a file root counts as its folder), or None."""
    folders = [r if Path(r).is_dir() else str(Path(r).parent) for r in roots]
    try:
        return os.path.commonpath(folders) if folders else None
    except ValueError:
        return None


# What one unit of each phase is, for the rate shown beside it.
UNITS = {"extract": "img", "keypoints": "img", "verify": "pairs", "thumbnails": "img", "apply": "files"}


@dataclass
class _Phase:
    started: float
    done: int = 0
    total: int | None = None
    updated: float = 0.0
    printed: float = 0.0
    finished: bool = False


class ProgressReporter:
    """Progress callback ``(phase, done, total)`` rendered as rich bars, or plain log lines off a terminal.

    Off a terminal a phase prints a line every ``interval`` seconds (done/total, rate, ETA) and exactly one
    final line ("... done in 3.2s"), however often the library reports it.
    """

    def __init__(self, console: Console, *, interval: float = 5.0) -> None:
        self.console = console
        self.interval = interval
        self.live = console.is_terminal
        self._progress: Progress | None = None
        self._tasks: dict[str, TaskID] = {}
        self._phases: dict[str, _Phase] = {}

    def __enter__(self) -> ProgressReporter:
        if self.live:
            self._progress = Progress(
                TextColumn("{task.description:<26}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=self.console,
                transient=False,
            )
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()
            return
        for phase, state in self._phases.items():
            if not state.finished:
                self._line(phase, state, final=True)

    def __call__(self, phase: str, done: int, total: int | None) -> None:
        now = time.monotonic()
        state = self._phases.setdefault(phase, _Phase(started=now, printed=now))
        state.done, state.total, state.updated = done, total, now
        if self._progress is not None:
            if phase not in self._tasks:
                self._tasks[phase] = self._progress.add_task(PHASES.get(phase, phase), total=total, rate="")
            self._progress.update(
                self._tasks[phase], completed=done, total=total, rate=self._rate(phase, state)
            )
            return
        if state.finished:
            return
        if total == 0:  # nothing to do in this phase: not worth a line
            state.finished = True
        elif total is not None and done >= total:
            self._line(phase, state, final=True)
        elif now - state.printed >= self.interval:
            self._line(phase, state, final=False)

    @staticmethod
    def _rate(phase: str, state: _Phase) -> str:
        elapsed = state.updated - state.started
        if phase not in UNITS or elapsed <= 0 or not state.done:
            return ""
        return f"{state.done / elapsed:.1f} {UNITS[phase]}/s"

    def _line(self, phase: str, state: _Phase, *, final: bool) -> None:
        elapsed = state.updated - state.started
        text = f"{PHASES.get(phase, phase)}: {state.done}" + (
            f"/{state.total}" if state.total is not None else ""
        )
        extra = [self._rate(phase, state)] if self._rate(phase, state) else []
        if not final and state.total and state.done and elapsed > 0:
            extra.append(f"ETA {max(0.0, (state.total - state.done) * elapsed / state.done):.0f}s")
        if extra:
            text += f" ({', '.join(extra)})"
        if final:
            text += f" done in {elapsed:.1f}s"
            state.finished = True
        self.console.print(text, highlight=False, soft_wrap=True)
        state.printed = state.updated


# ------------------------------------------------------------------------------------------ TensorFlow


class _QuietLoader(importlib.abc.Loader):
    """Runs another loader with file descriptor 2 pointed at /dev/null (Python exceptions still propagate)."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self.loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        sys.stderr.flush()
        saved = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, 2)
            self.loader.exec_module(module)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            os.close(devnull)


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` like the other finders do, but loads it quietly (see :func:`quiet_tensorflow`)."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname != "tensorflow":
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _QuietLoader(spec.loader)
                return spec
        return None


def quiet_tensorflow() -> None:
    """Keep TensorFlow's native start-up lines (CUDA probing, CPU features) off the terminal, where they would
    drown the one warning a user should read -- unless the user set ``TF_CPP_MIN_LOG_LEVEL`` themselves.

    ``TF_CPP_MIN_LOG_LEVEL=3`` quietens TensorFlow's logging once it has started; what it prints while its
    libraries load (absl's "All log messages before absl::InitializeLog", "Could not find cuda drivers")
    comes earlier, so the first ``import tensorflow`` of the process runs with file descriptor 2 silenced.
    TensorFlow is still imported only when a model is really needed. Only the CLI does this: the library
    never touches the environment or file descriptors.
    """
    if "TF_CPP_MIN_LOG_LEVEL" in os.environ:
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    if "tensorflow" not in sys.modules and not any(
        isinstance(f, _QuietTensorFlowImport) for f in sys.meta_path
    ):
        sys.meta_path.insert(0, _QuietTensorFlowImport())


def quiet_ray() -> None:
    """Keep Ray Data's INFO lines (each extraction pass's start, plan and finish) off the terminal, unless the
    user set ``RAY_DATA_LOG_LEVEL`` themselves; its warnings and errors still show. Only the CLI does this."""
    os.environ.setdefault("RAY_DATA_LOG_LEVEL", "WARNING")


def build_config(config_file: Path | None, overrides: dict[str, Any]) -> Config:
    """Defaults < ``--config`` file < CLI flags (``None`` flags are ignored)."""
    return load_config(config_file, overrides)


ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="YAML config file (see configs/default.yaml).", show_default=False),
]


def _threshold_value(text: str) -> str:
    """``--threshold``: a number (range and NaN are checked by the configuration), auto or calibrate."""
    word = text.strip().lower()
    if word in ("auto", "calibrate"):
        return word
    try:
        float(word)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a number, 'auto' or 'calibrate'") from None
    return text


ThresholdOpt = Annotated[
    str | None,
    typer.Option(
        "--threshold",
        "-t",
        help="Cosine similarity (-1..1) at or above which images are duplicates, or calibrate: every "
        "extractor's thresholds calibrated on the collection (default auto: tuned for phash/thumb/color, "
        "calibrated for CNNs and exported models).",
        parser=_threshold_value,
        show_default=False,
        metavar="FLOAT|calibrate",
    ),
]
FeaturesOpt = Annotated[
    str | None,
    typer.Option(
        "--features",
        "-f",
        help="Feature extractor(s): vgg16 | resnet50 | mobilenet | mobilenet_v2 | efficientnet_b0 | phash | "
        "thumb | color | keras-model:PATH (a saved .keras/.h5 model) | onnx:PATH (an ONNX model), or several "
        "joined with '+' in any order (e.g. phash+thumb+color: candidates from each, decided by the verify "
        "stage).",
        show_default=False,
    ),
]
WeightsOpt = Annotated[
    str | None,
    typer.Option(
        "--weights",
        help="Keras backbone (vgg16, resnet50, mobilenet, mobilenet_v2, efficientnet_b0) weights: imagenet | "
        "none | PATH to a .h5/.weights.h5 file (a MobileNet's alpha is read from Keras' file name).",
        show_default=False,
    ),
]
KeepOpt = Annotated[
    str | None,
    typer.Option(
        "--keep",
        help="Image kept per group: best (default: most pixels, then colour, then lossless or higher "
        "JPEG quality, then larger file, then not an edited copy) | resolution | filesize | oldest | "
        "newest | path.",
        show_default=False,
    ),
]
ReferenceOpt = Annotated[
    list[Path] | None,
    typer.Option(
        "--reference",
        help="Folder whose images are always the kept ones and are never moved or deleted (repeatable; "
        "scanned too).",
        show_default=False,
    ),
]
RecursiveOpt = Annotated[
    bool | None,
    typer.Option(
        "--recursive/--no-recursive",
        help="Descend into sub-folders (default: yes).",
        show_default=False,
    ),
]
HiddenOpt = Annotated[
    bool | None,
    typer.Option("--include-hidden", help="Also scan hidden files and folders.", show_default=False),
]


NoCacheOpt = Annotated[
    bool,
    typer.Option("--no-cache", help="Neither read nor write the feature cache: extract every image afresh."),
]


def cache_overrides(no_cache: bool) -> dict[str, Any]:
    """The config override of ``--no-cache`` (nothing when the flag is not given)."""
    return {"cache.enabled": False if no_cache else None}


def scan_overrides(
    threshold: float | str | None,
    features: str | None,
    weights: str | None,
    keep: str | None,
    recursive: bool | None,
    include_hidden: bool | None,
    reference: Sequence[Path] | None = None,
) -> dict[str, Any]:
    """The config overrides given by the flags every scanning command shares."""
    return {
        "cluster.threshold": threshold,
        "features.extractor": features,
        "features.weights": weights,
        "keep.policy": keep,
        "keep.reference": [str(r) for r in reference] if reference else None,
        "discover.recursive": recursive,
        "discover.include_hidden": include_hidden,
    }


EngineOpt = Annotated[
    str | None,
    typer.Option(
        "--engine",
        help="Where decoding, extraction and the partitions run: local, or ray (a Ray cluster, see "
        "--ray-address; pip install 'dedup[ray]'). [default: local]",
        show_default=False,
    ),
]
PartitionsOpt = Annotated[
    int | None,
    typer.Option(
        "--partitions",
        help="Partitioned duplicate search: k-means splits the images into N partitions searched one by "
        "one (ray: as Ray tasks), bounding the memory of one index. [default: 1 = one index]",
        min=1,
        show_default=False,
    ),
]
RayAddressOpt = Annotated[
    str | None,
    typer.Option(
        "--ray-address",
        help="The Ray cluster for --engine ray: auto (RAY_ADDRESS, or the cluster of `ray start` on this "
        "machine) or HOST:PORT of its head. [default: auto]",
        show_default=False,
    ),
]


def scale_overrides(engine: str | None, partitions: int | None, ray_address: str | None) -> dict[str, Any]:
    """The config overrides of --engine, --partitions and --ray-address."""
    return {"scale.engine": engine, "scale.partitions": partitions, "ray.address": ray_address}


ToOpt = Annotated[
    Path | None,
    typer.Option(
        "--to", help="Output folder (quarantine for prune, group folders for group).", show_default=False
    ),
]
DryRunOpt = Annotated[
    bool, typer.Option("--dry-run", help="Print the plan as a table and as JSON; touch nothing.")
]
FromReportOpt = Annotated[
    Path | None,
    typer.Option(
        "--from-report",
        help="Act on this reviewed JSON report instead of scanning again; files "
        "changed since it was written are left alone.",
        show_default=False,
    ),
]
ActionPathsArg = Annotated[
    list[Path] | None,
    typer.Argument(help="Folders to scan (optional with --from-report).", show_default=False),
]


def here(path: str) -> str:
    """``path`` relative to the current folder when it lies below it (shorter tables), else as is."""
    try:
        return display_text(str(Path(path).relative_to(Path.cwd())))
    except ValueError:
        return display_text(path)


def fail_if_incomplete(skipped: Sequence[Any], failed: Sequence[tuple[str, str]], total: int) -> None:
    """List what was not done on stderr and exit 1 when anything was skipped or failed."""
    if not skipped and not failed:
        return
    for s in skipped:
        reason = escape(display_text(s.reason))
        stderr.print(f"  skipped {escape(here(s.path))}: {reason}", highlight=False, soft_wrap=True)
    for path, reason in failed:
        why = escape(display_text(reason))
        stderr.print(f"  failed  {escape(here(path))}: {why}", highlight=False, soft_wrap=True)
    stderr.print(
        f"[bold red]Error:[/] not everything was done: {len(failed)} failed, {len(skipped)} skipped "
        f"(of {total}).",
        highlight=False,
        soft_wrap=True,
    )
    raise typer.Exit(1)
