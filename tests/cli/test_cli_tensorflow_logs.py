"""TensorFlow's native start-up lines: the CLI quietens them (TF_CPP_MIN_LOG_LEVEL, and the first import of
TensorFlow with descriptor 2 silenced); the library leaves the environment and file descriptors alone."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import ROOT
from imagegen import make_photo

# A line TensorFlow's C++ code writes to file descriptor 2: absl's "I0000 00:00:... file.cc:31] ..." lines
# and the banner before them.
NATIVE_LINE = re.compile(r"^([IWEF]\d{4} |WARNING: All log messages before absl::InitializeLog)")


def _env_without_tf_level(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return {**env, **extra}


@pytest.mark.parametrize("preset", [None, "1"])
def test_cli_sets_tf_log_level_unless_the_user_did(
    cli, monkeypatch: pytest.MonkeyPatch, preset: str | None
) -> None:
    if preset is None:
        monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    else:
        monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", preset)
    result = cli("scan", "/no/such/folder", "--features", "phash")
    assert result.exit_code == 1 and "does not exist" in result.output
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == (preset or "3")


@pytest.mark.tf
def test_vgg16_scan_prints_no_tensorflow_start_up_lines(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(2):
        make_photo(i).save(folder / f"{i}.png")
    cfg = tmp_path / "small.yaml"
    cfg.write_text("features:\n  extractor: vgg16\n  input_size: 32\ncache:\n  enabled: false\n")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "dedup",
            "scan",
            str(folder),
            "--weights",
            "none",
            "--config",
            str(cfg),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env=_env_without_tf_level(),
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["extractor"]["name"] == "vgg16"
    assert "untrained VGG16" in proc.stderr  # dedup's own warning is there ...
    native = [line for line in proc.stderr.splitlines() if NATIVE_LINE.match(line)]
    # ... and none of TensorFlow's start-up lines (TF 2.21 prints absl's banner and "cudart_stub.cc: Could
    # not find cuda drivers" while its libraries load, before it reads TF_CPP_MIN_LOG_LEVEL)
    assert native == [], proc.stderr
    assert "cpu_feature_guard" not in proc.stderr and "oneDNN" not in proc.stderr


@pytest.mark.tf
def test_library_leaves_the_environment_alone() -> None:
    code = (
        "import os\n"
        "import numpy as np\n"
        "from dedup.config import FeaturesConfig\n"
        "from dedup.features import make_extractor\n"
        "ex = make_extractor(FeaturesConfig('vgg16', weights='none', input_size=32))\n"
        "assert ex.embed(np.zeros((1, 32, 32, 3), np.float32)).shape == (1, 512)\n"
        "assert 'TF_CPP_MIN_LOG_LEVEL' not in os.environ\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env=_env_without_tf_level(),
    )
    assert proc.returncode == 0, proc.stderr
