"""The ``dedup`` command line: parse, call the library once, render with rich, map errors to exit codes.

One module per command family (Typer's ``add_typer``): :mod:`~dedup.cli.scan`, :mod:`~dedup.cli.curate`
(prune, group, undo), :mod:`~dedup.cli.explore` (similar, evaluate, tune), :mod:`~dedup.cli.cache`,
:mod:`~dedup.cli.ignore`, :mod:`~dedup.cli.review`, :mod:`~dedup.cli.index` (index build|update|info,
assign, serve);
what they share is in :mod:`~dedup.cli.common`.

Exit codes: 0 success (duplicates or not), 1 bad input / failed operation (one ``Error: ...`` line on
stderr), 2 usage error (Typer's), 130 interrupted.
"""

from __future__ import annotations

from typing import Annotated

import typer

from dedup import __version__
from dedup.cli import cache, curate, explore, ignore, index, review, scan
from dedup.cli.common import quiet_pillow, quiet_ray, quiet_tensorflow, safe_streams

app = typer.Typer(
    name="dedup",
    help="Find near-duplicate images and curate image datasets.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
app.add_typer(scan.app)
app.add_typer(curate.app)
app.add_typer(explore.app)
app.add_typer(review.app)
app.add_typer(index.app)
app.add_typer(index.index_app, name="index")
app.add_typer(cache.app, name="cache")
app.add_typer(ignore.app, name="ignore")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"dedup {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Find near-duplicate images and curate image datasets.

    Example: dedup scan ~/photos --report duplicates.json
    """
    quiet_tensorflow()
    quiet_ray()
    quiet_pillow()


def main() -> None:
    """Console-script entry point."""
    quiet_tensorflow()
    quiet_ray()
    quiet_pillow()
    safe_streams()
    app()
