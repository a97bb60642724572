"""From a task spec to what a node runs: the app, its trainer on this node's data, the
task's initial model, and the pin of the model's tensors every update must fit."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from node.apps.builtin import BUILTIN_APPS, builtin_app
from node.apps.native import USER_ERRORS, FedApp, NodeConfig, error_line, users_code
from node.apps.refs import load_ref
from node.errors import ConfigError

if TYPE_CHECKING:
    from node.abc import Trainer
    from node.taskspec import TaskSpec


def is_flower_app(obj: Any) -> bool:
    """Whether `obj` is a Flower ClientApp (flwr is imported only if the object comes from it)."""
    if not type(obj).__module__.startswith("flwr"):
        return False
    from flwr.clientapp import ClientApp

    return isinstance(obj, ClientApp)


def app_of(spec: "TaskSpec", ref: str | None = None, base_dir: Path | None = None, *, trust_spec: bool = True) -> Any:
    """The app a node runs for `spec`: `ref` (the node's own `[app] ref`) if given, else the
    spec's app REF, else the built-in app `spec.model` names. A FedApp or a Flower ClientApp.

    A daemon passes `trust_spec=False`: a spec comes from whoever created the task, and importing
    the module it names would run that module's code, so a daemon runs only its own `[app] ref`
    or a built-in app (the spec's pinned tensors check that the two agree)."""
    if ref is None and spec.app is not None and spec.app not in BUILTIN_APPS and not trust_spec:
        raise ConfigError(f"the task's app is {spec.app}, code this node does not run unless told: "
                          "set [app] ref in node.toml to your copy of it")  # fmt: skip
    ref = ref or spec.app
    if ref is None:
        return builtin_app(spec.model)
    return app_at(ref, base_dir)


def app_at(ref: str, base_dir: Path | None = None) -> Any:
    """The app `ref` names (a built-in app's name, or a REF imported now): a FedApp or a Flower
    ClientApp, else ConfigError."""
    if ref in BUILTIN_APPS:
        return BUILTIN_APPS[ref]
    obj = load_ref(ref, base_dir)
    if isinstance(obj, FedApp) or is_flower_app(obj):
        return obj
    raise ConfigError(f"app {ref} is a {type(obj).__name__}, not a FedLedger FedApp or a Flower ClientApp")


def node_trainer(
    spec: "TaskSpec", node_config: NodeConfig, ref: str | None = None, base_dir: Path | None = None, *, trust_spec: bool = True
) -> "Trainer":
    """This node's trainer for a task: the app on the data its `node_config` gives it."""
    from node.training.trainer import trainer_for

    app = app_of(spec, ref, base_dir, trust_spec=trust_spec)
    if isinstance(app, FedApp):
        name = f"app {ref or spec.app or spec.model}"
        with users_code(name, "load_data"):
            train, test = app.load_data(node_config)
        trainer = trainer_for(spec, train, test, app=app)
        trainer.name = name
        return trainer
    from node.apps.flower import FlowerTrainer

    return FlowerTrainer(app, spec, node_config, ref)


def initial_model(
    spec: "TaskSpec",
    seed: int,
    *,
    model_ref: str | None = None,
    initial_file: str | Path | None = None,
    node_config: NodeConfig | None = None,
    base_dir: Path | None = None,
) -> dict[str, np.ndarray]:
    """The task's round-0 model, from (first given wins) a safetensors file, a REF to a callable
    that returns an nn.Module (built under `seed`), or the app: a FedApp's model built under
    `seed`, or a Flower app's own initial parameters (NumPyClient.get_parameters)."""
    from node.training.model import seeded_state

    if initial_file is not None or model_ref is not None:
        if initial_file is not None:
            weights = load_safetensors(Path(initial_file), spec.max_update_bytes)
        else:
            make = load_ref(model_ref, base_dir)
            if not callable(make):
                raise ConfigError(f"--model {model_ref} is a {type(make).__name__}, not a callable that returns an nn.Module")
            weights = seeded_state(lambda: _module_of(make, model_ref), seed)
        # The model comes from elsewhere than the app: the app must train these very tensors.
        why = app_misfit(app_of(spec, base_dir=base_dir), pinned_spec(spec, weights), node_config or {})
        if why is not None:
            what = f"--model {model_ref}" if model_ref is not None else f"--initial-model {initial_file}"
            raise ConfigError(f"{what} does not fit {_name_of(spec)}: {why}")
        return weights
    app = app_of(spec, base_dir=base_dir)
    if isinstance(app, FedApp):
        with users_code(_name_of(spec), "model"):
            return seeded_state(app.model, seed)
    from node.apps.flower import FlowerTrainer

    return FlowerTrainer(app, spec, dict(node_config or {})).initial_weights(seed)


def app_misfit(app: Any, spec: "TaskSpec", node_config: NodeConfig, ref: str | None = None) -> str | None:
    """Why the tensors `app` trains are not those `spec` pins, as far as they can be known before
    a round (None: they fit, the spec pins none, or the app cannot say before it trains: see
    `FlowerTrainer.pinned_parameters`). A FedApp's model is built; a Flower NumPyClient is asked
    for its parameters, as Flower's server asks one client for the initial ones."""
    if spec.pinned() is None:
        return None
    if isinstance(app, FedApp):
        from node.training.model import seeded_state

        with users_code(f"app {ref or spec.app or spec.model}", "model"):
            weights = seeded_state(app.model, 0)
    else:
        from node.apps.flower import FlowerTrainer

        weights = FlowerTrainer(app, spec, dict(node_config), ref).pinned_parameters()
        if weights is None:
            return None
    why = misfit(weights, spec)
    return None if why is None else f"the app's model does not fit the task: {why}"


def _name_of(spec: "TaskSpec") -> str:
    return f"app {spec.app or spec.model}"


def _module_of(make: Any, ref: str) -> Any:
    from torch import nn

    try:
        module = make()
    except USER_ERRORS as exc:
        raise ConfigError(f"--model {ref} raised {error_line(exc)}") from None
    if not isinstance(module, nn.Module):
        raise ConfigError(f"--model {ref} returned a {type(module).__name__}, not an nn.Module")
    return module


def load_safetensors(path: Path, max_bytes: int) -> dict[str, np.ndarray]:
    """Tensors named as the state dict, from a .safetensors file (its size checked first)."""
    from aggregation import AggregationError, decode_model

    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ConfigError(f"--initial-model {path}: {exc.strerror}") from None
    if size > max_bytes:
        raise ConfigError(f"--initial-model {path} is {size} bytes, more than the task's max_update_bytes {max_bytes}")
    try:
        weights, _meta = decode_model(path.read_bytes(), max_bytes)
    except (AggregationError, ValueError) as exc:
        raise ConfigError(f"--initial-model {path}: not a model file: {str(exc)[:200]}") from None
    return weights


def pin_of(weights: Mapping[str, np.ndarray]) -> list[list]:
    """[name, shape, dtype] of every tensor, in order: what a task spec pins (`TaskSpec.params`)."""
    from aggregation.dtypes import code_of

    return [[name, list(array.shape), code_of(array)] for name, array in weights.items()]


def misfit(weights: Mapping[str, np.ndarray], spec: "TaskSpec") -> str | None:
    """Why `weights` do not fit the tensors `spec` pins (None: they fit, or it pins none)."""
    pinned = spec.pinned()
    if pinned is None:
        return None
    from aggregation.dtypes import code_of
    from aggregation.errors import EncodeError

    if set(weights) != set(pinned):  # by name: a decoded model file lists its tensors sorted
        missing = [n for n in pinned if n not in weights][:3]
        extra = [n for n in weights if n not in pinned][:3]
        return f"the model's tensors are not the task's (missing {missing}, unexpected {extra})"
    for name, array in weights.items():
        shape, dtype = pinned[name]
        try:
            code = code_of(array)
        except EncodeError:  # an app's array of a dtype no model file carries
            code = str(np.asarray(array).dtype)
        if tuple(np.shape(array)) != shape or code != dtype:
            return f"tensor {name} is {code}{list(np.shape(array))}, the task pins {dtype}{list(shape)}"
    return None


def pinned_spec(spec: "TaskSpec", weights: Mapping[str, np.ndarray]) -> "TaskSpec":
    """`spec` with the initial model's tensors pinned; ConfigError if it pins others already."""
    if spec.params is None:
        return replace(spec, params=pin_of(weights))
    why = misfit(weights, spec)
    if why is not None:
        raise ConfigError(f"the initial model does not fit the task spec: {why}")
    return spec


def model_file(spec: "TaskSpec", weights: Mapping[str, np.ndarray]) -> bytes:
    """The initial model's file; ConfigError if it is larger than the task lets a node read."""
    from aggregation import encode_model

    data = encode_model(dict(weights))
    if len(data) > spec.max_update_bytes:
        raise ConfigError(f"the initial model is {len(data):,} bytes, more than the task's max_update_bytes "
                          f"{spec.max_update_bytes:,}: raise it with --max-update-bytes")  # fmt: skip
    return data
