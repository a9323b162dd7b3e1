"""``dedup cache info|clear``: the persistent feature cache."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from dedup.cli.common import ConfigOpt, build_config, errors, stdout
from dedup.report.wording import human_bytes

app = typer.Typer(
    help="Inspect or empty the persistent feature cache.\n\nExample: dedup cache info",
    no_args_is_help=True,
    rich_markup_mode="rich",
)


@app.command("info")
def cache_info(
    config: ConfigOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the facts as JSON to stdout.")] = False,
) -> None:
    """Show where the feature cache is, how big it is and how many images it holds per extractor.

    Example: dedup cache info
    """
    from dedup import cache

    with errors():
        cfg = build_config(config, {})
        facts = cache.info(cache.cache_dir(cfg.cache))
        if json_out:
            sys.stdout.write(json.dumps({"enabled": cfg.cache.enabled, **facts}, indent=2) + "\n")
            return
        table = Table(title="dedup feature cache", show_header=False, title_justify="left")
        table.add_column(style="bold")
        table.add_column(overflow="fold")
        table.add_row("Enabled", "yes" if cfg.cache.enabled else "no (cache.enabled: false)")
        table.add_row("File", facts["file"] + ("" if facts["exists"] else " (not created yet)"))
        table.add_row("Size", human_bytes(facts["bytes"]))
        table.add_row("Images", str(facts["entries"]))
        for ex in facts["extractors"]:
            ident = ex["identity"]
            what = ", ".join(f"{k}={v}" for k, v in ident.items() if v is not None and k != "weights_sha256")
            if ident.get("weights_sha256"):
                what += f", weights sha256 {ident['weights_sha256'][:12]}…"
            table.add_row(f"  {ex['entries']} images", escape(what))
        if facts["error"]:
            table.add_row("Error", escape(facts["error"]) + " (it will be rebuilt by the next scan)")
        stdout.print(table)


@app.command("clear")
def cache_clear(config: ConfigOpt = None) -> None:
    """Delete the feature cache; the next scan extracts every image again.

    Example: dedup cache clear
    """
    from dedup import cache

    with errors():
        cfg = build_config(config, {})
        folder = cache.cache_dir(cfg.cache)
        freed = cache.clear(folder)
        message = f"Feature cache in {folder} cleared ({human_bytes(freed)} freed)."
        stdout.print(message, highlight=False, soft_wrap=True)
