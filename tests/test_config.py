from pathlib import Path

import pytest

from movierec.config import load_config, parse_override
from movierec.errors import ConfigError


def test_defaults_and_yaml(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("workdir: w\nmodel:\n  factors: 8\n")
    cfg = load_config(p)
    assert cfg.model.factors == 8
    assert cfg.model.epochs == 30  # default kept
    # relative paths resolve against the config file's folder, not the cwd
    assert cfg.workdir == str((tmp_path / "w").resolve())
    assert cfg.data.dir == str((tmp_path / "data/demo").resolve())


def test_overrides_are_yaml(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("{}")
    cfg = load_config(p, ["model.factors=128", "evaluate.ablations=[no_social]", "model.learning_rate=1e-3",
                          "model.use_features=false"])
    assert cfg.model.factors == 128
    assert cfg.evaluate.ablations == ["no_social"]
    assert cfg.model.learning_rate == pytest.approx(1e-3)
    assert cfg.model.use_features is False


def test_int_accepted_for_float_but_not_str_for_int(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("model:\n  learning_rate: 1\n")
    assert load_config(p).model.learning_rate == 1.0
    p.write_text("model:\n  factors: many\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert "model.factors" in msg and "int" in msg and str(p) in msg


def test_unknown_key_names_key_file_and_allowed(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("model:\n  factros: 8\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert "model.factros" in msg and str(p) in msg and "factors" in msg


def test_choices_and_ranges(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("model:\n  optimizer: lbfgs\n")
    with pytest.raises(ConfigError, match="sgd, adam"):
        load_config(p)
    with pytest.raises(ConfigError, match="split.test_fraction"):
        load_config(None, ["split.test_fraction=1.5"])
    with pytest.raises(ConfigError, match="no_magic"):
        load_config(None, ["evaluate.ablations=[no_magic]"])
    with pytest.raises(ConfigError, match="split.train"):
        load_config(None, ["split.method=given"])


def test_bad_override_syntax():
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_override("model.factors")
    with pytest.raises(ConfigError, match="not a section"):
        load_config(None, ["workdir=x", "workdir.sub=1"])


def test_missing_or_invalid_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    p = tmp_path / "c.yaml"
    p.write_text("model: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p)


def test_section_hash_changes_with_section_only():
    a = load_config(None)
    b = load_config(None, ["model.factors=7"])
    assert a.section_hash("data") == b.section_hash("data")
    assert a.section_hash("model") != b.section_hash("model")


def test_shipped_configs_load():
    root = Path(__file__).resolve().parents[1] / "configs"
    for p in root.glob("*.yaml"):
        load_config(p)


@pytest.mark.parametrize("override, key", [
    ("evaluate.k=[]", "evaluate.k"), ("model.batch_size=0", "model.batch_size"),
    ("sentiment.max_length=0", "sentiment.max_length"), ("refresh.keep=-1", "refresh.keep"),
    ("model.validation_fraction=2", "model.validation_fraction"), ("model.patience=-1", "model.patience"),
    ("social.ppr_top=-5", "social.ppr_top"), ("model.learning_rate=.nan", "model.learning_rate"),
    ("evaluate.k=[10, 0]", "evaluate.k"), ("refresh.max_ndcg_drop=1.5", "refresh.max_ndcg_drop"),
    ("recommend.feedback_weight=0", "recommend.feedback_weight"), ("model.lr_decay=0", "model.lr_decay"),
])
def test_every_number_is_bounded_and_the_error_names_key_and_file(tmp_path, override, key):
    p = tmp_path / "c.yaml"
    p.write_text("{}")
    with pytest.raises(ConfigError) as e:
        load_config(p, [override])
    assert key in str(e.value) and str(p) in str(e.value)


def test_every_numeric_field_declares_bounds():
    import dataclasses
    import typing

    from movierec import config as C

    unbounded = []
    for section in dataclasses.fields(C.Config):
        cls = section.type if isinstance(section.type, type) else getattr(C, str(section.type), None)
        if cls is None or not dataclasses.is_dataclass(cls):
            continue
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            tp = hints[f.name]
            args = [a for a in typing.get_args(tp) if a is not type(None)] or [tp]
            inner = typing.get_args(args[0]) or args
            if inner[0] in (int, float) and not any(f.metadata.get(b) is not None for b in ("ge", "gt", "le", "lt")):
                unbounded.append(f"{section.name}.{f.name}")
    # a rating bound or a threshold on the data's own scale takes any value
    assert set(unbounded) <= {"data.rating_min", "data.rating_max", "evaluate.relevance_threshold",
                              "refresh.share_rating"}, unbounded


def test_engine_section_defaults_to_local_and_checks_its_values():
    cfg = load_config(None)
    assert cfg.engine.kind == "local" and cfg.engine.address is None
    cfg = load_config(None, ["engine.kind=ray", "engine.address=auto", "engine.workers=4", "engine.gpus_per_worker=0.5"])
    assert (cfg.engine.kind, cfg.engine.address, cfg.engine.workers, cfg.engine.gpus_per_worker) == ("ray", "auto", 4, 0.5)
    with pytest.raises(ConfigError, match="local, ray"):
        load_config(None, ["engine.kind=spark"])
    with pytest.raises(ConfigError, match="engine.workers"):
        load_config(None, ["engine.workers=0"])


def test_the_engine_decides_no_stage_output():
    """Moving to Ray re-runs nothing: no stage's config hash reads the engine section."""
    from movierec.pipeline import STAGES, stage_config_hash

    local, ray = load_config(None), load_config(None, ["engine.kind=ray", "engine.workers=8"])
    assert all(stage_config_hash(s, local) == stage_config_hash(s, ray) for s in STAGES)
