import dataclasses

import pytest

from afl.config import config_hash, load_config, reference
from afl.errors import ConfigError


def test_a_two_line_config_is_complete_and_resolved():
    cfg = load_config({"data": {"name": "mnist"}, "algorithm": {"name": "fedbuff"}})
    assert cfg.model.name == "cnn"
    assert cfg.data.partition == "dirichlet"
    assert cfg.algorithm.staleness.name == "fedbuff"
    assert cfg.algorithm.buffer_size == 5  # min(m, 10) with m = 5
    assert cfg.client.epochs == 1 and cfg.client.lr_rule == "constant"
    assert cfg.run.rounds == 20
    afl_cfg = load_config({"algorithm": {"name": "afl"}})
    assert afl_cfg.client.lr_rule == "delay_aware"
    assert afl_cfg.algorithm.staleness == dataclasses.replace(
        afl_cfg.algorithm.staleness, name="polynomial", a=0.5)
    sgd = load_config({"algorithm": {"name": "asyncsgd"}})
    assert sgd.algorithm.selection == "routing" and sgd.algorithm.routing == "uniform"
    assert sgd.client.epochs is None and sgd.algorithm.tau_c == 5


def test_overrides_parse_values_as_yaml():
    cfg = load_config({}, ["algorithm.concurrency=3", "client.lr=1e-3", "algorithm.staleness.name=hinge",
                           "timing.rates.groups=[{fraction: 0.5, rate: 1}, {fraction: 0.5, rate: 0.2}]",
                           "timing.rates.kind=groups"])
    assert cfg.algorithm.concurrency == 3 and cfg.client.lr == 1e-3
    assert cfg.algorithm.staleness.b == 10
    assert [g.rate for g in cfg.timing.rates.groups] == [1.0, 0.2]


def test_staleness_shorthand_string():
    cfg = load_config({"algorithm": {"staleness": "hinge"}})
    assert (cfg.algorithm.staleness.a, cfg.algorithm.staleness.b) == (1.0, 10)


def test_hash_is_stable_and_sensitive():
    assert config_hash(load_config({})) == config_hash(load_config({}))
    assert config_hash(load_config({})) != config_hash(load_config({"seed": 1}))


@pytest.mark.parametrize("raw, key, words", [
    ({"algoritm": {}}, "algoritm", "did you mean 'algorithm'"),
    ({"data": {"num_client": 5}}, "data.num_client", "did you mean 'data.num_clients'"),
    ({"data": {"name": "mnst"}}, "data.name", "did you mean 'mnist'"),
    ({"data": {"num_clients": "ten"}}, "data.num_clients", "expected an integer"),
    ({"data": {"num_clients": True}}, "data.num_clients", "expected an integer"),
    ({"client": {"lr": -0.1}}, "client.lr", "must be > 0"),
    ({"client": {"lr": 0}}, "client.lr", "must be > 0"),
    ({"data": {"alpha": 0}}, "data.alpha", "must be > 0"),
    ({"algorithm": {"concurrency": 0}}, "algorithm.concurrency", "must be >= 1"),
    ({"algorithm": {"concurrency": 11}}, "algorithm.concurrency", "without replacement"),
    ({"algorithm": {"name": "fedbuff", "concurrency": 4, "buffer_size": 5}}, "algorithm.buffer_size",
     "can never fill"),
    ({"algorithm": {"name": "afl", "buffer_size": 5}}, "algorithm.buffer_size", "only fedbuff"),
    ({"algorithm": {"selection": "routing", "routing": [0.5, 0.5]}}, "algorithm.routing", "2 entries"),
    ({"data": {"num_clients": 2}, "algorithm": {"concurrency": 2, "selection": "routing",
                                                 "routing": [0.5, 0.6]}}, "algorithm.routing", "sums to"),
    ({"algorithm": {"name": "asyncsgd", "routing": {"optimize": "both"}}}, "algorithm.routing.optimize",
     "not one of update, time"),
    ({"algorithm": {"name": "asyncsgd", "routing": {"power": 1, "optimize": "time"}}}, "algorithm.routing",
     "exactly one of power and optimize"),
    ({"algorithm": {"name": "asyncsgd", "routing": {"power": 1, "pilot_seed": 3}}}, "algorithm.routing.pilot_seed",
     "only an optimized routing"),
    ({"algorithm": {"name": "asyncsgd", "routing": {"optimize": "time"}}}, "algorithm.routing.time_budget",
     "needs a wall-clock budget"),
    ({"algorithm": {"name": "asyncsgd", "routing": {"optimize": "update"}}, "run": {"workload": "none"}},
     "algorithm.routing.optimize", "the pilot trains"),
    ({"algorithm": {"selection": "routing", "routing": {"optimize": "update"}}}, "algorithm.routing.optimize",
     "AsyncSGD"),
    ({"algorithm": {"staleness": {"name": "hinge", "b": -1}}}, "algorithm.staleness", "b"),
    ({"algorithm": {"staleness": {"name": "fedbuff", "a": 1}}}, "algorithm.staleness.a", "takes"),
    ({"algorithm": {"mixing": 1.5}}, "algorithm.mixing", "must be < 1"),
    ({"client": {"epochs": 2, "steps": 3}}, "client.steps", "both set"),
    ({"algorithm": {"name": "asyncsgd"}, "client": {"epochs": 2}}, "client.epochs", "one stochastic gradient"),
    ({"algorithm": {"name": "fedasync", "step_rule": "delay_adaptive"}}, "algorithm.step_rule", "asyncsgd"),
    ({"timing": {"rates": {"kind": "groups", "groups": [{"fraction": 0.5, "rate": 1}]}}},
     "timing.rates.groups", "sum to 0.5"),
    ({"timing": {"high": 0}}, "timing.high", "must exceed"),
    ({"timing": {"per": "step"}, "run": {"workload": "none"}}, "timing.per", "builds no shards"),
    ({"data": {"name": "synthetic"}, "model": {"name": "cnn"}}, "model.name", "needs images"),
    ({"data": {"partition": "natural"}}, "data.partition", "federated dataset"),
    ({"client": {"schedule": "step"}}, "client.schedule_every", "period"),
    ({"client": {"momentum": 1.0}}, "client.momentum", "must be < 1"),
    ({"client": {"schedule": "step", "schedule_every": 5, "schedule_gamma": 2}}, "client.schedule_gamma",
     "must be <= 1"),
    ({"client": {"schedule": "cosine"}, "run": {"time": 100}}, "client.schedule", "needs a budget"),
])
def test_bad_configs_name_the_key_and_the_fix_in_one_line(raw, key, words):
    with pytest.raises(ConfigError) as exc:
        load_config(raw)
    message = str(exc.value)
    assert message.startswith(f"{key}:"), message
    assert words in message and "fix:" in message
    assert "\n" not in message


def test_reference_lists_every_key_with_a_default():
    keys = {k for k, _, _ in reference()}
    assert {"seed", "data.alpha", "algorithm.staleness.name", "timing.rates.groups", "run.eval_every"} <= keys
    assert all(help_ for _, _, help_ in reference())
