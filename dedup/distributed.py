"""The Ray engine (``scale.engine: ray``): extraction as a Ray Data pipeline, partitions as Ray tasks.

What runs where:

* **The driver** (the process running dedup) discovers the files, serves cache hits, runs the identical-file
  pre-pass, writes every new vector to the feature cache (its one writer), merges the partitions'
  decisions, runs DBSCAN and the chaining guard, writes reports and performs every file action.
* **Extraction actors** (a Ray Data ``map_batches`` over an actor pool of ``ray.actors``): each one loads
  the extractors once (a GPU requested per actor when the cluster has GPUs and a CNN runs) and decodes,
  prepares and embeds blocks of ``ray.batch_size`` files (:func:`dedup.extract.embed_batch`). The vectors
  come back to the driver. Every node must reach the files under the same paths (a shared filesystem) and
  have dedup installed.
* **Partition tasks** (``scale.partitions`` > 1): one Ray task per partition runs
  :func:`dedup.shards.search_partition` (neighbour graphs and keypoint verification of its images).

Failures: when an actor or its node dies, the pass over the files stops and the driver sends the files that
have no result yet again, to a new actor pool on the nodes that are left (``ray.retries`` times), so no image
is lost, and a file whose result arrives twice is taken once (a dead actor is not restarted in place: that
would wait for a node that may never come back). Connecting checks the address first (one TCP connect with
``ray.timeout``), so a wrong address is one error line, never a hang.

``import dedup.distributed`` does not import Ray; :func:`connect` does, and says how to install it.
"""

from __future__ import annotations

import gc
import logging
import os
import re
import socket
import warnings
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from dedup.config import AUTO, Config
from dedup.errors import EngineError
from dedup.extract import EmbeddedBatch, embed_batch
from dedup.features import Extractor, ensure_loaded
from dedup.images import ImageFile
from dedup.shards import PartitionResult, PartitionWork, search_partition

INSTALL_HINT = "pip install 'dedup[ray]'"

_View = list[tuple[str, int, bool]]


def import_ray() -> Any:
    """The ``ray`` module, or :class:`EngineError` saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401  (ray[data]: the extraction pipeline)
    except ImportError as e:
        raise EngineError(f"scale.engine ray needs Ray, which is not installed: {INSTALL_HINT}") from e
    return ray


def _check_reachable(address: str, timeout: float) -> None:
    """One TCP connect to ``HOST:PORT`` (a ``ray://`` prefix dropped): refused or silent -> EngineError."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as e:
        why = "no answer" if isinstance(e, TimeoutError) else (e.strerror or str(e))
        raise EngineError(
            f"no Ray cluster at {address} (ray.address): {why}; start one with `ray start --head` or "
            "give the address of its head"
        ) from e


@dataclass
class RaySession:
    """A connection to a Ray cluster for one scan (see :func:`connect`).

    Attributes:
        config: the run's configuration (``ray`` section).
        address: the address connected to.
        cpus: CPUs of the cluster.
        gpus: GPUs of the cluster.
        resent: files sent to the cluster again because their block was lost with an actor or node.
    """

    config: Config
    address: str
    cpus: int
    gpus: int
    resent: int = 0

    def actor_plan(self, extractors: Sequence[Extractor]) -> tuple[int, float]:
        """``(actors, GPUs per actor)`` for these extractors (``ray.actors``, ``ray.gpus``)."""
        cfg = self.config.ray
        wants_gpu = cfg.gpus is True or (
            cfg.gpus == AUTO and self.gpus > 0 and not all(e.weight_free for e in extractors)
        )
        if cfg.gpus is True and self.gpus == 0:
            raise EngineError("ray.gpus is true but the Ray cluster has no GPUs")
        per_actor = 1.0 if wants_gpu else 0.0
        if cfg.actors != AUTO:
            return int(cfg.actors), per_actor
        return max(1, self.gpus if wants_gpu else self.cpus), per_actor

    def runner(
        self,
        files: Sequence[ImageFile],
        extractors: Sequence[Extractor],
        layouts: Sequence[_View],
        config: Config,
    ) -> Iterator[tuple[list[int], EmbeddedBatch]]:
        """Decode and embed ``files`` on the cluster (a :data:`dedup.extract.Runner`): yields
        ``(positions into files, EmbeddedBatch)`` per block as blocks finish; files whose block was lost
        are sent again, up to ``ray.retries`` times.

        Raises:
            EngineError: files still have no result after the retries.
        """
        if not files:
            return
        ray = import_ray()
        actors, gpus = self.actor_plan(extractors)
        size = config.ray.batch_size
        files_ref = ray.put(list(files))
        pending = set(range(len(files)))
        failure = ""
        for attempt in range(config.ray.retries + 1):
            todo = np.array(sorted(pending), dtype=np.int64)
            self.resent += len(todo) if attempt else 0
            blocks = [todo[i : i + size] for i in range(0, len(todo), size)]  # a block per batch: no shuffle
            with warnings.catch_warnings():
                # Ray >= 2.60 warns that extra remote arguments (max_restarts) are deprecated; it has no
                # named parameter for max_restarts yet, and the warning is nothing a user can act on.
                warnings.filterwarnings("ignore", message=r"`ray_remote_args` is deprecated")
                ds = ray.data.from_numpy(blocks).map_batches(
                    _Embedder,
                    fn_constructor_args=(files_ref, list(extractors), [list(v) for v in layouts], config),
                    batch_size=size,
                    batch_format="numpy",
                    # From one actor up to the plan: a pass after a lost node starts on what is left.
                    compute=ray.data.ActorPoolStrategy(min_size=1, max_size=max(1, min(actors, len(blocks)))),
                    num_cpus=1,
                    num_gpus=gpus,
                    max_restarts=0,  # a dead actor's block fails at once and is sent again (no node wait)
                )
            try:
                for out in ds.iter_batches(batch_size=None, batch_format="numpy"):
                    positions, embedded = _unpack(out, len(extractors))
                    pending.difference_update(positions)
                    yield positions, embedded
            except _lost(ray) as e:  # a node or worker died with blocks on it: send what is missing again
                # Only the text is kept: the error's traceback holds the pass's executor, whose actors
                # (and their CPUs) are released only when nothing refers to it any more.
                failure = _first_line(e)
            except Exception as e:  # dedup's own code failed on the cluster (or cannot be imported there)
                raise EngineError(f"extraction failed on the Ray cluster: {_first_line(e)}") from e
            del ds
            gc.collect()  # the failed pass's actors go now, before the next pass asks for their CPUs
            if not pending:
                return
        raise EngineError(
            f"the Ray cluster returned no features for {len(pending)} of {len(files)} images after "
            f"{config.ray.retries} retries (ray.retries): {failure}"
        )

    def map_partitions(self, works: Iterable[PartitionWork]) -> Iterator[PartitionResult]:
        """:func:`dedup.shards.search_partition` of every work as Ray tasks (one CPU each, retried by Ray
        ``ray.retries`` times), at most two per cluster CPU in flight; results in the order of ``works``.

        Raises:
            EngineError: a partition's task failed on every attempt because its worker died.
        """
        ray = import_ray()
        task = ray.remote(num_cpus=1, max_retries=self.config.ray.retries)(_search)
        pending: deque[Any] = deque()
        limit = max(2, 2 * self.cpus)
        try:
            for work in works:
                work.n_jobs = 1  # one CPU per task: no query processes inside a task
                pending.append(task.remote(work))
                if len(pending) >= limit:
                    yield ray.get(pending.popleft())
            while pending:
                yield ray.get(pending.popleft())
        except (
            ray.exceptions.WorkerCrashedError,
            ray.exceptions.NodeDiedError,
            ray.exceptions.ObjectLostError,
        ) as e:
            raise EngineError(
                f"a partition could not be searched on the Ray cluster: {_first_line(e)}"
            ) from e


def _search(work: PartitionWork) -> PartitionResult:
    return search_partition(work)


class _Embedder:
    """One extraction actor: the extractors loaded once, then a block of file positions at a time."""

    def __init__(
        self, files: list[ImageFile], extractors: list[Extractor], layouts: list[_View], config: Config
    ):
        ray = import_ray()
        if isinstance(files, ray.ObjectRef):  # the file list is put once, not sent with every actor
            files = ray.get(files)
        for extractor in extractors:
            ensure_loaded(extractor)
        self.files = files
        self.extractors = extractors
        self.layouts = layouts
        self.config = config

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ids = np.asarray(batch["data"], dtype=np.int64)
        done = embed_batch([self.files[i] for i in ids.tolist()], self.extractors, self.layouts, self.config)
        ok = np.array([r is None for r in done.reasons], dtype=bool)
        out: dict[str, np.ndarray] = {
            "id": ids,
            "width": np.array([w for w, _ in done.shapes], dtype=np.int64),
            "height": np.array([h for _, h in done.shapes], dtype=np.int64),
            "reason": np.array([r or "" for r in done.reasons], dtype=object),
        }
        for e, vectors in enumerate(done.vectors):
            full = np.zeros((len(ids), vectors.shape[1]), dtype=np.float32)
            full[ok] = vectors
            out[f"v{e}"] = full
        return out


def _unpack(out: dict[str, np.ndarray], n_extractors: int) -> tuple[list[int], EmbeddedBatch]:
    """A block of :class:`_Embedder` output -> ``(positions, EmbeddedBatch)``."""
    reasons = [str(r) or None for r in out["reason"].tolist()]
    ok = np.array([r is None for r in reasons], dtype=bool)
    return (
        [int(i) for i in out["id"].tolist()],
        EmbeddedBatch(
            shapes=[
                (int(w), int(h)) for w, h in zip(out["width"].tolist(), out["height"].tolist(), strict=True)
            ],
            reasons=reasons,
            vectors=[np.asarray(out[f"v{e}"], dtype=np.float32)[ok] for e in range(n_extractors)],
        ),
    )


def _lost(ray: Any) -> tuple[type[BaseException], ...]:
    """The Ray errors that mean work was lost with a process or node (worth sending again)."""
    ex = ray.exceptions
    return (
        ex.ObjectLostError,
        ex.ActorDiedError,
        ex.NodeDiedError,
        ex.WorkerCrashedError,
        ex.ActorUnavailableError,
    )


def _first_line(e: BaseException) -> str:
    """The first line of an error's message without terminal colours (Ray colours its task names)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e)).strip().splitlines()
    return text[0] if text else type(e).__name__


def _address(config: Config) -> str:
    """``ray.address``, with ``auto`` taken from ``RAY_ADDRESS`` when it is set."""
    address = config.ray.address
    if address == AUTO:
        return os.environ.get("RAY_ADDRESS", "").strip() or AUTO
    return address


@contextmanager
def connect(config: Config) -> Iterator[RaySession]:
    """Connect to the Ray cluster of ``ray.address`` for the length of the ``with`` block (an existing
    connection of this process is reused and left open).

    Raises:
        EngineError: Ray is not installed, or no cluster answers at the address.
    """
    ray = import_ray()
    address = _address(config)
    owned = not ray.is_initialized()
    if owned:
        if address != AUTO:
            _check_reachable(address, config.ray.timeout)
        os.environ.setdefault("RAY_gcs_rpc_server_connect_timeout_s", str(int(config.ray.timeout)))
        try:
            ray.init(
                address=address,
                logging_level=logging.ERROR,
                log_to_driver=False,
                configure_logging=False,
            )
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise EngineError(
                f"cannot connect to the Ray cluster at {address} (ray.address): {_first_line(e)}"
            ) from e
        ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        resources = ray.cluster_resources()
        yield RaySession(
            config=config,
            address=address,
            cpus=int(resources.get("CPU", 0)),
            gpus=int(resources.get("GPU", 0)),
        )
    finally:
        if owned:
            ray.shutdown()
