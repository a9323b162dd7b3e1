"""``dedup ignore list|clear``: the pairs marked "not a duplicate" (in ``dedup review``) that scans skip."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from dedup.cli.common import ConfigOpt, build_config, errors, here, stdout
from dedup.errors import InputError

if TYPE_CHECKING:
    from dedup.ignore import IgnoreList

app = typer.Typer(
    help="The ignore list: pairs marked 'not a duplicate' in dedup review, which scans never group "
    "again.\n\nExample: dedup ignore list",
    no_args_is_help=True,
    rich_markup_mode="rich",
)

FileOpt = Annotated[
    Path | None,
    typer.Option(
        "--file",
        help="The ignore list (default: ignore.file of the config, auto = "
        "$XDG_STATE_HOME/dedup/ignore.jsonl).",
        show_default=False,
    ),
]


def _listing(file: Path | None, config: Path | None) -> IgnoreList:
    from dedup.ignore import IgnoreList

    if file is not None:
        return IgnoreList(file)
    listing = IgnoreList.from_config(build_config(config, {}))
    if listing is None:
        raise InputError("ignore.file is none in the configuration: there is no ignore list")
    return listing


@app.command("list")
def list_(
    file: FileOpt = None,
    config: ConfigOpt = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the file's JSON lines as they are.")
    ] = False,
) -> None:
    """Show the pairs of the ignore list (where it is, when each pair was added, the two files).

    Example: dedup ignore list
    """
    with errors():
        listing = _listing(file, config)
        pairs = listing.load()
        if json_out:
            for pair in pairs:
                sys.stdout.write(json.dumps(pair.to_dict(), ensure_ascii=False) + "\n")
            return
        if not pairs:
            stdout.print(f"No pairs in the ignore list {listing.path}", highlight=False, soft_wrap=True)
            return
        table = Table(title=f"Ignore list {listing.path} ({len(pairs)} pairs)", title_justify="left")
        table.add_column("Added")
        table.add_column("Image", overflow="fold")
        table.add_column("Not a duplicate of", overflow="fold")
        for pair in pairs:
            table.add_row(pair.added[:10], escape(here(pair.a.path)), escape(here(pair.b.path)))
        stdout.print(table)
        if listing.problems:
            stdout.print(f"{listing.problems} unreadable lines are left out.", highlight=False)


@app.command()
def clear(file: FileOpt = None, config: ConfigOpt = None) -> None:
    """Delete the ignore list: later scans may group those pairs again.

    Example: dedup ignore clear
    """
    with errors():
        listing = _listing(file, config)
        n = listing.clear()
        stdout.print(f"Removed {n} pairs ({listing.path} deleted).", highlight=False, soft_wrap=True)
