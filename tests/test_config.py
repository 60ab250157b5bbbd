import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from mlscale import MlscaleError, TrainConfig
from mlscale.config import build_config, diff_fields, field_help, load_yaml, to_dict, validate


def test_defaults_are_valid():
    cfg = build_config()
    assert cfg == TrainConfig()
    assert validate(cfg) == cfg


def test_file_then_overrides_take_precedence(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("epochs: 3\nmodel: {name: cnn, width: 16}\noptim: {lr: 0.01}\n")
    cfg = build_config(load_yaml(path), [("optim.lr", "1e-3"), ("model.depth", "3"), ("batch-size", "32")])
    assert (cfg.epochs, cfg.model.name, cfg.model.width, cfg.model.depth) == (3, "cnn", 16, 3)
    assert cfg.optim.lr == pytest.approx(1e-3)  # "1e-3" is a string to YAML 1.1, a float to us
    assert cfg.batch_size == 32


@pytest.mark.parametrize(
    "overrides, message",
    [
        ([("epoch", "3")], "unknown config key 'epoch' (did you mean 'epochs'?)"),
        ([("model.widht", "3")], "unknown config key 'model.widht' (did you mean 'model.width'?)"),
        ([("epochs", "three")], "epochs must be an integer, got 'three'"),
        ([("epochs", "0")], "epochs must be > 0, got 0"),
        ([("optim.lr", "-1")], "optim.lr must be > 0.0, got -1.0"),
        ([("optim.lr", "nan")], "optim.lr must be a finite number"),
        ([("model.name", "resnet")], "model.name must be one of mlp, cnn, transformer; got 'resnet'"),
        ([("progress", "maybe")], "progress must be true or false"),
        ([("model", "cnn")], "'model' is a section"),
        ([("epochs.x", "1")], "'epochs' is a field, not a section"),
        ([("data.input_shape", "1,0,8")], "data.input_shape[1] must be > 0, got 0"),
        ([("seed", "100000000000000")], "seed must be <= 2147483647"),
        ([("dist.timeout_s", "1e300")], "dist.timeout_s must be <= 1000000.0"),
    ],
)
def test_bad_overrides_name_the_field(overrides, message):
    with pytest.raises(MlscaleError) as err:
        build_config({}, overrides)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_non_string_yaml_keys_are_unknown_keys():
    with pytest.raises(MlscaleError, match="unknown config key '1'"):
        build_config({1: 2})
    with pytest.raises(MlscaleError, match="unknown config key 'True'"):
        build_config({True: 1})


def test_list_field_parses_from_string_and_yaml():
    assert build_config({}, [("data.input_shape", "1,8,8")]).data.input_shape == [1, 8, 8]
    assert build_config({"data": {"input_shape": [1, 8, 8]}}).data.input_shape == [1, 8, 8]
    assert build_config({}, [("data.input_shape", "none")]).data.input_shape is None


def test_cross_field_rule():
    cfg = TrainConfig()
    cfg.model.name, cfg.model.width, cfg.model.n_heads = "transformer", 30, 4
    with pytest.raises(MlscaleError, match="model.n_heads .4. must divide model.width .30."):
        validate(cfg)


def test_malformed_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: [1,\n")
    with pytest.raises(MlscaleError, match="not valid YAML"):
        load_yaml(bad)
    with pytest.raises(MlscaleError, match="config file not found"):
        load_yaml(tmp_path / "none.yaml")
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    with pytest.raises(MlscaleError, match="must hold a mapping"):
        load_yaml(listing)


def test_round_trip_and_diff():
    cfg = build_config({}, [("optim.lr", "0.5")])
    again = build_config(yaml.safe_load(yaml.safe_dump(to_dict(cfg))))
    assert again == cfg
    assert diff_fields(to_dict(cfg), to_dict(TrainConfig())) == [("optim.lr", 0.5, TrainConfig().optim.lr)]


def test_every_field_has_help():
    rows = field_help()
    assert len(rows) > 30
    assert all(help_ for _, help_, _ in rows)


_leaf = st.one_of(st.none(), st.booleans(), st.integers(-5, 10**6), st.floats(allow_nan=True),
                  st.text(max_size=8), st.lists(st.integers(-2, 9), max_size=4))
_keys = st.sampled_from(["epochs", "seed", "model", "data", "optim", "name", "progress", "lr", "width",
                         "input_shape", "batch_size", "dataset", "bogus"])
_tree = st.recursive(_leaf, lambda inner: st.dictionaries(_keys, inner, max_size=5), max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_keys, _tree, max_size=6))
def test_any_yaml_shaped_input_builds_or_gets_a_clear_error(values):
    try:
        cfg = build_config(values)
    except MlscaleError as err:
        assert str(err) and "\n" not in str(err)
    else:
        assert isinstance(cfg, TrainConfig)
