"""The run configuration: frozen dataclasses, defaults, YAML loading, ``--set`` overrides, validation.

Every key has a default, so ``{data: {name: mnist}, algorithm: {name: fedbuff}}`` is a whole
config. ``load_config`` turns YAML (plus ``key=value`` overrides) into a resolved ``Config``:
defaults that depend on other keys (the model for a dataset, the staleness function and
client selection for an algorithm) are filled in, and every bad key, type, value or
combination raises ``ConfigError`` with one line naming the key and the fix.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from afl import extensions, rules
from afl.errors import MAX_CONFIG_BYTES, ConfigError, check_size, config_fail
from afl.rules import lr as lr_rules
from afl.rules import staleness
from afl.rules.fedbuff import DEFAULT_BUFFER
from afl.sim.selection import power_routing
from afl.sim.timing import service_cdf

DATASETS = ("mnist", "cifar10", "synthetic")
MODELS = ("cnn", "resnet20", "mlp", "logreg")
PARTITIONS = ("iid", "dirichlet", "shards", "natural")
OPTIMIZERS = ("sgd", "adam")
SELECTIONS = ("without_replacement", "with_replacement", "routing")
WEIGHTINGS = ("data_size", "uniform")
DISTRIBUTIONS = ("exponential", "uniform", "constant", "lognormal")
RATE_KINDS = ("constant", "groups", "lognormal", "uniform", "trace", "power")
MODULATIONS = ("none", "markov", "trace")
AVAILABILITIES = ("always", "markov", "diurnal", "trace")
ON_OFFLINE = ("drop", "pause")
WORK_UNITS = ("task", "step")
WORKLOADS = ("train", "none")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("tf32", "fp32", "bf16")
ROUTING_OBJECTIVES = ("update", "time")

DEFAULT_MODEL = {"mnist": "cnn", "cifar10": "resnet20", "synthetic": "logreg"}  # else (a dataset from outside afl) mlp
DEFAULT_ROUNDS = 20


def _key(help: str, default=None, choices: tuple[str, ...] | None = None, factory=None, added: bool = False,
         beyond: typing.Callable[[str], bool] | None = None):
    """A config key. ``added``: added after runs were published; left out of ``config_hash`` while at
    its default, so that adding it does not make every finished run another config to run again.
    ``beyond``: which values outside ``choices`` it also takes (a rule from outside afl)."""
    meta = {"help": help, "choices": choices, "added": added, "beyond": beyond}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class DataConfig:
    name: str = _key("dataset, or one from outside afl: 'package.module:provider' or an installed afl.datasets entry "
                     "point (docs/extending.md)", "mnist", DATASETS,
                     beyond=lambda name: extensions.external(extensions.DATA_GROUP, name, key="data.name"))
    root: str | None = _key("dataset root; else $AFL_DATA_ROOT, else ./data")
    num_clients: int = _key("number of clients n", 10)
    partition: str | None = _key("how the training set is split among clients "
                                 "(default: dirichlet; natural for synthetic)", None, PARTITIONS)
    alpha: float = _key("Dirichlet concentration of the label skew (smaller = more skewed)", 0.5)
    shards_per_client: int = _key("shards per client for partition: shards", 2)
    min_size: int = _key("smallest shard a client may get", 10)
    train_subset: int | None = _key("use this many random training samples (fast runs)")
    test_subset: int | None = _key("evaluate on this many random test samples")
    synthetic_alpha: float = _key("Synthetic(alpha, beta): model heterogeneity", 1.0)
    synthetic_beta: float = _key("Synthetic(alpha, beta): data heterogeneity", 1.0)
    synthetic_seed: int | None = _key("Synthetic: the seed that generates the data (default: the run's seed); "
                                      "fix it to compare seeds on one dataset")
    synthetic_clients: int | None = _key("Synthetic: how many clients generate the data (default: data.num_clients); "
                                         "fix it to split one dataset among any number of clients", added=True)
    verify: bool = _key("check dataset files against the publisher's checksums", True)
    augment: bool | None = _key("random crop (padding 4) and horizontal flip of each training sample, "
                                "on the device (default: on for cifar10, off otherwise; images only)")


@dataclass(frozen=True)
class ModelConfig:
    name: str | None = _key("model (default: cnn for mnist, resnet20 for cifar10, logreg for synthetic), or one "
                            "from outside afl: 'package.module:factory' or an installed afl.models entry point "
                            "(docs/extending.md)", None, MODELS,
                            beyond=lambda name: extensions.external(extensions.MODEL_GROUP, name, key="model.name"))


@dataclass(frozen=True)
class ClientConfig:
    optimizer: str = _key("local optimizer", "sgd", OPTIMIZERS)
    lr: float = _key("local learning rate (gamma_0 of the delay-aware rule)", 0.05)
    momentum: float = _key("SGD momentum", 0.0)
    weight_decay: float = _key("L2 weight decay", 0.0)
    epochs: int | None = _key("local epochs per task (default 1 unless client.steps is set)")
    steps: int | None = _key("local SGD steps per task instead of epochs")
    batch_size: int = _key("local batch size B", 64)
    lr_rule: str | None = _key("local lr rule (default: delay_aware for afl, else constant)",
                               None, lr_rules.LOCAL_RULES)
    lr_alpha: float = _key("alpha of the delay-aware rule gamma_0/(sqrt(e+1)(1+alpha d))", 0.01)
    schedule: str = _key("lr schedule over server versions", "constant", lr_rules.SCHEDULES)
    schedule_gamma: float = _key("factor of the step schedule", 0.1)
    schedule_every: int | None = _key("server versions between steps of the step schedule")
    patience: int | None = _key("early stopping: local epochs without improvement (off if unset)")


@dataclass(frozen=True)
class StalenessConfig:
    name: str | None = _key("s(tau) (default: polynomial for afl/fedasync, fedbuff for fedbuff, "
                            "constant otherwise)", None, tuple(staleness.FUNCTIONS))
    a: float | None = _key("exponent a (polynomial) or slope a (hinge)")
    b: float | None = _key("threshold b (hinge)")
    beta: float | None = _key("rate beta (inverse_linear, exponential)")


@dataclass(frozen=True)
class RoutingConfig:
    """A routing rule instead of a list of probabilities: ``p_i ~ mu_i^power`` of the run's client
    rates, or the optimum of the routing bound (``afl.queueing.routing``) with constants from a
    pilot run, computed when the run starts (``afl.run.pilot.optimal_routing``)."""
    power: float | None = _key("p_i proportional to mu_i^power (0: uniform, 1: equal loads)")
    optimize: str | None = _key("the bound's optimum per server update or per unit of wall-clock time",
                                None, ROUTING_OBJECTIVES)
    pilot: int = _key("optimize: AsyncSGD updates of the pilot run that estimates A, L, sigma, zeta", 200)
    pilot_seed: int | None = _key("optimize: the pilot's seed (default: the run's; give one apart from the "
                                  "evaluation seeds)")
    p_min: float | None = _key("optimize: the least probability of a client")
    time_budget: float | None = _key("optimize: time: the wall-clock budget of the bound (default run.time)")


@dataclass(frozen=True)
class AlgorithmConfig:
    name: str = _key("server rule, or one from outside afl: 'package.module:RULE' or an installed afl.rules entry "
                     "point (docs/extending.md)", "afl", tuple(rules.RULES),
                     beyond=lambda name: extensions.external(extensions.RULE_GROUP, name))
    concurrency: int = _key("tasks in flight m (clients per round for sfl/afl)", 5)
    staleness: StalenessConfig = _key("staleness function s(tau) and its parameters",
                                      factory=StalenessConfig)
    buffer_size: int | None = _key(f"results per server step: fedbuff's buffer K, rennala's batch S (default "
                                   f"min(m, {DEFAULT_BUFFER})), fadas's M (default min(m, 5)), msync's first m of a "
                                   "round (default: all), mindflayer's S, the gradients a round aims at (default "
                                   "min(m, 10))")
    mixing: float = _key("fedasync mixing a in a_t = a s(tau)", 0.5)
    server_lr: float = _key("server step size (fedbuff eta_g, asyncsgd eta, rennala/ringmaster/ringleader/msync/mindflayer gamma)", 1.0)
    step_rule: str = _key("asyncsgd/fadas step size rule", "constant", lr_rules.STEP_RULES)
    tau_c: int | None = _key("delay-adaptive threshold tau_C (default: m)")
    drop_stale: bool = _key("delay-adaptive: drop updates with tau > tau_C instead of shrinking",
                            False)
    selection: str | None = _key("client selection (default: routing for asyncsgd, "
                                 "else without_replacement)", None, SELECTIONS)
    routing: tuple[float, ...] | str | RoutingConfig | None = _key(
        "routing probabilities p: a list of n numbers, 'uniform', a JSON file, {power: a} or "
        "{optimize: update|time, pilot: N, pilot_seed: S}")
    weighting: str = _key("aggregation weights n_k (data_size) or 1 (uniform)", "data_size",
                          WEIGHTINGS)
    max_delay: int | None = _key("ringmaster: the delay threshold R: a gradient of delay >= R is ignored "
                                 "(default: m)", added=True)
    stop_stale: bool = _key("ringmaster: stop a computation as soon as its delay reaches R instead of ignoring "
                            "its gradient on arrival", False, added=True)
    server_beta1: float | None = _key("fadas: AMSGrad's first-moment decay beta1 (default 0.9)", added=True)
    server_beta2: float | None = _key("fadas: AMSGrad's second-moment decay beta2 (default 0.99)", added=True)
    server_eps: float | None = _key("fadas: AMSGrad's epsilon (default 1e-8)", added=True)
    time_limit: float | None = _key("mindflayer: an attempt whose draw S (timing.distribution, a rate-1 client's "
                                    "time) exceeds it is stopped at the time of S = time_limit", added=True)
    task_timeout: float = _key("virtual time after which the server notices a task lost to a client gone offline "
                               "(timing.availability, on_offline: drop) and replaces it (0: at once)", 0.0, added=True)
    over_select: float = _key("synchronous rounds (sfl, msync): send ceil(m * over_select) tasks and close the round "
                              "at the rule's batch; the stragglers are stopped (Bonawitz et al. 2019)", 1.0, added=True)
    round_deadline: float | None = _key("synchronous rounds (sfl, msync): close a round this much virtual time after "
                                        "it began, with the results in by then (off if unset)", added=True)


@dataclass(frozen=True)
class RateGroup:
    fraction: float = _key("share of the clients in this group", 1.0)
    rate: float = _key("their rate mu", 1.0)


@dataclass(frozen=True)
class RatesConfig:
    kind: str = _key("how client rates mu_i are set", "constant", RATE_KINDS)
    value: float = _key("the rate of every client (kind: constant)", 1.0)
    groups: tuple[RateGroup, ...] = _key("groups of clients [{fraction, rate}, ...] "
                                         "(kind: groups)", ())
    sigma: float = _key("log-std of lognormal rates with mean 1 (kind: lognormal)", 1.0)
    low: float = _key("smallest rate (kind: uniform)", 0.5)
    high: float = _key("largest rate (kind: uniform)", 1.5)
    path: str | None = _key("CSV with columns client,rate (kind: trace)")
    exponent: float = _key("mu_i = i^-exponent for clients i = 1..n, compute times tau_i = i^exponent (kind: power)",
                           0.5, added=True)


@dataclass(frozen=True)
class ModulationConfig:
    kind: str = _key("how client speeds change over virtual time: none, markov (two states per client: "
                     "fast at its rate mu_i, slow at mu_i x slow_factor, exponential sojourns, started from the "
                     "stationary state) or trace (a CSV)", "none", MODULATIONS)
    slow_factor: float = _key("markov: the slow state's speed as a share of the client's rate", 0.2)
    to_slow: float = _key("markov: rate of switching from fast to slow (per unit of virtual time)", 0.1)
    to_fast: float = _key("markov: rate of switching from slow back to fast", 0.1)
    path: str | None = _key("trace: CSV with columns client,time,rate (each client's speed from that time on; "
                            "a row at time 0 per client; replaces timing.rates)")


@dataclass(frozen=True)
class AvailabilityGroup:
    fraction: float = _key("share of the clients in this group", 1.0)
    mean_on: float = _key("their mean online period", 10.0)
    mean_off: float = _key("their mean offline period", 10.0)


@dataclass(frozen=True)
class AvailabilityConfig:
    kind: str = _key("when clients are online: always, markov (exponential on/off periods), diurnal (a daily "
                     "cycle, each client at its own phase) or trace (a CSV of online windows)", "always", AVAILABILITIES)
    mean_on: float = _key("markov: mean online period (virtual time)", 10.0)
    mean_off: float = _key("markov: mean offline period", 10.0)
    groups: tuple[AvailabilityGroup, ...] = _key("markov: groups of clients [{fraction, mean_on, mean_off}, ...] "
                                                 "instead of one mean_on and mean_off", ())
    period: float = _key("diurnal: the length of a day (virtual time)", 100.0)
    slots: int = _key("diurnal: slots per day; a client's state is drawn once per slot", 24)
    share: float = _key("diurnal: mean probability of being online", 0.5)
    amplitude: float = _key("diurnal: p(t) = share (1 + amplitude cos(2 pi (t / period - phase))), clipped to [0, 1]",
                            1.0)
    path: str | None = _key("trace: CSV with columns client,start,end (online windows; offline outside them)")
    on_offline: str = _key("a task whose client goes offline is lost (drop; noticed after algorithm.task_timeout) "
                           "or paused until the client is back (pause)", "drop", ON_OFFLINE)


@dataclass(frozen=True)
class TimingConfig:
    distribution: str = _key("compute time draw for a client of rate 1", "exponential",
                             DISTRIBUTIONS)
    low: float = _key("uniform draw: lower bound", 0.0)
    high: float = _key("uniform draw: upper bound", 2.0)
    sigma: float = _key("lognormal draw: log-std (mean 1)", 1.0)
    per: str = _key("the draw is the time of a whole task or of one local step", "task",
                    WORK_UNITS)
    download: float = _key("fixed download time of a task", 0.0)
    upload: float = _key("fixed upload time of a task", 0.0)
    rates: RatesConfig = _key("client rates mu_i: compute time = draw / mu_i",
                              factory=RatesConfig)
    modulation: ModulationConfig = _key("client speeds that change over time", factory=ModulationConfig)
    availability: AvailabilityConfig = _key("clients that come and go", factory=AvailabilityConfig, added=True)


@dataclass(frozen=True)
class RunConfig:
    updates: int | None = _key("stop after this many server updates")
    rounds: int | None = _key(f"stop after this many rounds of m results (default "
                              f"{DEFAULT_ROUNDS} when no budget is set)")
    time: float | None = _key("stop at this virtual time")
    eval_every: int = _key("evaluate the global model every this many server updates", 10)
    eval_batch: int = _key("evaluation batch size", 2048)
    workload: str = _key("train, or none: skip training (timing/staleness studies)", "train",
                         WORKLOADS)
    device: str = _key("training device", "auto", DEVICES)
    task_batch: int = _key("most pending tasks trained together in one batch (memory grows with it); on a CPU "
                          "fewer: about 128 samples a pass for a convolutional model, 256 for others", 64)
    precision: str = _key("float arithmetic: tf32 (TensorFloat-32 matmuls and convolutions on CUDA, exact on "
                          "CPU), fp32 (exact everywhere), bf16 (bfloat16 autocast of local training, else tf32)",
                          "tf32", PRECISIONS)
    channels_last: bool = _key("channels-last memory format for convolutional models", True)
    compile: bool = _key("torch.compile local training's forward pass and loss (one graph per number of tasks "
                         "in a step; CUDA graphs on a GPU, a C++ compiler needed on CPU)", False)
    grad_norm_samples: int = _key("at each evaluation also record ||grad f||^2 of the training loss on this many "
                                  "fixed random training samples (grad_norm_sq in evals; 0: off)", 0)
    sampling_draws: int = _key("at each evaluation measure the variance of the mean of m clients' updates from the "
                               "global model over this many uniform draws, with and without replacement, and for "
                               "afl the same updates combined as the rule combined its results in each server "
                               "update since the previous evaluation (its clients, weights n_k s(tau)) "
                               "(sampling.parquet; 0: off)", 0)
    checkpoint_every: int | None = _key("save the whole state every this many server updates (off if unset)")
    checkpoint_minutes: float = _key("also save every this many wall-clock minutes", 5.0)


@dataclass(frozen=True)
class Config:
    seed: int = _key("master seed; every random stream is keyed from it", 0)
    data: DataConfig = _key("dataset and partition", factory=DataConfig)
    model: ModelConfig = _key("model", factory=ModelConfig)
    client: ClientConfig = _key("local training", factory=ClientConfig)
    algorithm: AlgorithmConfig = _key("server rule", factory=AlgorithmConfig)
    timing: TimingConfig = _key("task durations", factory=TimingConfig)
    run: RunConfig = _key("budget and evaluation", factory=RunConfig)


# ----------------------------------------------------------------------------- parsing


_YAML11_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


_fail = config_fail


def _type_name(tp) -> str:
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        return " or ".join(_type_name(a) for a in typing.get_args(tp) if a is not type(None))
    if typing.get_origin(tp) is tuple:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}[tp]


def _coerce(key: str, value, tp):
    """Check ``value`` against the annotation ``tp`` and convert it (lists to tuples, ints to floats)."""
    args = typing.get_args(tp)
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        if value is None and type(None) in args:
            return None
        mapping = [a for a in args if dataclasses.is_dataclass(a)]
        if isinstance(value, dict) and mapping:  # a mapping is that dataclass: its own errors, one line each
            return _coerce(key, value, mapping[0])
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(key, value, arg)
            except ConfigError:
                continue
        _fail(key, f"expected {_type_name(tp)}, got {value!r}", f"set {key} to {_type_name(tp)}")
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    if typing.get_origin(tp) is tuple:
        if not isinstance(value, (list, tuple)):
            _fail(key, f"expected {_type_name(tp)}, got {value!r}", f"write {key} as a YAML list")
        return tuple(_coerce(f"{key}[{i}]", v, args[0]) for i, v in enumerate(value))
    if tp is float:
        if isinstance(value, str) and _YAML11_FLOAT.fullmatch(value.strip()):
            value = float(value)  # PyYAML reads 1e-3 (no dot) as a string
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            # The one place every float key passes: no key gives inf or nan a meaning.
            if not math.isfinite(value):
                _fail(key, f"must be a finite number, got {value}", f"set {key} to a finite number")
            return float(value)
    if tp is int and isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, tp) and not (tp is int and isinstance(value, bool)):
        return value
    _fail(key, f"expected {_type_name(tp)}, got {value!r}", f"set {key} to {_type_name(tp)}")


def _build(cls, raw, prefix: str):
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys with a did-you-mean."""
    if raw is None:
        raw = {}
    if cls is StalenessConfig and isinstance(raw, str):
        raw = {"name": raw}
    where = prefix or "config"
    if not isinstance(raw, dict):
        _fail(where, f"expected a mapping, got {raw!r}", f"write {where} as 'key: value' lines")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    values = {}
    for k, v in raw.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if k not in names:
            close = difflib.get_close_matches(str(k), names, n=1)
            hint = f"did you mean '{prefix + '.' if prefix else ''}{close[0]}'?" if close else \
                f"valid keys here: {', '.join(names)}"
            _fail(key, "unknown key", hint)
        values[k] = _coerce(key, v, hints[k])
        meta = next(f.metadata for f in dataclasses.fields(cls) if f.name == k)
        choices, beyond = meta["choices"], meta["beyond"]
        if choices and values[k] is not None and values[k] not in choices and not (beyond and beyond(values[k])):
            close = difflib.get_close_matches(str(values[k]), choices, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"choose one of {', '.join(choices)}"
            problem = f"{values[k]!r} is not one of {', '.join(choices)}"
            if beyond:
                problem += " nor an import path 'package.module:OBJECT' or an installed entry point (docs/extending.md)"
            _fail(key, problem, hint)
    return cls(**values)


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply ``dotted.key=value`` overrides (values parsed as YAML) to a raw config mapping."""
    raw = json.loads(json.dumps(raw or {}))
    for item in overrides:
        if "=" not in item:
            _fail(item, "an override must look like dotted.key=value", f"write --set {item}=VALUE")
        path, text = item.split("=", 1)
        node = raw
        parts = path.strip().split(".")
        for i, part in enumerate(parts[:-1]):
            if not isinstance(node.get(part, {}), dict):
                _fail(".".join(parts[: i + 1]), "is not a section", f"override {path} differently")
            node = node.setdefault(part, {})
        node[parts[-1]] = parse_yaml(text, f"--set {path.strip()}")
    return raw


class _UniqueKeyLoader(yaml.SafeLoader):
    """The safe loader, refusing a key written twice in one mapping (PyYAML keeps the last)."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in seen:
                _fail(f"{self.name}: {key}", f"written twice in one mapping (lines {seen[key]} and {line})",
                      "keep one of them")
            seen[key] = line
        return super().construct_mapping(node, deep)


def parse_yaml(text: str, name: str = "<string>"):
    """YAML with the safe loader and no repeated keys (``name`` is what errors call the source)."""
    loader = _UniqueKeyLoader(text)
    loader.name = name
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def read_yaml(path: str | Path) -> dict:
    """Read a YAML mapping with the safe loader; a missing or malformed file, a top level that is
    not a mapping, or a key written twice is a ConfigError."""
    path = Path(path)
    check_size(path, str(path), MAX_CONFIG_BYTES, "YAML config")
    try:
        raw = parse_yaml(path.read_text(), str(path))
    except FileNotFoundError:
        _fail(str(path), "no such config file", "check the path")
    except UnicodeDecodeError:
        _fail(str(path), "is not UTF-8 text (a binary file?)", "give a YAML config file")
    except OSError as exc:
        _fail(str(path), f"cannot read ({exc.strerror})", "give a readable YAML config file")
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark else ""
        _fail(str(path), f"not valid YAML{line}", "fix the syntax (indentation, colons, quotes)")
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        _fail(str(path), "the top level must be a mapping of sections", "see config/runs/ for examples")
    return raw


def load_config(source: str | Path | dict | None = None, overrides: list[str] = ()) -> Config:
    """Load, override, resolve defaults and validate a config (a YAML path or a mapping)."""
    if isinstance(source, (str, Path)):
        raw = read_yaml(source)
    elif isinstance(source, dict) or source is None:
        raw = source
    else:
        _fail("config", f"the top level must be a mapping of sections, got {type(source).__name__}",
              "pass a YAML file's path or a dict")
    raw = apply_overrides(raw, list(overrides))
    return validate(resolve(_build(Config, raw, "")))


# ----------------------------------------------------------------------------- resolution


def resolve(cfg: Config) -> Config:
    """Fill the defaults that depend on other keys, so the saved config is explicit."""
    r = dataclasses.replace
    alg = cfg.algorithm
    rule = rules.get(alg.name)
    data = r(cfg.data, partition=cfg.data.partition
             or ("natural" if cfg.data.name == "synthetic" else "dirichlet"),
             augment=cfg.data.augment if cfg.data.augment is not None else cfg.data.name == "cifar10")
    model = r(cfg.model, name=cfg.model.name or DEFAULT_MODEL.get(data.name, "mlp"))
    client = cfg.client
    if client.epochs is None and client.steps is None and not rule.gradient:
        client = r(client, epochs=1)
    client = r(client, lr_rule=client.lr_rule or rule.lr_rule)
    name = alg.staleness.name or rule.staleness
    defaults = staleness.PARAMS[name]
    given = {k: getattr(alg.staleness, k) for k in ("a", "b", "beta")}
    for k, v in given.items():
        if v is not None and k not in defaults:
            allowed = ", ".join(defaults) or "no parameters"
            _fail(f"algorithm.staleness.{k}", f"'{name}' takes {allowed}",
                  f"remove algorithm.staleness.{k}")
    stal = StalenessConfig(name=name, **{k: (given[k] if given[k] is not None else defaults.get(k))
                                         for k in given})
    selection = alg.selection or rule.selection
    routing = alg.routing
    if routing is None and selection == "routing":
        routing = "uniform"
    alg = r(alg, staleness=stal, selection=selection, routing=routing,
            tau_c=alg.tau_c if alg.tau_c is not None else alg.concurrency)
    alg = r(alg, **rule.defaults(alg))
    run = cfg.run
    if run.updates is None and run.rounds is None and run.time is None:
        run = r(run, rounds=DEFAULT_ROUNDS)
    return r(cfg, data=data, model=model, client=client, algorithm=alg, run=run)


# ----------------------------------------------------------------------------- validation


def _positive(key: str, value, example) -> None:
    if value is not None and not value > 0:
        _fail(key, f"must be > 0, got {value}", f"set {key} to a positive value such as {example}")


def _at_least(key: str, value, low, example) -> None:
    if value is not None and value < low:
        _fail(key, f"must be >= {low}, got {value}", f"set {key} to {example} or more")


def validate(cfg: Config) -> Config:
    """Check ranges and combinations; raise ConfigError naming the key and the fix."""
    d, c, a, t, run = cfg.data, cfg.client, cfg.algorithm, cfg.timing, cfg.run
    _at_least("seed", cfg.seed, 0, 0)
    _at_least("data.num_clients", d.num_clients, 1, 10)
    _positive("data.alpha", d.alpha, 0.5)
    _at_least("data.shards_per_client", d.shards_per_client, 1, 2)
    _at_least("data.min_size", d.min_size, 1, 10)
    _at_least("data.train_subset", d.train_subset, d.num_clients, d.num_clients * 100)
    _at_least("data.test_subset", d.test_subset, 1, 1000)
    _positive("data.synthetic_alpha", d.synthetic_alpha, 1.0)
    _positive("data.synthetic_beta", d.synthetic_beta, 1.0)
    _at_least("data.synthetic_seed", d.synthetic_seed, 0, 0)
    if d.synthetic_seed is not None and d.name != "synthetic":
        _fail("data.synthetic_seed", f"only synthetic data is generated, not {d.name}",
              "remove data.synthetic_seed or set data.name: synthetic")
    _at_least("data.synthetic_clients", d.synthetic_clients, 1, 10)
    if d.synthetic_clients is not None and d.name != "synthetic":
        _fail("data.synthetic_clients", f"only synthetic data is generated, not {d.name}",
              "remove data.synthetic_clients or set data.name: synthetic")
    if d.synthetic_clients not in (None, d.num_clients) and d.partition == "natural":
        _fail("data.synthetic_clients", f"{d.synthetic_clients} generating clients have no natural split among "
              f"{d.num_clients}", "set data.partition to iid, dirichlet or shards")
    if d.partition == "natural" and d.train_subset is not None:
        _fail("data.train_subset", "the natural partition of synthetic data cannot be subsampled",
              "remove data.train_subset, or set data.partition to iid, dirichlet or shards")
    if d.partition == "natural" and d.name != "synthetic":
        _fail("data.partition", f"'natural' needs a federated dataset, {d.name} has none",
              "use iid, dirichlet or shards")
    if d.augment and d.name == "synthetic":
        _fail("data.augment", "crops and flips need images, synthetic data are vectors", "set data.augment: false")
    if d.name == "synthetic" and cfg.model.name in ("cnn", "resnet20"):
        _fail("model.name", f"{cfg.model.name} needs images, synthetic data are vectors",
              "use logreg or mlp")

    _positive("client.lr", c.lr, 0.05)
    _at_least("client.momentum", c.momentum, 0.0, 0.0)
    if c.momentum >= 1:
        _fail("client.momentum", f"must be < 1, got {c.momentum}", "use a value in [0, 1) such as 0.9")
    _at_least("client.weight_decay", c.weight_decay, 0.0, 0.0)
    _at_least("client.epochs", c.epochs, 1, 1)
    _at_least("client.steps", c.steps, 1, 10)
    _at_least("client.batch_size", c.batch_size, 1, 64)
    _at_least("client.lr_alpha", c.lr_alpha, 0.0, 0.01)
    _positive("client.schedule_gamma", c.schedule_gamma, 0.1)
    if c.schedule_gamma > 1:
        _fail("client.schedule_gamma", f"must be <= 1, got {c.schedule_gamma}", "use a decay factor such as 0.1")
    _at_least("client.schedule_every", c.schedule_every, 1, 100)
    _at_least("client.patience", c.patience, 1, 10)
    if c.epochs is not None and c.steps is not None:
        _fail("client.steps", "client.epochs and client.steps are both set", "keep only one of them")
    rule = rules.get(a.name)
    if rule.gradient and (c.epochs is not None or c.steps is not None):
        key = "client.epochs" if c.epochs is not None else "client.steps"
        _fail(key, f"{a.name} clients return one stochastic gradient, not local epochs or steps",
              f"remove {key}")
    if c.patience is not None and c.epochs is None:
        _fail("client.patience", "early stopping counts local epochs", "set client.epochs or remove client.patience")
    if c.schedule == "cosine" and run.updates is None and run.rounds is None:
        _fail("client.schedule", "the cosine schedule needs a budget in updates or rounds", "set run.updates or run.rounds")
    if c.schedule == "step" and c.schedule_every is None:
        _fail("client.schedule_every", "the step schedule needs its period", "set client.schedule_every, e.g. 100")

    n, m = d.num_clients, a.concurrency
    _at_least("algorithm.concurrency", m, 1, 5)
    if a.selection == "without_replacement" and m > n:
        _fail("algorithm.concurrency", f"{m} tasks in flight but only {n} clients and selection "
              "without replacement", f"lower it to at most {n} or set algorithm.selection: with_replacement")
    if rule.all_clients and (m != n or a.selection != "without_replacement"):
        key, fix = (("algorithm.concurrency", f"set algorithm.concurrency: {n}") if m != n else
                    ("algorithm.selection", "set algorithm.selection: without_replacement"))
        _fail(key, f"{a.name} keeps one computation in flight on each of the {n} clients", fix)
    rules.validate(a)
    _positive("algorithm.mixing", a.mixing, 0.5)
    if a.mixing >= 1:
        _fail("algorithm.mixing", f"must be < 1, got {a.mixing}", "use a value in (0, 1) such as 0.5")
    _positive("algorithm.server_lr", a.server_lr, 1.0)
    _at_least("algorithm.tau_c", a.tau_c, 0, m)
    try:
        staleness.make(a.staleness.name, **{k: v for k, v in dataclasses.asdict(a.staleness).items()
                                            if k != "name" and v is not None})
    except ValueError as exc:
        _fail("algorithm.staleness", str(exc).rstrip("."), "see the staleness table in docs/simulator.md")
    if a.selection == "routing" and isinstance(a.routing, RoutingConfig):
        _check_routing_rule(a.routing, cfg)
    elif a.selection == "routing":
        routing_probabilities(a.routing, n)
    elif a.routing is not None:
        _fail("algorithm.routing", f"routing probabilities need algorithm.selection: routing, not {a.selection}",
              "set algorithm.selection: routing or remove algorithm.routing")

    _at_least("timing.low", t.low, 0.0, 0.0)
    if t.high <= t.low:
        _fail("timing.high", f"must exceed timing.low ({t.low}), got {t.high}", "raise timing.high")
    _positive("timing.sigma", t.sigma, 1.0)
    _at_least("timing.download", t.download, 0.0, 0.0)
    _at_least("timing.upload", t.upload, 0.0, 0.0)
    limit = rule.time_limit(a)
    if limit is not None and service_cdf(t, limit) == 0:
        _fail("algorithm.time_limit", f"no draw of timing.distribution {t.distribution} is below {limit}: every "
              "attempt would be stopped", "raise it above the distribution's smallest draw")
    _check_rates(t.rates)
    mod = t.modulation
    if mod.kind == "markov":
        if not 0 < mod.slow_factor <= 1:
            _fail("timing.modulation.slow_factor", f"must be in (0, 1], got {mod.slow_factor}", "set it to e.g. 0.2")
        _positive("timing.modulation.to_slow", mod.to_slow, 0.1)
        _positive("timing.modulation.to_fast", mod.to_fast, 0.1)
    if mod.kind == "trace":
        if not mod.path:
            _fail("timing.modulation.path", "kind: trace needs a CSV file",
                  "set timing.modulation.path to a CSV with columns client,time,rate")
        if t.rates.kind != "constant" or t.rates.value != 1.0:
            _fail("timing.modulation.path", "the trace gives each client's speed over time, timing.rates would be "
                  "ignored", "remove timing.rates (or set kind: constant, value: 1)")
    elif mod.path is not None:
        _fail("timing.modulation.path", f"only kind: trace reads a file, not {mod.kind}",
              "set timing.modulation.kind: trace or remove the path")
    _check_availability(cfg, rule)
    _check_files(cfg)
    if run.workload == "none" and t.per == "step" and c.steps is None and not rule.gradient:
        _fail("timing.per", "step timing of local epochs counts each client's batches, and run.workload: none "
              "builds no shards to count", "set client.steps (local steps per task) or timing.per: task")

    _at_least("run.updates", run.updates, 1, 100)
    _at_least("run.rounds", run.rounds, 1, 20)
    _positive("run.time", run.time, 100.0)
    _at_least("run.eval_every", run.eval_every, 1, 10)
    _at_least("run.eval_batch", run.eval_batch, 1, 2048)
    _at_least("run.task_batch", run.task_batch, 1, 64)
    _at_least("run.checkpoint_every", run.checkpoint_every, 1, 100)
    _at_least("run.grad_norm_samples", run.grad_norm_samples, 0, 1000)
    _at_least("run.sampling_draws", run.sampling_draws, 0, 1000)
    if run.sampling_draws == 1:
        _fail("run.sampling_draws", "one draw gives no variance", "set it to 0 (off) or at least 2, e.g. 1000")
    for key, value in (("run.grad_norm_samples", run.grad_norm_samples), ("run.sampling_draws", run.sampling_draws)):
        if value and run.workload == "none":
            _fail(key, "measures the model, and run.workload: none trains none", f"set {key}: 0 or run.workload: train")
    if run.sampling_draws and d.num_clients < 2:
        _fail("run.sampling_draws", "sampling needs at least 2 clients", "raise data.num_clients or set it to 0")
    _positive("run.checkpoint_minutes", run.checkpoint_minutes, 5.0)
    return cfg


def _check_files(cfg) -> None:
    """Read every trace the config names, as the run will (the routing file is read above): a bad
    file is refused before any data is loaded or any job submitted, with the run's one line."""
    from afl.sim import availability, timing  # no torch: the login node validates every cell

    t, n = cfg.timing, cfg.data.num_clients
    if t.rates.kind == "trace":
        timing.read_rate_trace(Path(t.rates.path), n)
    if t.modulation.kind == "trace":
        timing.read_speed_trace(Path(t.modulation.path), n)
    if t.availability.kind == "trace":
        availability.read_trace(Path(t.availability.path), n)


def _check_availability(cfg, rule) -> None:
    """``timing.availability`` and the keys of what the server does about it."""
    av, a, n = cfg.timing.availability, cfg.algorithm, cfg.data.num_clients
    if av.kind == "markov":
        _positive("timing.availability.mean_on", av.mean_on, 10.0)
        _positive("timing.availability.mean_off", av.mean_off, 10.0)
        for i, g in enumerate(av.groups):
            _positive(f"timing.availability.groups[{i}].fraction", g.fraction, 0.5)
            _positive(f"timing.availability.groups[{i}].mean_on", g.mean_on, 10.0)
            _positive(f"timing.availability.groups[{i}].mean_off", g.mean_off, 10.0)
        total = sum(g.fraction for g in av.groups)
        if av.groups and abs(total - 1) > 1e-6:
            _fail("timing.availability.groups", f"fractions sum to {total:g}, not 1", "make the fractions add up to 1")
    elif av.groups:
        _fail("timing.availability.groups", f"only kind: markov has groups, not {av.kind}",
              "set timing.availability.kind: markov or remove the groups")
    if av.kind == "diurnal":
        _positive("timing.availability.period", av.period, 100.0)
        _at_least("timing.availability.slots", av.slots, 1, 24)
        if not 0 < av.share <= 1:
            _fail("timing.availability.share", f"must be in (0, 1], got {av.share}", "set it to e.g. 0.5")
        _at_least("timing.availability.amplitude", av.amplitude, 0.0, 1.0)
    if av.kind == "trace" and not av.path:
        _fail("timing.availability.path", "kind: trace needs a CSV file",
              "set timing.availability.path to a CSV with columns client,start,end")
    if av.kind != "trace" and av.path is not None:
        _fail("timing.availability.path", f"only kind: trace reads a file, not {av.kind}",
              "set timing.availability.kind: trace or remove the path")
    if av.kind != "always" and rule.barrier and rule.all_clients:
        _fail("timing.availability.kind", f"{a.name} plans each round's tasks on every client, whether online or not",
              "set timing.availability.kind: always or use another rule")
    if av.on_offline == "pause" and av.kind == "always":
        _fail("timing.availability.on_offline", "no client ever goes offline with kind: always",
              "remove on_offline or set timing.availability.kind")
    _at_least("algorithm.task_timeout", a.task_timeout, 0.0, 1.0)
    if a.task_timeout and (av.kind == "always" or av.on_offline == "pause"):
        _fail("algorithm.task_timeout", "no task is ever lost: it needs timing.availability with on_offline: drop",
              "remove algorithm.task_timeout or set timing.availability")
    _at_least("algorithm.over_select", a.over_select, 1.0, 1.3)
    _positive("algorithm.round_deadline", a.round_deadline, 10.0)
    for key, value, default in (("over_select", a.over_select, 1.0), ("round_deadline", a.round_deadline, None)):
        if value == default:
            continue
        if not rule.barrier or rule.all_clients:
            _fail(f"algorithm.{key}", f"closes synchronous rounds of selected clients, and {a.name} has none",
                  f"remove algorithm.{key} or use algorithm.name: sfl")
    closes = rule.barrier and not rule.all_clients and (a.over_select > 1 or a.round_deadline is not None
                                                        or av.kind != "always")
    if closes and a.selection != "without_replacement":
        key = "algorithm.selection"
        _fail(key, f"a round that closes with tasks out stops them, which needs one task per client, not selection "
              f"{a.selection}", "set algorithm.selection: without_replacement")
    if math.ceil(a.concurrency * a.over_select - 1e-9) > n and a.selection == "without_replacement":
        _fail("algorithm.over_select", f"ceil({a.concurrency} * {a.over_select}) tasks a round but only {n} clients",
              f"lower it to at most {n / a.concurrency:g}")


def _check_rates(r: RatesConfig) -> None:
    _positive("timing.rates.value", r.value, 1.0)
    _positive("timing.rates.sigma", r.sigma, 1.0)
    _positive("timing.rates.low", r.low, 0.5)
    if r.high < r.low:
        _fail("timing.rates.high", f"must be >= timing.rates.low ({r.low}), got {r.high}", "raise it")
    if r.kind == "groups":
        if not r.groups:
            _fail("timing.rates.groups", "kind: groups needs at least one group",
                  "add groups: [{fraction: 0.5, rate: 1.0}, {fraction: 0.5, rate: 0.2}]")
        for i, g in enumerate(r.groups):
            _positive(f"timing.rates.groups[{i}].fraction", g.fraction, 0.5)
            _positive(f"timing.rates.groups[{i}].rate", g.rate, 1.0)
        total = sum(g.fraction for g in r.groups)
        if abs(total - 1) > 1e-6:
            _fail("timing.rates.groups", f"fractions sum to {total:g}, not 1", "make the fractions add up to 1")
    if r.kind == "trace" and not r.path:
        _fail("timing.rates.path", "kind: trace needs a CSV file", "set timing.rates.path to a CSV with columns client,rate")


def _check_routing_rule(rule: RoutingConfig, cfg) -> None:
    if (rule.power is None) == (rule.optimize is None):
        _fail("algorithm.routing", "a routing rule needs exactly one of power and optimize",
              "write {power: 1} or {optimize: time, pilot: 200, pilot_seed: 1000}")
    if rule.power is not None:
        extra = [k for k in ("pilot_seed", "p_min", "time_budget") if getattr(rule, k) is not None]
        if extra:
            _fail(f"algorithm.routing.{extra[0]}", "only an optimized routing takes it", "remove it")
        return
    _at_least("algorithm.routing.pilot", rule.pilot, 4, 200)
    if rule.p_min is not None and not 0 <= rule.p_min < 1 / cfg.data.num_clients:
        _fail("algorithm.routing.p_min", f"must be in [0, 1/n), got {rule.p_min}", "set it to e.g. 0.001")
    if rule.time_budget is not None:
        _positive("algorithm.routing.time_budget", rule.time_budget, 300)
    a = cfg.algorithm
    if not rules.get(a.name).gradient or rules.get(a.name).batch(a) != 1:
        _fail("algorithm.routing.optimize", f"the bound is AsyncSGD's, its pilot runs AsyncSGD updates, not {a.name}",
              "set algorithm.name: asyncsgd or give the routing as a list")
    if cfg.run.workload == "none":
        _fail("algorithm.routing.optimize", "the pilot trains, but run.workload is none",
              "set run.workload: train or give the routing as a list")
    if rule.optimize == "time" and rule.time_budget is None and cfg.run.time is None:
        _fail("algorithm.routing.time_budget", "optimize: time needs a wall-clock budget",
              "set algorithm.routing.time_budget or run.time")


def routing_probabilities(routing, n: int) -> list[float]:
    """The routing vector ``p`` of ``algorithm.routing``: 'uniform' (or unset), a list of ``n``
    probabilities, or a JSON file holding such a list or ``{"p": [...]}`` (``afl queue optimize``)."""
    if routing == "uniform" or routing is None:
        return [1.0 / n] * n
    source = "algorithm.routing"
    if isinstance(routing, str):
        source = f"algorithm.routing: {routing}"
        check_size(Path(routing), "algorithm.routing", MAX_CONFIG_BYTES, "routing JSON file")
        try:
            raw = json.loads(Path(routing).read_text())
        except OSError as exc:
            _fail("algorithm.routing", f"cannot read {routing} ({exc.strerror})",
                  "give 'uniform', a list of n probabilities, or the JSON file from `afl queue optimize`")
        except ValueError:
            _fail("algorithm.routing", f"{routing} is not JSON", "give the JSON file written by `afl queue optimize`")
        routing = raw["p"] if isinstance(raw, dict) and "p" in raw else raw
        if not isinstance(routing, list) or not all(_is_number(v) for v in routing):
            _fail(source, "holds no list of probabilities", 'write {"p": [p_0, ..., p_n-1]}')
        if not all(math.isfinite(v) for v in routing):
            _fail(source, "holds a probability that is not a finite number", "write finite probabilities")
    if len(routing) != n:
        _fail(source, f"has {len(routing)} entries for {n} clients", f"give exactly {n} probabilities")
    if min(routing) < 0:
        _fail(source, "has a negative probability", "use probabilities >= 0")
    if abs(sum(routing) - 1) > 1e-6:
        _fail(source, f"sums to {sum(routing):g}, not 1", "normalise the probabilities")
    return [float(v) for v in routing]


def data_seed(cfg: Config) -> int:
    """The seed that generates synthetic data: ``data.synthetic_seed``, else the run's seed."""
    return cfg.seed if cfg.data.synthetic_seed is None else cfg.data.synthetic_seed


def routing_vector(routing, rates) -> np.ndarray:
    """p as an array for clients of speeds ``rates``: ``routing_probabilities``, or ``p_i ~ mu_i^a``
    of ``{power: a}`` (``afl.sim.selection.power_routing``). The bound's optimum (``{optimize: ...}``)
    needs a pilot run: ``afl.run.pilot.optimal_routing`` resolves it before the run is built."""
    rates = np.asarray(rates, dtype=float)
    if isinstance(routing, RoutingConfig):
        if routing.power is None:
            raise ConfigError("algorithm.routing: the bound's optimum is computed by a pilot when the run starts; "
                              "fix: resolve it with afl.run.pilot.optimal_routing first")
        return power_routing(rates, routing.power)
    return np.asarray(routing_probabilities(routing, len(rates)), dtype=float)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# ----------------------------------------------------------------------------- output


def to_dict(cfg: Config) -> dict:
    """The config as plain data (tuples become lists), for YAML/JSON."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def _default(f: dataclasses.Field):
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()


def _without_added_defaults(obj, data: dict) -> dict:
    """``data`` (``to_dict`` of ``obj``) less the keys marked ``added`` that are at their default."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if f.metadata["added"] and value == _default(f):
            del data[f.name]
        elif dataclasses.is_dataclass(value):
            _without_added_defaults(value, data[f.name])
    return data


def config_hash(cfg: Config) -> str:
    """A short stable hash of the resolved config: same config, same hash. Keys added later count
    only once set to something else than their default (``_key``'s ``added``)."""
    text = json.dumps(_without_added_defaults(cfg, to_dict(cfg)), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def reference() -> list[tuple[str, str, str]]:
    """(key, default, help) for every key, in declaration order: docs/configuration.md, generated by tools/config_reference.py."""
    rows = []

    def walk(cls, prefix):
        for f in dataclasses.fields(cls):
            key = f"{prefix}{f.name}"
            tp = typing.get_type_hints(cls)[f.name]
            if dataclasses.is_dataclass(tp):
                walk(tp, key + ".")
                continue
            default = _default(f)
            help_ = f.metadata["help"]
            if f.metadata["choices"]:
                help_ += f" ({' | '.join(f.metadata['choices'])})"
            rows.append((key, "unset" if default is None else json.dumps(default), help_))
            if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
                for inner in (a for a in typing.get_args(tp) if dataclasses.is_dataclass(a)):  # a mapping form
                    walk(inner, key + ".")

    walk(Config, "")
    return rows
