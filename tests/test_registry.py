"""The registry, spec strings, declared hyperparameters and bad input."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import optuna
import pytest
import torch

try:
    import regularizers as R
except ImportError:  # running pytest without PYTHONPATH
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import regularizers as R
from regularizers import registry

BUILT_INS = ["none", "norm_stabilizer", "recurrent_batchnorm", "recurrent_dropout", "rnndrop", "stochastic_depth",
             "variational_dropout", "weight_noise", "zoneout"]
CLASSES = {"lstm": R.RegularizedLSTM, "gru": R.RegularizedGRU, "rnn": R.RegularizedRNN}

# The paper's values (zoneout paper, Krueger et al. 2016; REFERENCE.md).
PAPER_DEFAULTS = {
    ("zoneout", "z_cells"): 0.5,
    ("zoneout", "z_states"): 0.05,
    ("weight_noise", "sigma"): 0.075,
    ("norm_stabilizer", "beta"): 50.0,
    ("stochastic_depth", "p"): 0.05,
    ("recurrent_batchnorm", "gamma_init"): 0.1,
}


@pytest.fixture
def isolated_registry(monkeypatch):
    """Registrations made by a test are undone afterwards."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    return registry._REGISTRY


# -- listing, get, build ------------------------------------------------------------------------

def test_available_lists_the_nine_built_ins():
    names = R.available()
    assert names == sorted(names)
    assert set(BUILT_INS) <= set(names)
    assert len(BUILT_INS) == 9


@pytest.mark.parametrize("name", BUILT_INS)
def test_get_and_build_by_name(name):
    cls = R.get(name)
    assert issubclass(cls, R.Regularizer) and cls.name == name
    instance = R.build(name)
    assert type(instance) is cls
    assert instance.params == {k: h.default for k, h in cls.hyperparameters.items()}
    assert R.build(instance) is instance


def test_build_from_spec_string_and_overrides():
    z = R.build("zoneout:z_cells=0.5,z_states=0.05")
    assert (z.z_cells, z.z_states, z.shared_mask) == (0.5, 0.05, False)
    assert isinstance(z.z_cells, float)
    z = R.build(" zoneout : z_cells = 0.25 , shared_mask = true , z_states=0.25 ")
    assert (z.z_cells, z.z_states, z.shared_mask) == (0.25, 0.25, True)
    z = R.build("zoneout:z_cells=0.5", z_cells=0.3, z_states=0.2)  # keyword parameters override the spec
    assert (z.z_cells, z.z_states) == (0.3, 0.2)
    assert z.explicit == {"z_cells", "z_states"}
    bn = R.build("recurrent_batchnorm:max_steps=784,gamma_init=0.1")
    assert bn.max_steps == 784 and isinstance(bn.max_steps, int)
    ns = R.build("norm_stabilizer:on=cells")
    assert ns.on == "cells"
    for text, value in (("true", True), ("1", True), ("yes", True), ("false", False), ("0", False), ("off", False)):
        assert R.build(f"recurrent_dropout:per_sequence={text}").per_sequence is value


@pytest.mark.parametrize("name", BUILT_INS)
def test_spec_round_trip(name):
    instance = R.build(name)
    again = R.build(instance.spec)
    assert again.params == instance.params
    assert again.spec == instance.spec
    assert instance.spec.split(":")[0] == name


@pytest.mark.parametrize("spec,params", [
    ("weight_noise", {"sigma": 0.0123456789}),  # an Optuna suggestion has all its digits
    ("zoneout", {"z_cells": 0.1 + 0.2, "z_states": 1 / 3}),
    ("norm_stabilizer", {"beta": 123.456789012}),
    ("recurrent_batchnorm", {"eps": 1e-7, "momentum": 0.05, "max_steps": 12}),
])
def test_spec_round_trip_keeps_every_digit(spec, params):
    instance = R.build(spec, **params)
    assert R.build(instance.spec).params == instance.params


def test_spec_of_paper_values_is_short():
    assert R.build("zoneout").spec == "zoneout:z_cells=0.5,z_states=0.05,shared_mask=false,static_mask=false"
    assert R.build("none").spec == "none"


# -- unknown names and bad values ---------------------------------------------------------------

def test_unknown_name_lists_available_and_the_closest_match():
    with pytest.raises(R.UnknownRegularizerError) as info:
        R.get("zonout")
    assert isinstance(info.value, ValueError)
    message = str(info.value)
    assert "'zonout'" in message and "Did you mean 'zoneout'?" in message
    for name in BUILT_INS:
        assert name in message
    with pytest.raises(R.UnknownRegularizerError, match="Available: ") as info:
        R.build("completely_different:x=1")
    assert "Did you mean" not in str(info.value)
    with pytest.raises(ValueError, match="recurrent_dropout"):
        R.RegularizedLSTM(3, 4, regularizers=["recurrent_drop"])


@pytest.mark.parametrize("spec,name,range_text", [
    ("zoneout:z_cells=1.5", "z_cells", "[0, 1]"),
    ("zoneout:z_states=-0.1", "z_states", "[0, 1]"),
    ("recurrent_dropout:p=1", "p", "[0, 1)"),
    ("recurrent_dropout:p=1.0", "p", "[0, 1)"),
    ("rnndrop:p=2", "p", "[0, 1)"),
    ("variational_dropout:p_hidden=1", "p_hidden", "[0, 1)"),
    ("stochastic_depth:p=1.01", "p", "[0, 1]"),
    ("weight_noise:sigma=-0.01", "sigma", "[0, inf)"),
    ("norm_stabilizer:beta=-1", "beta", "[0, inf)"),
    ("recurrent_batchnorm:gamma_init=0", "gamma_init", "(0, inf)"),
    ("recurrent_batchnorm:max_steps=0", "max_steps", "[1, inf)"),
    ("zoneout:z_cells=nan", "z_cells", "[0, 1]"),
])
def test_out_of_range_names_the_parameter_and_its_range(spec, name, range_text):
    with pytest.raises(ValueError) as info:
        R.build(spec)
    message = str(info.value)
    assert name in message and range_text in message, message


def test_probability_one_is_allowed_where_it_means_something():
    assert R.build("zoneout:z_cells=1,z_states=1").z_cells == 1.0
    assert R.build("stochastic_depth:p=1").p == 1.0


@pytest.mark.parametrize("value", [0.5, "0.5", True, None, [0.5]])
def test_keyword_values_of_the_wrong_type(value):
    if value == 0.5:
        R.build("zoneout", z_cells=value)
        return
    with pytest.raises(ValueError, match="z_cells"):
        R.build("zoneout", z_cells=value)


def test_integer_hyperparameters_reject_fractions():
    with pytest.raises(ValueError, match="max_steps"):
        R.build("recurrent_batchnorm:max_steps=1.5")
    with pytest.raises(ValueError, match="max_steps"):
        R.build("recurrent_batchnorm", max_steps=1.5)
    assert R.build("recurrent_batchnorm", max_steps=10.0).max_steps == 10


@pytest.mark.parametrize("spec", [
    "", "   ", None, 3, "zoneout:", "zoneout:z_cells", "zoneout:z_cells=", "zoneout:=0.5",
    "zoneout:z_cells=0.5,,z_states=0.1", "zoneout:z_cells=0.5,", "zoneout:z_cells=0.5,z_cells=0.6",
    "zoneout:z_cells=abc", "recurrent_dropout:per_sequence=maybe", "zoneout:z_cells=0.5;z_states=0.1",
])
def test_malformed_specs(spec):
    with pytest.raises(ValueError):
        R.build(spec)


def test_malformed_spec_messages_show_the_expected_form():
    with pytest.raises(ValueError, match="name:param=value"):
        R.build("zoneout:z_cells")
    with pytest.raises(ValueError, match="given twice"):
        R.build("zoneout:z_cells=0.5,z_cells=0.6")
    with pytest.raises(ValueError, match="z_cells.*float"):
        R.build("zoneout:z_cells=abc")


def test_unknown_hyperparameter_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown hyperparameter.*'p'.*z_cells, z_states"):
        R.build("zoneout:p=0.5")
    with pytest.raises(ValueError, match="unknown hyperparameter.*valid: z_cells"):
        R.build("zoneout", p=0.5)
    with pytest.raises(ValueError, match="valid: none"):
        R.build("none:p=0.5")
    with pytest.raises(ValueError, match="instance"):
        R.build(R.build("zoneout"), z_cells=0.1)


@pytest.mark.parametrize("spec,cell", [("rnndrop", "gru"), ("rnndrop", "rnn"), ("recurrent_batchnorm", "gru"),
                                       ("recurrent_batchnorm", "rnn")])
def test_unsupported_cell_type_is_a_clear_error(spec, cell):
    with pytest.raises(ValueError) as info:
        CLASSES[cell](3, 4, regularizers=[spec])
    message = str(info.value)
    assert spec in message and cell.upper() in message and "LSTM" in message, message


# -- register ----------------------------------------------------------------------------------

def test_register_a_new_regularizer(isolated_registry):
    @R.register("test_hidden_scale")
    class HiddenScale(R.Regularizer):
        hyperparameters = {"p": R.probability(0.2, "a probability")}

        def masks(self, ctx):
            return {"hidden_input": ctx.constant(1 - self.p)} if ctx.training else {}

    assert "test_hidden_scale" in R.available()
    assert R.get("test_hidden_scale") is HiddenScale
    layer = R.RegularizedLSTM(3, 4, regularizers=["test_hidden_scale:p=0.5"])
    assert layer.regularizers[0].p == 0.5
    layer(torch.randn(5, 2, 3))[0].sum().backward()


def test_register_rejects_bad_names_classes_and_duplicates(isolated_registry):
    for bad in ("", "1abc", "has-dash", "has space", "a:b"):
        with pytest.raises(ValueError, match="name"):
            R.register(bad)
    with pytest.raises(TypeError, match="Regularizer"):
        R.register("not_a_regularizer")(object)

    class Other(R.Regularizer):
        pass

    with pytest.raises(ValueError, match="already registered"):
        R.register("zoneout")(Other)
    assert R.get("zoneout").__module__ == "regularizers.zoneout"

    class BadCells(R.Regularizer):
        cell_types = ("lstm", "transformer")

    with pytest.raises(ValueError, match="transformer"):
        R.register("bad_cells")(BadCells)


def test_a_mask_on_an_unknown_or_missing_site_is_a_clear_error(isolated_registry):
    @R.register("test_bad_site")
    class BadSite(R.Regularizer):
        site = "forget_gate"

        def masks(self, ctx):
            return {self.site: ctx.constant(1.0)}

    with pytest.raises(ValueError, match="forget_gate.*valid sites"):
        R.RegularizedLSTM(3, 4, regularizers=["test_bad_site"])(torch.randn(2, 1, 3))
    BadSite.site = "cell"
    with pytest.raises(ValueError, match="only LSTM"):
        R.RegularizedGRU(3, 4, regularizers=["test_bad_site"])(torch.randn(2, 1, 3))


# -- declarations -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", BUILT_INS)
def test_every_regularizer_declares_itself(name):
    cls = R.get(name)
    assert cls.paper, f"{name} names no paper"
    assert cls.cell_types and set(cls.cell_types) <= set(R.CELL_TYPES)
    for key, spec in cls.hyperparameters.items():
        assert isinstance(spec, R.Hyperparameter)
        assert spec.help, f"{name}.{key} has no help text"
        assert spec.validate(name, key, spec.default) == spec.default  # the default is valid
        assert spec.describe_range()
        if spec.search is not None:
            low, high = spec.search
            assert low < high
            spec.validate(name, key, spec.kind(low))
            spec.validate(name, key, spec.kind(high))
            if spec.log:
                assert low > 0


@pytest.mark.parametrize("name,key,value", [(n, k, v) for (n, k), v in PAPER_DEFAULTS.items()])
def test_defaults_are_the_papers_values(name, key, value):
    assert R.get(name).hyperparameters[key].default == value
    assert getattr(R.build(name), key) == value


def test_cell_types():
    assert R.get("rnndrop").cell_types == ("lstm",)
    assert R.get("recurrent_batchnorm").cell_types == ("lstm",)
    for name in ("zoneout", "recurrent_dropout", "variational_dropout", "stochastic_depth", "weight_noise",
                 "norm_stabilizer", "none"):
        assert set(R.get(name).cell_types) == {"lstm", "gru", "rnn"}, name


@pytest.mark.parametrize("name", BUILT_INS)
def test_search_space_with_a_fixed_trial(name):
    cls = R.get(name)
    searchable = {k: h for k, h in cls.hyperparameters.items() if h.search is not None}
    fixed = {}
    for key, spec in searchable.items():
        low, high = spec.search
        fixed[key] = int(round((low + high) / 2)) if spec.kind is int else (
            math.sqrt(low * high) if spec.log else (low + high) / 2)
    chosen = cls.search_space(optuna.trial.FixedTrial(fixed))
    assert chosen == fixed
    instance = cls(**chosen)
    cell = cls.cell_types[0]
    CLASSES[cell](3, 4, regularizers=[instance])(torch.randn(4, 2, 3))


def test_search_spaces_of_the_stochastic_regularizers_are_not_empty():
    for name in ("zoneout", "recurrent_dropout", "variational_dropout", "rnndrop", "stochastic_depth",
                 "weight_noise", "norm_stabilizer"):
        assert R.get(name).hyperparameters and any(h.search for h in R.get(name).hyperparameters.values()), name


@pytest.mark.parametrize("name", BUILT_INS)
def test_search_space_in_a_real_study(name):
    # one study per regularizer, as benchmark/study.py runs them (parameter names such as "p"
    # mean different things in different regularizers)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cls = R.get(name)

    def objective(trial):
        chosen = cls.search_space(trial)
        instance = cls(**chosen)  # in range, or this raises
        for key, value in chosen.items():
            low, high = cls.hyperparameters[key].search
            assert low <= value <= high
            assert R.build(instance.spec).params[key] == value  # the spec a study stores rebuilds it
        return sum(float(v) for v in chosen.values())

    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=2))
    study.optimize(objective, n_trials=3)
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    searchable = {k for k, h in cls.hyperparameters.items() if h.search is not None}
    assert set(study.best_params) == searchable


# -- zoneout on layers without cells --------------------------------------------------------------

@pytest.mark.parametrize("cell", ["gru", "rnn"])
def test_zoneout_spec_of_a_gru_layer_rebuilds_on_that_layer(cell):
    layer = CLASSES[cell](3, 4, regularizers=["zoneout:z_states=0.2"])
    again = CLASSES[cell](3, 4, regularizers=[layer.regularizers[0].spec])
    assert again.regularizers[0].z_states == 0.2


@pytest.mark.parametrize("cell", ["gru", "rnn"])
def test_zoneout_search_space_works_on_a_gru(cell):
    cls = R.get("zoneout")
    chosen = cls.search_space(optuna.trial.FixedTrial({"z_cells": 0.3, "z_states": 0.2}), cell_type=cell)
    assert chosen == {"z_states": 0.2}  # a layer without cells has no z_cells to search
    CLASSES[cell](3, 4, regularizers=[cls(**chosen)])
    assert set(cls.search_space(optuna.trial.FixedTrial({"z_cells": 0.3, "z_states": 0.2}), cell_type="lstm")) == {
        "z_cells", "z_states"}


@pytest.mark.parametrize("cell", ["gru", "rnn"])
def test_zoneout_z_cells_set_on_a_layer_without_cells_is_an_error(cell):
    with pytest.raises(ValueError, match="z_cells applies to LSTM layers only"):
        CLASSES[cell](3, 4, regularizers=["zoneout:z_cells=0.3"])


# -- infinities -----------------------------------------------------------------------------------

def test_infinite_values_are_out_of_range():
    with pytest.raises(ValueError, match="sigma"):
        R.build("weight_noise:sigma=inf")
    assert R.get("weight_noise").hyperparameters["sigma"].describe_range() == "[0, inf)"


def test_infinite_integer_is_a_value_error():
    with pytest.raises(ValueError, match="max_steps"):
        R.build("recurrent_batchnorm", max_steps=float("inf"))


def test_a_class_of_the_same_name_from_another_module_cannot_replace_a_built_in(isolated_registry):
    class Zoneout(R.Regularizer):  # same __qualname__ as the built-in, another module
        pass

    Zoneout.__qualname__ = "Zoneout"
    with pytest.raises(ValueError, match="already registered"):
        R.register("zoneout")(Zoneout)
    assert R.get("zoneout").__module__ == "regularizers.zoneout"


def test_registering_the_same_class_again_is_allowed(isolated_registry):
    # re-running a module or a notebook cell defines the class anew, with the same module and name
    def define():
        class Rerun(R.Regularizer):
            pass
        return Rerun

    first, second = define(), define()
    R.register("test_rerun")(first)
    R.register("test_rerun")(second)
    assert R.get("test_rerun") is second
