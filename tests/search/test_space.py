"""The space file: every field kind becomes its Optuna distribution, values are checked against the
config's own rules, and any malformed file is one MlscaleError line (fuzzed)."""

import optuna
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlscale import MlscaleError
from mlscale.search.space import load_space, parse_space

FUZZ = settings(max_examples=300, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture])

SPACE = """
optim.lr: {type: float, low: 1.0e-4, high: 0.1, log: true}
optim.weight_decay: {type: float, low: 0.0, high: 0.1, step: 0.05}
batch_size: {type: categorical, choices: [32, 64, 128]}
model.depth: {type: int, low: 1, high: 4}
model.width: {type: int, low: 16, high: 256, log: true}
model.name: [mlp, cnn]
"""


def test_each_kind_becomes_its_optuna_distribution(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(SPACE)
    dists = load_space(path).distributions()
    assert dists["optim.lr"] == optuna.distributions.FloatDistribution(1e-4, 0.1, log=True)
    assert dists["optim.weight_decay"] == optuna.distributions.FloatDistribution(0.0, 0.1, step=0.05)
    assert dists["batch_size"] == optuna.distributions.CategoricalDistribution([32, 64, 128])
    assert dists["model.depth"] == optuna.distributions.IntDistribution(1, 4)
    assert dists["model.width"] == optuna.distributions.IntDistribution(16, 256, log=True)
    assert dists["model.name"] == optuna.distributions.CategoricalDistribution(["mlp", "cnn"])


def test_suggested_values_lie_in_the_space():
    space = parse_space(yaml.safe_load(SPACE))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(20):
        values = space.suggest(study.ask())
        assert 1e-4 <= values["optim.lr"] <= 0.1 and values["model.name"] in ("mlp", "cnn")
        assert values["optim.weight_decay"] in (0.0, 0.05, 0.1) and 16 <= values["model.width"] <= 256


def test_grid_enumerates_every_point():
    space = parse_space({"model.depth": {"type": "int", "low": 1, "high": 3},
                         "optim.lr": {"type": "float", "low": 0.001, "high": 0.1, "log": True, "values": [0.001, 0.01, 0.1]},
                         "optim.name": ["sgd", "adamw"]})
    assert space.grid() == {"model.depth": [1, 2, 3], "optim.lr": [0.001, 0.01, 0.1], "optim.name": ["sgd", "adamw"]}
    with pytest.raises(MlscaleError, match="needs 'step' or 'values' for --sampler grid"):
        parse_space({"optim.lr": {"type": "float", "low": 0.001, "high": 0.1}}).grid()


@pytest.mark.parametrize("text, message", [
    ("optim.lrr: [0.1]", "'optim.lrr' is not a training config field (did you mean 'optim.lr'?)"),
    ("model.name: [mlp, resnet]", "model.name: 'resnet' is not a valid value (model.name must be one of mlp, cnn, transformer"),
    ("optim.lr: {type: float, low: 0.1, high: 0.01}", "optim.lr: low (0.1) must not exceed high (0.01)"),
    ("optim.lr: {type: float, low: 0, high: 0.1, log: true}", "a log scale needs low > 0"),
    ("optim.lr: {type: float, low: -1, high: 0.1}", "optim.lr must be > 0.0, got -1.0"),
    ("model.depth: {type: int, low: 1.5, high: 3}", "model.depth: 'low' must be an integer, got 1.5"),
    ("model.depth: {type: integer, low: 1, high: 3}", "'type' must be one of float, int, categorical"),
    ("model.depth: {type: int, low: 1, hihg: 3}", "unknown key 'hihg'"),
    ("batch_size: 64", "batch_size: give a list of choices or a mapping with 'type'"),
    ("- optim.lr", "must map config fields to how they vary"),
    ("model: [mlp]", "'model' is not a training config field"),
    ("optim.lr: {type: float, low: 1, high: [2}", "not valid YAML"),
])
def test_a_bad_space_file_is_one_clear_line(tmp_path, text, message):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    with pytest.raises(MlscaleError) as err:
        load_space(path)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert str(err.value).startswith(f"space file {path}")


_scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 300), st.floats(allow_nan=True, allow_infinity=True),
                     st.sampled_from(["mlp", "cnn", "sgd", "float", "int", "categorical", "log", ""]))
_values = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4),
    st.dictionaries(st.sampled_from(["type", "low", "high", "log", "step", "choices", "values", "x"]), inner, max_size=5)),
    max_leaves=12)
_keys = st.one_of(st.sampled_from(["optim.lr", "model.depth", "model.name", "batch_size", "model", "epochs",
                                   "data.input_shape", "progress", "nope"]), st.integers(), st.text(max_size=8))


@FUZZ
@given(data=st.one_of(_values, st.dictionaries(_keys, _values, max_size=4)))
def test_any_parsed_yaml_is_a_space_or_one_clear_line(data):
    try:
        space = parse_space(data)
    except MlscaleError as err:
        assert str(err).strip() and "\n" not in str(err)
        return
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    space.suggest(study.ask())  # a space that parses can be sampled


@FUZZ
@given(text=st.text(max_size=120))
def test_any_space_text_loads_or_gets_a_clear_error(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("space") / "space.yaml"
    path.write_text(text)
    try:
        load_space(path)
    except MlscaleError as err:
        assert str(err).strip() and "\n" not in str(err)
