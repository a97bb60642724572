"""Flower ClientApps on FedLedger (#15): a task may name a Flower 1.42 `ClientApp`, and it runs
unchanged.

`FlowerTrainer` implements `node.abc.Trainer` by calling the app as a Flower SuperNode does,
`app(message, context)`, with Flower's own `Message`, `Metadata`, `Context` and records:

- a legacy app (`ClientApp(client_fn=...)`, the client a `NumPyClient` or a `Client`) gets
  Flower's legacy record layout (`fitins.parameters` / `fitins.config`, `evaluateins.*`, and a
  `get_parameters` message for the initial model), built and read with flwr's compat converters;
- a Message-API app (`@app.train()`, `@app.evaluate()`) gets `{"arrays": ArrayRecord, "config":
  ConfigRecord}`, as Flower's strategies send it, and replies with one ArrayRecord (train) and
  one MetricRecord holding `num-examples`, as Flower's strategies require.

What the app sees. `context.node_config` is the node config the node got (`partition-id`,
`num-partitions` in a simulation, as Flower's simulation sets them); `context.run_config` is
the spec's `local-epochs`, `batch-size` and `lr`, overridden by `spec.run_config`; every
ConfigRecord carries `server-round`, `seed` (this node's seed for the round) and the effective
`local-epochs`, `batch-size` and `lr`. `context.state` lasts as long as the trainer, as a
Flower node's context lasts a run.

Names. A legacy app exchanges unnamed lists, sent and read in the order `spec.params` pins
(Flower's convention: the state dict's order; a decoded model file is sorted). Its initial parameters
(`get_parameters`) take the names `spec.params` pins, in order, or else `param_0000`,
`param_0001`, ... A Message-API app's tensors are named by its ArrayRecord's keys.

Reproducibility. Around every call into the app torch runs on one thread, and the global torch,
numpy and `random` generators are seeded with the call's seed and restored after, so an app
that shuffles with them (`DataLoader(shuffle=True)`) trains the same delta from the same seed.

Trained tensors are checked before they leave: the names and shapes sent, the dtype sent (a
float array for a float32 or float16 tensor is rounded to it, as numpy apps often compute in
float64), finite floats. Anything wrong, and any exception in user code, is one ConfigError line
`app REF: ...`.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping

import numpy as np
import torch
from flwr.app import DEFAULT_TTL, Array, ArrayRecord, ConfigRecord, Context, Message, MessageType, Metadata, RecordDict
from flwr.clientapp import ClientApp
from flwr.common import Code, EvaluateIns, FitIns, GetParametersIns, MessageTypeLegacy
from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.compat.common import recorddict_compat as compat

from aggregation import model_delta
from aggregation.dtypes import FLOATS, as_float32, code_of
from node.apps.native import Evaluation, NodeConfig
from node.errors import ConfigError
from node.taskspec import SPEC_LIMITS

if TYPE_CHECKING:
    from node.taskspec import TaskSpec

Weights = Mapping[str, np.ndarray]
NUM_EXAMPLES = "num-examples"  # the MetricRecord key Flower's strategies weight by


class FlowerTrainer:
    """Implements `node.abc.Trainer` for a Flower `ClientApp` (see the module's docstring)."""

    def __init__(self, app: Any, spec: "TaskSpec", node_config: NodeConfig, ref: str | None = None) -> None:
        # Errors name the REF the node runs (its own [app] ref), which may differ from the spec's.
        self.name = f"app {ref or spec.app or type(app).__name__}"
        if not isinstance(app, ClientApp):
            raise ConfigError(f"{self.name} is a {type(app).__name__}, not a Flower ClientApp")
        self.app = app
        self.spec = spec
        # Flower keeps no public flag for it: a ClientApp built from client_fn has a `_call`.
        self.legacy = getattr(app, "_call", None) is not None
        run_config = {"local-epochs": spec.epochs, "batch-size": spec.batch_size, "lr": float(spec.lr)}
        run_config.update(spec.run_config or {})
        self.hyper = {k: run_config[k] for k in ("local-epochs", "batch-size", "lr")}
        node_config = dict(node_config)
        # Ids as Flower's are 64-bit: the run's from the spec (every node of a task shares it),
        # the node's from its config (distinct partitions, distinct ids).
        self.context = Context(run_id=_id_of(spec.to_bytes()), node_id=_id_of(json.dumps(node_config, sort_keys=True).encode()),
                               node_config=node_config, state=RecordDict(), run_config=run_config)  # fmt: skip
        self.round = 0
        # Flower reports num-examples with each fit only; before the first one there is no
        # count to give, and ProtocolNode reads it only after train.
        self.num_samples = 0

    def train(self, global_weights: Weights, seed: int, round: int = 0) -> dict[str, np.ndarray]:
        """Send `global_weights` to the app as a train message; the delta of what it sends back
        (`aggregation.model_delta`, in the global weights' order)."""
        self.round = round
        config = self._config(round, seed)
        if self.legacy:
            names = self._positions(global_weights)
            ins = FitIns(ndarrays_to_parameters([global_weights[n] for n in names]), config)
            content = self._send(MessageType.TRAIN, compat.fitins_to_recorddict(ins, keep_input=False), round, seed, "fit")
            res = self._read("fit", lambda: compat.recorddict_to_fitres(content, keep_input=False))
            self._status("fit", res.status)
            arrays = self._read("fit", lambda: parameters_to_ndarrays(res.parameters))
            if len(arrays) != len(global_weights):
                raise ConfigError(f"{self.name}: fit returned {len(arrays)} arrays for the model's {len(global_weights)}")
            trained = dict(zip(names, arrays))
            num_examples = res.num_examples
        else:
            content = self._send(MessageType.TRAIN, self._message_content(global_weights, config), round, seed, "train")
            trained = self._named_reply(content, global_weights)
            num_examples = self._metric_record(content, "train").get(NUM_EXAMPLES)
        self.num_samples = self._count(num_examples, "num-examples of the train reply", low=SPEC_LIMITS["max_samples"][0])
        return model_delta(self._checked(trained, global_weights), global_weights)

    def evaluate(self, weights: Weights) -> Evaluation:
        """The app's evaluation of `weights` on this node's data: a NumPyClient's loss under
        "loss" with its metrics; a Message-API reply's MetricRecord without num-examples.
        Only numbers are kept (strings and bytes cannot be averaged)."""
        seed = self.round  # evaluation is seeded too, so it reads the same on every run
        config = self._config(self.round, seed)
        if self.legacy:
            ins = EvaluateIns(ndarrays_to_parameters([weights[n] for n in self._positions(weights)]), config)
            content = self._send(MessageType.EVALUATE, compat.evaluateins_to_recorddict(ins, keep_input=False), self.round, seed, "evaluate")
            res = self._read("evaluate", lambda: compat.recorddict_to_evaluateres(content))
            self._status("evaluate", res.status)
            metrics, num_examples = {"loss": res.loss, **res.metrics}, res.num_examples
        else:
            content = self._send(MessageType.EVALUATE, self._message_content(weights, config), self.round, seed, "evaluate")
            metrics = dict(self._metric_record(content, "evaluate"))
            num_examples = metrics.pop(NUM_EXAMPLES, None)
        numbers = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        return Evaluation(self._count(num_examples, "num-examples of the evaluate reply", low=0), numbers)

    def initial_weights(self, seed: int) -> dict[str, np.ndarray]:
        """The app's own initial parameters (get_parameters), built under `seed`."""
        if not self.legacy:
            raise ConfigError(f"{self.name}: a Message-API ClientApp has no initial parameters to ask for; "
                              "give the initial model with --model REF or --initial-model FILE")  # fmt: skip
        content = compat.getparametersins_to_recorddict(GetParametersIns(config=self._config(0, seed)))
        content = self._send(MessageTypeLegacy.GET_PARAMETERS, content, 0, seed, "get_parameters")
        res = self._read("get_parameters", lambda: compat.recorddict_to_getparametersres(content, keep_input=False))
        self._status("get_parameters", res.status, hint="; give the initial model with --model REF or --initial-model FILE")
        arrays = self._read("get_parameters", lambda: parameters_to_ndarrays(res.parameters))
        pinned = self.spec.pinned()
        if pinned is not None and len(pinned) != len(arrays):
            raise ConfigError(f"{self.name}: get_parameters returned {len(arrays)} arrays, the task pins {len(pinned)}")
        names = list(pinned) if pinned is not None else [f"param_{i:04d}" for i in range(len(arrays))]
        weights = dict(zip(names, arrays))
        for name, array in weights.items():
            self._check_array(name, array)
        return weights

    # -- messages -------------------------------------------------------------------------------

    def _positions(self, weights: Weights) -> list[str]:
        """The names in the order a legacy app's lists follow: the order the spec pins (the
        state dict's, as the task's creator built it), not the sorted order of a decoded model file."""
        pinned = self.spec.pinned()
        return list(pinned) if pinned is not None and set(pinned) == set(weights) else list(weights)

    def _config(self, round: int, seed: int) -> dict[str, Any]:
        return {"server-round": round, "seed": seed, **self.hyper}

    def _message_content(self, weights: Weights, config: Mapping[str, Any]) -> RecordDict:
        arrays = ArrayRecord({name: Array(np.asarray(a)) for name, a in weights.items()})
        return RecordDict({"arrays": arrays, "config": ConfigRecord(dict(config))})

    def _send(self, message_type: str, content: RecordDict, round: int, seed: int, what: str) -> RecordDict:
        """The content of the app's reply to one message, as a SuperNode delivers it."""
        context = self.context
        message_id = hashlib.sha256(f"{context.run_id}/{context.node_id}/{round}/{message_type}".encode()).hexdigest()
        metadata = Metadata(run_id=context.run_id, message_id=message_id, src_node_id=SUPERLINK_NODE_ID,
                            dst_node_id=context.node_id, reply_to_message_id="", group_id=str(round),
                            created_at=time.time(), ttl=DEFAULT_TTL, message_type=message_type)  # fmt: skip
        message = Message(content=content, metadata=metadata)
        with _isolated(seed):
            try:
                reply = self.app(message, context)
            except Exception as exc:  # the user's code: whatever it raises is one line
                raise ConfigError(f"{self.name}: {what} raised {type(exc).__name__}: {_line(exc)}") from None
        if not isinstance(reply, Message):
            raise ConfigError(f"{self.name}: {what} returned a {type(reply).__name__}, not a Flower Message")
        if reply.has_error():
            raise ConfigError(f"{self.name}: {what} replied with error {reply.error.code}: {_line(reply.error.reason)}")
        if not reply.has_content():
            raise ConfigError(f"{self.name}: {what} replied with no content")
        return reply.content

    def _read(self, what: str, read: Callable[[], Any]) -> Any:
        """`read()` of a legacy reply; its layout is the app's (mods may rewrite it)."""
        try:
            return read()
        except Exception as exc:
            raise ConfigError(f"{self.name}: {what}'s reply is not Flower's legacy layout: {type(exc).__name__}: {_line(exc)}") from None

    def _status(self, what: str, status: Any, hint: str = "") -> None:
        if status.code != Code.OK:
            raise ConfigError(f"{self.name}: {what} failed ({status.code.name}: {_line(status.message)}){hint}")

    def _metric_record(self, content: RecordDict, what: str) -> Mapping[str, Any]:
        records = list(content.metric_records.values())
        if len(records) != 1:
            raise ConfigError(f"{self.name}: the {what} reply must hold one MetricRecord (with {NUM_EXAMPLES}), not {len(records)}")
        return records[0]

    def _named_reply(self, content: RecordDict, sent: Weights) -> dict[str, np.ndarray]:
        records = list(content.array_records.values())
        if len(records) != 1:
            raise ConfigError(f"{self.name}: the train reply must hold one ArrayRecord, not {len(records)}")
        record = records[0]
        if set(record.keys()) != set(sent):
            missing = [n for n in sent if n not in record][:3]
            extra = [n for n in record.keys() if n not in sent][:3]
            raise ConfigError(f"{self.name}: the train reply's arrays are not the model's (missing {missing}, unexpected {extra})")
        return {name: self._read("train", lambda: record[name].numpy()) for name in sent}

    # -- checks ---------------------------------------------------------------------------------

    def _count(self, value: Any, what: str, low: int) -> int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        high = SPEC_LIMITS["max_samples"][1]
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise ConfigError(f"{self.name}: {what} must be an integer in [{low}, {high}], not {str(value)[:40]!r}")
        return value

    def _checked(self, trained: Mapping[str, Any], sent: Weights) -> dict[str, np.ndarray]:
        """`trained` with each tensor in its sent shape and dtype, or ConfigError."""
        out = {}
        for name, before in sent.items():
            after = trained[name]
            if not isinstance(after, np.ndarray):
                raise ConfigError(f"{self.name}: tensor {name} came back as a {type(after).__name__}, not an array")
            if after.shape != before.shape:
                raise ConfigError(f"{self.name}: tensor {name} came back with shape {list(after.shape)}, not {list(before.shape)}")
            if after.dtype != before.dtype:
                if code_of(before) in ("F32", "F16") and after.dtype.kind == "f":
                    with np.errstate(over="ignore"):  # an overflow is caught below as infinite
                        after = after.astype(before.dtype)
                else:
                    raise ConfigError(f"{self.name}: tensor {name} came back as {after.dtype}, not {before.dtype}")
            out[name] = self._check_array(name, after)
        return out

    def _check_array(self, name: str, array: Any) -> np.ndarray:
        if not isinstance(array, np.ndarray):
            raise ConfigError(f"{self.name}: tensor {name} is a {type(array).__name__}, not an array")
        try:
            code = code_of(array)
        except Exception:
            raise ConfigError(f"{self.name}: tensor {name} has dtype {array.dtype}, which models cannot carry") from None
        if code in FLOATS and not np.isfinite(as_float32(array, code)).all():
            raise ConfigError(f"{self.name}: tensor {name} holds NaN or infinite values")
        return array


@contextmanager
def _isolated(seed: int) -> Iterator[None]:
    """One torch thread (as TorchTrainer trains) and the global generators seeded with `seed`,
    all restored after: user code may draw from them, the node's own draws must not move."""
    threads = torch.get_num_threads()
    states = torch.random.get_rng_state(), np.random.get_state(), random.getstate()
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    np.random.seed(seed & 0xFFFFFFFF)
    random.seed(seed)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.random.set_rng_state(states[0])
        np.random.set_state(states[1])
        random.setstate(states[2])


def _id_of(data: bytes) -> int:
    return int.from_bytes(hashlib.sha256(data).digest()[:8], "big") >> 1  # positive, fits sint64


def _line(value: Any) -> str:
    return " ".join(str(value).split())[:200]
