"""``dedup index build|update|info``, ``dedup assign`` and ``dedup serve``: a saved index of a collection and
the answers it gives for new images, on the command line and over HTTP (:mod:`dedup.saved_index`,
:mod:`dedup.service`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from dedup.cli.common import (
    ConfigOpt,
    FeaturesOpt,
    HiddenOpt,
    KeepOpt,
    NoCacheOpt,
    ProgressReporter,
    RecursiveOpt,
    ReferenceOpt,
    ThresholdOpt,
    WeightsOpt,
    build_config,
    cache_overrides,
    errors,
    scan_overrides,
    shown,
    stderr,
    stdout,
    warn,
)

index_app = typer.Typer(
    help="A saved index of a collection: build it once, update it as images arrive, then dedup assign or "
    "dedup serve answer for new images.\n\nExample: dedup index build ~/photos --to ~/photos.index",
    no_args_is_help=True,
    rich_markup_mode="rich",
)
app = typer.Typer()

IndexOpt = Annotated[
    Path,
    typer.Option("--index", "-i", help="The index folder (made by dedup index build).", show_default=False),
]
NovelOpt = Annotated[
    float | None,
    typer.Option(
        "--novel-distance",
        help="Cosine distance (0..2) to the nearest cluster centre beyond which an image is novel (default: "
        "that cluster's radius -- the 95th percentile of its members' distances -- but at least 1 - the "
        "duplicate threshold).",
        min=0.0,
        max=2.0,
        show_default=False,
    ),
]


def _skipped(skipped: list) -> None:
    for s in skipped:
        stderr.print(f"Skipped {shown(s.path, None)}: {s.reason}", highlight=False, soft_wrap=True)


@index_app.command("build")
def build(
    paths: Annotated[list[Path], typer.Argument(help="Folders and/or images to index.", show_default=False)],
    to: Annotated[
        Path | None,
        typer.Option("--to", help="The index folder to create (new or empty).", show_default=False),
    ] = None,
    method: Annotated[
        str,
        typer.Option(
            "--method",
            "-m",
            help="Clusters of the whole collection: kmeans | agglomerative | dbscan (no clusters).",
        ),
    ] = "kmeans",
    clusters: Annotated[
        str | None,
        typer.Option(
            "--clusters",
            "-k",
            help="Number of clusters, or auto (best silhouette over group.auto_min..auto_max; the default).",
            show_default=False,
        ),
    ] = None,
    names: Annotated[
        Path | None,
        typer.Option(
            "--names",
            help="names.yaml (cluster id -> name) of a `dedup group` run with the same images and settings.",
            show_default=False,
        ),
    ] = None,
    config: ConfigOpt = None,
    threshold: ThresholdOpt = None,
    features: FeaturesOpt = None,
    weights: WeightsOpt = None,
    keep: KeepOpt = None,
    recursive: RecursiveOpt = None,
    include_hidden: HiddenOpt = None,
    reference: ReferenceOpt = None,
    no_cache: NoCacheOpt = False,
) -> None:
    """Scan a collection (as dedup scan does), cluster it, and save vectors, neighbour index, duplicate
    groups with their kept images, clusters with centres and names into a versioned index folder.

    Example: dedup index build ~/photos --to ~/photos.index --clusters 12 --names ~/sorted/names.yaml
    """
    from dedup.saved_index import Index

    if to is None:
        raise typer.BadParameter("give the index folder with --to INDEX_DIR", param_hint="--to")
    with errors():
        overrides = scan_overrides(threshold, features, weights, keep, recursive, include_hidden, reference)
        overrides.update({"group.method": method, "group.clusters": clusters, **cache_overrides(no_cache)})
        cfg = build_config(config, overrides)
        with ProgressReporter(stderr) as progress:
            index = Index.build(paths, to, cfg, names=names, progress=progress, warn=warn)
        info = index.info()
        stdout.print(
            f"Index {index.folder}: {info['images']} images, {info['groups']} duplicate groups, "
            f"{info['clusters']} clusters ({'+'.join(info['extractors'])})",
            highlight=False,
            soft_wrap=True,
        )


@index_app.command("update")
def update(
    index_dir: Annotated[Path, typer.Argument(help="The index folder.", show_default=False)],
    paths: Annotated[list[Path], typer.Argument(help="Folders and/or images to add.", show_default=False)],
) -> None:
    """Add the images under PATH that the index does not hold yet; only they are decoded and compared.

    New duplicates join the group of their kept image (a kept image never changes), new images go into
    their nearest cluster. Changed files (same path, other size or time) are listed and left as indexed.

    Example: dedup index update ~/photos.index ~/photos/2026-12-02
    """
    from dedup.saved_index import Index

    with errors():
        index = Index.load(index_dir, warn=warn)
        with ProgressReporter(stderr) as progress:
            result = index.update(paths, progress=progress, warn=warn)
        _skipped(result.skipped)
        for path in result.changed:
            warn(
                f"{path} changed since it was indexed; left as indexed (build the index again to take it in)"
            )
        stdout.print(
            f"Added {result.added} images ({result.duplicates} duplicates of indexed images, "
            f"{result.new_groups} new groups); {result.unchanged} already indexed; index now "
            f"{len(index.images)} images",
            highlight=False,
            soft_wrap=True,
        )


@index_app.command("info")
def info(
    index_dir: Annotated[Path, typer.Argument(help="The index folder.", show_default=False)],
    json_out: Annotated[bool, typer.Option("--json", help="Print it as JSON.")] = False,
) -> None:
    """Check an index folder and show what it holds.

    Example: dedup index info ~/photos.index
    """
    from dedup.saved_index import Index

    with errors():
        index = Index.load(index_dir, warn=warn)
        data = index.info()
        if json_out:
            typer.echo(json.dumps(data, ensure_ascii=False))
            return
        for key, value in data.items():
            stdout.print(f"{key}: {value}", highlight=False, soft_wrap=True)
        for c in index.clusters:
            stdout.print(
                f"  cluster {c.id} {c.name!r}: {c.size} images, radius {c.radius:.3f}", highlight=False
            )


@app.command()
def assign(
    paths: Annotated[list[Path], typer.Argument(help="Images and/or folders to assign.", show_default=False)],
    index_dir: IndexOpt,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON line per image on stdout.")] = False,
    embedding: Annotated[
        bool, typer.Option("--embedding", help="Add each extractor's vector (implies JSON lines).")
    ] = False,
    novel_distance: NovelOpt = None,
    no_cache: NoCacheOpt = False,
) -> None:
    """For each image: the kept image it duplicates (decided as dedup scan decides) and the evidence, its
    nearest cluster (id and name), the distance to that cluster's centre, and whether it is novel. Nothing
    is written; bad images are skipped with a reason.

    Example: dedup assign new/ --index ~/photos.index --json | jq 'select(.duplicate_of == null)'
    """
    from dedup.saved_index import Index

    with errors():
        index = Index.load(index_dir, warn=warn)
        with ProgressReporter(stderr) as progress:
            result = index.assign(
                paths,
                embedding=embedding,
                novel_distance=novel_distance,
                cache=not no_cache,
                progress=progress,
            )
        _skipped(result.skipped)
        if json_out or embedding:
            for a in result.assignments:
                typer.echo(json.dumps(a.to_dict(), ensure_ascii=False))
            return
        table = Table(title=f"dedup assign ({index.folder})", title_justify="left")
        for col in ("image", "duplicate of", "evidence", "cluster", "distance", "novel"):
            table.add_column(col)
        for a in result.assignments:
            d = a.duplicate_of
            table.add_row(
                shown(a.path, None),
                "—" if d is None else shown(d.path, None),
                "—" if d is None else (f"{d.evidence} · {d.inliers} inliers" if d.inliers else d.evidence),
                "—" if a.cluster is None else f"{a.cluster} {a.cluster_name}",
                "—" if a.distance is None else f"{a.distance:.3f}",
                "—" if a.novel is None else ("novel" if a.novel else "no"),
            )
        stdout.print(table)


@app.command()
def serve(
    index_dir: IndexOpt,
    host: Annotated[
        str,
        typer.Option(
            "--host",
            help="Address to listen on. Loopback by default; another address makes the API reachable.",
        ),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port (0 = a free one).", min=0, max=65535)] = 8000,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            envvar="DEDUP_TOKEN",
            help="Secret that /assign and /similar need (Authorization: Bearer TOKEN); env DEDUP_TOKEN.",
            show_default=False,
        ),
    ] = None,
    max_upload_mb: Annotated[
        float, typer.Option("--max-upload-mb", help="Largest upload in MB (larger ones get 413).", min=0.001)
    ] = 20.0,
    novel_distance: NovelOpt = None,
) -> None:
    """Serve the index over HTTP: POST /assign (an uploaded image), GET /similar, GET /health, and the
    OpenAPI docs at /docs, until Ctrl-C.

    Example: dedup serve --index ~/photos.index --port 8000

    Example: curl -F file=@new.jpg http://127.0.0.1:8000/assign
    """
    from dedup.saved_index import Index
    from dedup.service import IndexServer
    from dedup.webserver import is_loopback

    with errors():
        index = Index.load(index_dir, warn=warn)
        server = IndexServer(
            index,
            host=host,
            port=port,
            token=token,
            max_upload=int(max_upload_mb * 1024 * 1024),
            novel_distance=novel_distance,
        )
        if not is_loopback(host):
            warn(
                f"listening on {host}: the API is reachable from other machines"
                + ("" if token else " and needs no token (give --token)")
            )
        info = index.info()
        stdout.print(
            f"Serving {index.folder} ({info['images']} images, {info['groups']} groups, "
            f"{info['clusters']} clusters) on {server.base_url} — API docs: {server.base_url}/docs",
            highlight=False,
            soft_wrap=True,
        )
        stdout.print("Press Ctrl-C to stop.", highlight=False)
        stdout.file.flush()
        try:
            server.serve_forever()
        finally:
            server.socket.close()
