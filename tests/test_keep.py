"""The keep policies (dedup.keep): which image of a group is kept, deterministically."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from dedup.errors import ConfigError
from dedup.keep import KEEP_POLICIES, check_policy, choose_keep


@dataclass(frozen=True)
class Img:
    path: str
    size: int = 100
    mtime: float = 0.0
    width: int = 10
    height: int = 10


def test_choose_keep_policies_and_deterministic_ties() -> None:
    imgs = [
        Img("/b.jpg", size=500, mtime=30, width=100, height=100),
        Img("/a.jpg", size=900, mtime=20, width=50, height=50),
        Img("/c.jpg", size=100, mtime=10, width=100, height=100),
    ]
    assert imgs[choose_keep(imgs, "resolution")].path == "/b.jpg"  # tie 100x100 -> first path
    assert imgs[choose_keep(imgs, "filesize")].path == "/a.jpg"
    assert imgs[choose_keep(imgs, "oldest")].path == "/c.jpg"
    assert imgs[choose_keep(imgs, "newest")].path == "/b.jpg"
    assert imgs[choose_keep(imgs, "path")].path == "/a.jpg"
    rev = list(reversed(imgs))
    assert rev[choose_keep(rev, "resolution")].path == "/b.jpg"  # the order given does not matter


def test_unknown_policy_and_empty_group_are_errors() -> None:
    with pytest.raises(ConfigError, match="allowed values: " + ", ".join(KEEP_POLICIES)):
        choose_keep([Img("/a.jpg")], "prettiest")
    with pytest.raises(ConfigError):
        check_policy("best-looking")
    with pytest.raises(ValueError):
        choose_keep([], "path")


def test_the_config_offers_exactly_these_policies() -> None:
    import dataclasses

    from dedup.config import KeepConfig

    field = next(f for f in dataclasses.fields(KeepConfig) if f.name == "policy")
    assert field.metadata["choices"] == KEEP_POLICIES
