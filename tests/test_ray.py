"""The Ray engine on a real local cluster: a head and two worker nodes started by ``ray start`` on a loopback
address of this machine, torn down (every process they started) at the end.

Ray replaces 127.0.0.1 by the machine's outward address (``resolve_ip_for_localhost``), so the nodes use
127.0.0.2, another loopback address.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dedup import load_config
from dedup.errors import EngineError
from dedup.pipeline import find_duplicates

from helpers import ROOT
from imagegen import write_families

pytestmark = pytest.mark.ray

ray = pytest.importorskip("ray", reason="the Ray engine tests need the ray extra (pip install -e '.[dev]')")

HOST = "127.0.0.2"
MARK = "DEDUP_TEST_RAY_NODE"  # every process of a node inherits it: how teardown finds them all
RAY = str(Path(sys.executable).with_name("ray"))
SMALL = ("--object-store-memory", "100000000")  # every node (a 2-core shared machine)
START = 300  # seconds the cluster may take to come up on a loaded machine


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))  # free on every interface (some Ray servers listen on all of them)
        return int(s.getsockname()[1])


def _own_ports() -> list[str]:
    """Ports of one node's servers: nodes on one address must not share Ray's fixed default ports."""
    names = ("node-manager", "object-manager", "metrics-export", "runtime-env-agent")
    names += ("dashboard-agent-listen", "dashboard-agent-grpc")
    return [arg for name in names for arg in (f"--{name}-port", str(_free_port()))]


def _node_pids(tag: str, session: int | None = None) -> list[int]:
    """Processes whose environment carries ``MARK=tag``, or (Ray starts its agents with an environment of
    their own) that belong to the process session ``session`` (the node's ``ray start``)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            env = (entry / "environ").read_bytes().split(b"\0")
            sid = os.getsid(int(entry.name))
        except OSError:
            continue
        if f"{MARK}={tag}".encode() in env or (session is not None and sid == session):
            pids.append(int(entry.name))
    return pids


def _kill(tag: str, session: int | None, sigs: tuple[int, ...] = (signal.SIGTERM, signal.SIGKILL)) -> None:
    for sig in sigs:
        for pid in _node_pids(tag, session):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + 10
        while _node_pids(tag, session) and time.monotonic() < deadline:
            time.sleep(0.2)


class Cluster:
    """A head without CPUs and two one-CPU worker nodes on ``HOST``, each with a 100 MB object store."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="dr", dir="/tmp")  # short: Ray's socket paths have a length limit
        self.port = _free_port()
        self.address = f"{HOST}:{self.port}"
        self.run = Path(self.dir).name
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

        self.token = Path(self.dir) / "auth_token"  # the cluster's own token, not ~/.ray/auth_token
        self.token.write_text(secrets.token_hex(32))
        self.auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(self.token)}

    def env(self, tag: str) -> dict[str, str]:
        path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        extra = {"PYTHONPATH": path, "RAY_USAGE_STATS_ENABLED": "0", MARK: f"{self.run}-{tag}"}
        return {**os.environ, **self.auth, **extra}

    def start(self, tag: str, *args: str) -> None:
        log = open(Path(self.dir) / f"{tag}.log", "wb")  # noqa: SIM115 (closed with the process)
        self.procs[tag] = subprocess.Popen(
            [
                RAY,
                "start",
                "--block",
                "--node-ip-address",
                HOST,
                "--disable-usage-stats",
                *SMALL,
                *_own_ports(),
                *args,
            ],
            env=self.env(tag),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def up(self) -> None:
        client = str(_free_port())
        # No CPU on the head: every extraction actor and partition task runs on a worker node, so killing a
        # worker node is sure to hit the extraction.
        head = ["--head", "--num-cpus", "0", "--port", str(self.port), "--temp-dir", self.dir]
        self.start("head", *head, "--include-dashboard", "false", "--ray-client-server-port", client)
        self._wait(lambda: _reachable(HOST, self.port), "the head")
        for tag in ("w1", "w2"):  # one after the other: a node's socket names are taken when it starts
            self.start(tag, "--address", self.address, "--num-cpus", "1")
            self._wait(lambda t=tag: self.started(t), f"node {tag}")  # type: ignore[misc]
        self.wait_nodes(3)

    def started(self, tag: str) -> bool:
        """Whether ``ray start`` of ``tag`` reports its node running; an early exit is an error at once."""
        if self.procs[tag].poll() is not None:
            log = (Path(self.dir) / f"{tag}.log").read_text(errors="replace").strip().splitlines()
            raise RuntimeError(f"ray start of the test node {tag} exited: {log[-1] if log else ''}")
        return "Ray runtime started" in (Path(self.dir) / f"{tag}.log").read_text(errors="replace")

    def wait_nodes(self, count: int) -> None:
        """Wait until exactly ``count`` nodes are alive (one probe process connects once and polls)."""
        code = (
            "import sys, time, ray\n"
            f"ray.init(address={self.address!r}, logging_level='ERROR')\n"
            f"deadline = time.monotonic() + {START}\n"
            "while time.monotonic() < deadline:\n"
            f"    if sum(n['Alive'] for n in ray.nodes()) == {count}: sys.exit(0)\n"
            "    time.sleep(0.5)\n"
            "sys.exit(1)\n"
        )
        try:
            done = subprocess.run([sys.executable, "-c", code], env=self.env("probe"), timeout=START + 60)
        except subprocess.TimeoutExpired:
            done = None
        if done is None or done.returncode != 0:
            raise RuntimeError(f"the test Ray cluster did not reach {count} nodes within {START} s")

    def session(self, tag: str) -> int | None:
        proc = self.procs.get(tag)
        return proc.pid if proc is not None else None

    def kill_node(self, tag: str) -> None:
        """SIGKILL every process of node ``tag``: a crash (SIGTERM would let Ray drain the node first)."""
        _kill(f"{self.run}-{tag}", self.session(tag), (signal.SIGKILL,))

    def embedding_nodes(self) -> list[str]:
        """The worker nodes (w1, w2) that run an extraction actor now."""
        found = []
        for tag in ("w1", "w2"):
            for pid in _node_pids(f"{self.run}-{tag}"):
                with contextlib.suppress(OSError):
                    if b"_Embedder" in Path(f"/proc/{pid}/cmdline").read_bytes():
                        found.append(tag)
                        break
        return found

    def down(self) -> None:
        for tag in ("w1", "w2", "head", "probe"):
            _kill(f"{self.run}-{tag}", self.session(tag))
        for proc in self.procs.values():
            proc.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)

    @staticmethod
    def _wait(ready: Any, what: str, timeout: float = START) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready():
                return
            time.sleep(0.5)
        raise RuntimeError(f"the test Ray cluster did not start ({what}) within {timeout} s")


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _refresh_ray_config() -> None:
    """Make this process's Ray read RAY_AUTH_MODE and the token path again (it caches its config, as Ray's
    own ``_enable_token_auth`` knows)."""
    from ray._raylet import AuthenticationTokenLoader, Config

    Config.initialize("")
    loader = AuthenticationTokenLoader.instance()
    if hasattr(loader, "reset_cache"):
        loader.reset_cache()


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    c = Cluster()
    saved = {k: os.environ.get(k) for k in c.auth}
    os.environ.update(c.auth)  # this process (the driver) authenticates with the cluster's token too
    _refresh_ray_config()
    try:
        c.up()
        yield c
    finally:
        c.down()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        _refresh_ray_config()
        assert not any(_node_pids(f"{c.run}-{tag}", c.session(tag)) for tag in ("w1", "w2", "head", "probe"))


def _config(cache: Path, **overrides: Any) -> Any:
    return load_config(
        overrides={"features.extractor": "phash+thumb+color", "cache.dir": str(cache), **overrides}
    )


def _groups(result: Any) -> list[list[str]]:
    return sorted(sorted(result.images[m].path for m in g.members) for g in result.groups)


def _big_images(root: Path, n: int) -> None:
    """``n`` large noise images (slow enough to decode that a block is in flight when a node dies), each
    with a half-size JPEG copy."""
    from PIL import Image

    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    for i in range(n):
        small = rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)
        image = Image.fromarray(small).resize((1600, 1200), Image.Resampling.BICUBIC)
        image.save(root / f"img{i:03d}.png")
        image.resize((800, 600)).save(root / f"img{i:03d}-copy.jpg", quality=90)


def test_local_and_ray_give_the_same_groups_and_the_cache_serves_a_later_local_scan(
    cluster: Cluster, tmp_path: Path
) -> None:
    photos = tmp_path / "photos"
    write_families(photos)
    local = find_duplicates([photos], _config(tmp_path / "local-cache"))
    remote = find_duplicates(
        [photos], _config(tmp_path / "ray-cache", **{"scale.engine": "ray", "ray.address": cluster.address})
    )
    assert _groups(remote) == _groups(local) and len(local.groups) == 3
    assert remote.sources is not None and remote.sources.extracted == len(local.images)
    for name, emb in local.all_embeddings.items():
        np.testing.assert_allclose(remote.all_embeddings[name].vectors, emb.vectors, atol=1e-6)
    assert remote.scale["engine"] == "ray"
    again = find_duplicates([photos], _config(tmp_path / "ray-cache"))  # local, on the cache Ray filled
    assert again.sources is not None and again.sources.cached == len(local.images)
    assert again.sources.extracted == 0
    assert _groups(again) == _groups(local)


def test_partitions_on_ray_and_locally_give_the_single_index_groups(cluster: Cluster, tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    write_families(photos)
    single = find_duplicates([photos], _config(tmp_path / "c"))
    parts = {"scale.partitions": 3, "scale.border": 0.2}
    local = find_duplicates([photos], _config(tmp_path / "c", **parts))
    remote = find_duplicates(
        [photos], _config(tmp_path / "c", **parts, **{"scale.engine": "ray", "ray.address": cluster.address})
    )
    assert _groups(local) == _groups(remote) == _groups(single)
    assert local.scale["partitions"] == remote.scale["partitions"] > 1


def test_a_bad_address_is_a_clear_error_not_a_hang(tmp_path: Path) -> None:
    free = _free_port()  # nothing listens there
    config = _config(
        tmp_path / "c", **{"scale.engine": "ray", "ray.address": f"{HOST}:{free}", "ray.timeout": 5}
    )
    write_families(tmp_path / "photos")
    start = time.monotonic()
    with pytest.raises(EngineError, match=f"no Ray cluster at {HOST}:{free}"):
        find_duplicates([tmp_path / "photos"], config)
    assert time.monotonic() - start < 60


def test_a_worker_killed_during_extraction_loses_and_duplicates_no_image(
    cluster: Cluster, tmp_path: Path
) -> None:
    photos = tmp_path / "big"
    _big_images(photos, 12)
    local = find_duplicates([photos], _config(tmp_path / "local-cache"))
    killed: list[str] = []

    def progress(phase: str, done: int, total: int | None) -> None:
        # At the first block: the worker node whose actor made it has its next blocks in flight.
        if phase == "extract" and not killed and total and 0 < done < total:
            nodes = cluster.embedding_nodes()
            if nodes:
                cluster.kill_node(nodes[0])
                killed.append(nodes[0])

    overrides = {"scale.engine": "ray", "ray.address": cluster.address, "ray.batch_size": 1, "ray.actors": 3}
    remote = find_duplicates([photos], _config(tmp_path / "ray-cache", **overrides), progress=progress)
    assert killed, "a worker node with an extraction actor was killed while images were still left"
    assert remote.scale["resent"] > 0  # the killed node's blocks were lost and sent again
    assert [im.path for im in remote.images] == [im.path for im in local.images]  # each image once
    assert len(remote.images) == 24
    for name, emb in local.all_embeddings.items():
        np.testing.assert_allclose(remote.all_embeddings[name].vectors, emb.vectors, atol=1e-6)
    assert _groups(remote) == _groups(local) and len(local.groups) == 12
