"""``dedup review``: the review page for a report, served on a loopback port until Ctrl-C."""

from __future__ import annotations

import shlex
import webbrowser
from pathlib import Path
from typing import Annotated

import typer

from dedup.cli.common import ConfigOpt, ReferenceOpt, build_config, errors, stderr, stdout, warn

app = typer.Typer()

PortOpt = Annotated[int, typer.Option("--port", help="Port to listen on (0 = a free one).", min=0, max=65535)]
HostOpt = Annotated[
    str,
    typer.Option(
        "--host",
        help="Address to listen on. The default is loopback only; another address makes the page (and its "
        "token-protected actions) reachable from other machines.",
    ),
]
NoBrowserOpt = Annotated[
    bool, typer.Option("--no-browser", help="Print the address only; do not open a browser.")
]


def default_quarantine(report: Path) -> Path:
    """The quarantine folder the page proposes: ``<report stem>-quarantine`` beside the report."""
    p = report.absolute()
    return p.with_name(f"{p.stem.removesuffix('.reviewed')}-quarantine")


def serve(
    report: Path,
    *,
    config: Path | None,
    reference: list[Path] | None,
    output: Path | None,
    to: Path | None,
    host: str,
    port: int,
    browser: bool,
) -> None:
    """Open the review of ``report`` (restoring saved decisions), serve it until Ctrl-C, then say where the
    reviewed report is and how to act on it."""
    from dedup.ignore import IgnoreList
    from dedup.review.server import ReviewServer, is_loopback
    from dedup.review.state import ReviewState

    cfg = build_config(config, {"keep.reference": [str(r) for r in reference] if reference else None})
    state = ReviewState.open(
        report, output=output, ignore=IgnoreList.from_config(cfg), reference=cfg.keep.reference
    )
    for note in state.notes:
        warn(note)
    quarantine = to if to is not None else default_quarantine(state.output)
    server = ReviewServer(state, cfg, quarantine=quarantine, host=host, port=port)
    if not is_loopback(host):
        warn(
            f"listening on {host}: the page is reachable from other machines (anyone with the URL can decide)"
        )
    try:
        counts = state.counts()
        stdout.print(
            f"Reviewing {counts['groups']} groups of {state.source_path} "
            f"({counts['accepted']} accepted, {counts['rejected']} rejected so far)",
            highlight=False,
            soft_wrap=True,
        )
        stdout.print(
            f"Reviewed report (saved after every decision): {state.output}", highlight=False, soft_wrap=True
        )
        stdout.print(f"Open {server.url}", highlight=False, soft_wrap=True)
        stdout.print("Press Ctrl-C to stop.", highlight=False)
        stdout.file.flush()
        if browser:
            try:
                webbrowser.open(server.url)
            except Exception as e:  # noqa: BLE001 - no browser is not an error: the URL is printed
                warn(f"could not open a browser ({e}); open the address above")
        server.serve_forever()
    finally:
        server.socket.close()
        stderr.print(
            "Stopped. To act on the accepted groups: dedup prune --from-report "
            f"{shlex.quote(str(state.output))} --to {shlex.quote(str(quarantine))}",
            highlight=False,
            soft_wrap=True,
        )


@app.command()
def review(
    report: Annotated[Path, typer.Argument(help="A JSON report of dedup scan (or its .reviewed.json).")],
    port: PortOpt = 0,
    host: HostOpt = "127.0.0.1",
    no_browser: NoBrowserOpt = False,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="The reviewed report (default: REPORT.reviewed.json beside the report).",
            show_default=False,
        ),
    ] = None,
    to: Annotated[
        Path | None,
        typer.Option(
            "--to",
            help="Quarantine folder the page proposes (default: REPORT-quarantine beside the report).",
            show_default=False,
        ),
    ] = None,
    reference: ReferenceOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Review a report in the browser: see why images were grouped, change what is kept, mark false pairs,
    accept or reject groups, then move the duplicates to a quarantine folder (journaled, undoable).

    Serves a local page on 127.0.0.1 (a free port, a random token in the printed address) until Ctrl-C.
    Every decision is saved at once into the reviewed report, which `dedup prune --from-report` and
    `dedup group --from-report` take; reopening the same report restores its decisions. "Not a duplicate"
    pairs go to the ignore list (`dedup ignore list`), which later scans honour.

    Example: dedup review scan.json

    Example: dedup review scan.json --no-browser --port 8765 --to ~/photos-quarantine
    """
    with errors():
        serve(
            report,
            config=config,
            reference=reference,
            output=output,
            to=to,
            host=host,
            port=port,
            browser=not no_browser,
        )
