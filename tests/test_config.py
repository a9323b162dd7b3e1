from pathlib import Path

import pytest
import yaml

from dedup.config import AUTO, Config, describe, load_config
from dedup.errors import ConfigError

DEFAULT_YAML = Path(__file__).resolve().parents[1] / "configs" / "default.yaml"


def test_default_yaml_matches_code_defaults():
    data = yaml.safe_load(DEFAULT_YAML.read_text())
    assert data == Config().to_dict()
    assert load_config(DEFAULT_YAML) == Config()


def test_default_yaml_documents_every_key_with_a_comment():
    lines = DEFAULT_YAML.read_text().splitlines()
    for section, keys in describe().items():
        assert f"{section}:" in lines
        for key in keys:
            line = next((ln for ln in lines if ln.strip().startswith(f"{key}:")), None)
            assert line is not None, f"{section}.{key} missing from default.yaml"
            assert "#" in line, f"{section}.{key} has no comment"


def test_precedence_cli_over_file_over_defaults(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("cluster:\n  threshold: 0.8\n  min_samples: 3\nkeep:\n  policy: oldest\n")
    cfg = load_config(cfg_file, {"cluster.threshold": 0.95, "keep.policy": None})
    assert cfg.cluster.threshold == 0.95  # flag wins
    assert cfg.cluster.min_samples == 3  # file wins over default
    assert cfg.keep.policy == "oldest"  # None flag = not given
    assert cfg.index == Config().index  # untouched sections keep defaults
    assert load_config().cluster.threshold == AUTO


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (
            {"features.extractor": "resnet9"},
            "features.extractor: 'resnet9' is not allowed; allowed values: vgg16, resnet50, mobilenet, "
            "mobilenet_v2, efficientnet_b0, keras-model:PATH, onnx:PATH, phash, thumb, color",
        ),
        (
            {"cluster.threshold": 1.5},
            "cluster.threshold: 1.5 is out of range; allowed values: -1.0 to 1.0, 'auto' or 'calibrate'",
        ),
        ({"cluster.threshold": "high"}, "cluster.threshold: expected a number, 'auto' or 'calibrate'"),
        ({"index.n_trees": 0}, "index.n_trees: 0 is out of range"),
        ({"index.n_tree": 3}, "unknown config key index.n_tree"),
        ({"indexes.n_trees": 3}, "unknown config section 'indexes'"),
        ({"discover.recursive": "yes"}, "discover.recursive: expected true or false"),
        ({"keep.policy": "biggest"}, "allowed values: best, resolution, filesize, oldest, newest, path"),
    ],
)
def test_bad_values_name_the_key_and_allowed_values(overrides, needle):
    with pytest.raises(ConfigError) as info:
        load_config(overrides=overrides)
    assert needle in str(info.value)


def test_unknown_key_in_file_names_file_and_allowed_keys(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("index:\n  trees: 5\n")
    with pytest.raises(
        ConfigError, match=r"unknown config key index.trees in .*c.yaml; allowed keys in index: n_trees"
    ):
        load_config(cfg_file)


def test_bad_yaml_and_missing_file_are_config_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("cluster: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "missing.yaml")
    notmap = tmp_path / "list.yaml"
    notmap.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(notmap)


def test_auto_threshold_is_case_insensitive_and_numbers_from_strings():
    assert load_config(overrides={"cluster.threshold": "AUTO"}).cluster.threshold == AUTO
    assert load_config(overrides={"cluster.threshold": "0.9"}).cluster.threshold == 0.9
    assert load_config(overrides={"index.n_trees": "7"}).index.n_trees == 7


def test_mirror_auto_true_false_and_bad_values():
    from dedup.features import uses_mirror
    from dedup.features.keras import VGG16Extractor
    from dedup.features.weightfree import PHashExtractor

    assert load_config().features.mirror == AUTO
    auto = load_config().features
    assert uses_mirror(auto, PHashExtractor()) is True
    assert uses_mirror(auto, VGG16Extractor(weights="none")) is False
    on = load_config(overrides={"features.mirror": True}).features
    assert uses_mirror(on, VGG16Extractor(weights="none")) is True
    off = load_config(overrides={"features.mirror": False}).features
    assert uses_mirror(off, PHashExtractor()) is False
    with pytest.raises(
        ConfigError, match="features.mirror: 'yes' is not allowed; allowed values: auto, true, false"
    ):
        load_config(overrides={"features.mirror": "yes"})


def test_precision_and_cache_keys():
    from dedup.features.keras import cpu_has_bf16, model_precision

    assert load_config(overrides={"features.precision": "float32"}).features.precision == "float32"
    assert model_precision(load_config(overrides={"features.precision": "bfloat16"}).features) == "bfloat16"
    assert model_precision(load_config().features) == "float32"
    expected = "bfloat16" if cpu_has_bf16() else "float32"
    assert model_precision(load_config(overrides={"features.precision": "auto"}).features) == expected
    with pytest.raises(ConfigError, match="allowed values: auto, float32, bfloat16"):
        load_config(overrides={"features.precision": "fp8"})
    cfg = load_config(overrides={"cache.enabled": False, "cache.dir": "/tmp/x"})
    assert (cfg.cache.enabled, cfg.cache.dir) == (False, "/tmp/x")


# ------------------------------------------------------------------- hostile and unlucky input (issue 16)


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"cluster.threshold": float("nan")}, "expected a number, 'auto' or 'calibrate', got nan"),
        ({"cluster.threshold": "nan"}, "expected a number, 'auto' or 'calibrate', got nan"),
        ({"verify.min_coverage": float("inf")}, "expected a number, got inf"),
        ({"index.seed": 99999999999999999999}, "index.seed: 99999999999999999999 is out of range"),
        ({"index.search_k": 2**40}, "out of range"),
        ({"group.seed": 2**32}, "out of range"),
    ],
)
def test_values_the_later_stages_cannot_take_are_refused_up_front(overrides, needle):
    with pytest.raises(ConfigError, match=needle.replace("(", r"\\(").replace(")", r"\\)")):
        load_config(overrides=overrides)


def test_a_binary_or_deeply_nested_config_file_is_a_config_error(tmp_path):
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ConfigError, match="not a text file"):
        load_config(binary)
    nul = tmp_path / "nul.yaml"
    nul.write_bytes(b"cluster:\n  threshold: 0.9\x00\n")
    with pytest.raises(ConfigError, match="not a text file"):
        load_config(nul)
    deep = tmp_path / "deep.yaml"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ConfigError, match="nested too deeply|not valid YAML"):
        load_config(deep)


def test_bad_values_fail_before_the_scan_with_one_line(cli, tmp_path):
    (tmp_path / "seed.yaml").write_text("index:\n  seed: 99999999999999999999\n")
    (tmp_path / "binary.yaml").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe")
    for args in (
        ["--threshold", "nan"],
        ["--config", str(tmp_path / "seed.yaml")],
        ["--config", str(tmp_path / "binary.yaml")],
    ):
        result = cli("scan", str(tmp_path), "--features", "phash", *args)
        assert result.exit_code == 1, result.output
        assert result.stderr.startswith("Error: ") and len(result.stderr.strip().splitlines()) == 1
        assert "Discovering" not in result.stderr and "Traceback" not in result.output
