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

Dtypes. float32, float16 and integer tensors reach the app in their dtype. numpy has no
bfloat16 and Flower's `Array` is built through numpy (`Array(torch_tensor)` fails on one), so a
bfloat16 tensor reaches the app as its float32 values, exact (docs/formats.md).

Trained tensors are checked before they leave: the names and shapes sent, the dtype (a float
array for a float tensor is rounded to the tensor's dtype, to nearest, ties to even, once: numpy
apps often compute in float64, and get bfloat16 as float32), finite floats. Anything wrong, and
anything user code raises (SystemExit too, not KeyboardInterrupt), is one ConfigError line
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
from aggregation.dtypes import FLOATS, MODEL_DTYPES, as_float32, bfloat16_from_bits, code_of
from node.apps.native import USER_ERRORS, Evaluation, NodeConfig, error_line
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
            ins = FitIns(ndarrays_to_parameters(_sendable(global_weights, names)), config)
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
            ins = EvaluateIns(ndarrays_to_parameters(_sendable(weights, self._positions(weights))), config)
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
        weights = self._own_parameters(seed, hint="; give the initial model with --model REF or --initial-model FILE")
        assert weights is not None
        for name, array in weights.items():
            self._check_array(name, array)
        return weights

    def pinned_parameters(self, seed: int = 0) -> dict[str, np.ndarray] | None:
        """The app's own parameters as it would send them for the tensors the spec pins (a float
        array rounded to its pinned float dtype), to compare with the pin before any round;
        ConfigError if their count differs. None when the app cannot say without training:
        a Message-API app (Flower's strategies send it the initial arrays; no message asks it
        for its own), or a NumPyClient without get_parameters. Its first train reply is then
        checked like every reply, and a mismatch is a round sat out with one logged line."""
        pinned = self.spec.pinned()
        if not self.legacy or pinned is None:
            return None
        weights = self._own_parameters(seed)
        if weights is None:
            return None
        return {name: _as_pinned(array, pinned[name][1]) if isinstance(array, np.ndarray) else array
                for name, array in weights.items()}  # fmt: skip

    def _own_parameters(self, seed: int, hint: str | None = None) -> dict[str, np.ndarray] | None:
        """The app's get_parameters reply, named by the spec's pin (or by position). A NumPyClient
        without get_parameters: ConfigError if `hint` is given, else None."""
        content = compat.getparametersins_to_recorddict(GetParametersIns(config=self._config(0, seed)))
        content = self._send(MessageTypeLegacy.GET_PARAMETERS, content, 0, seed, "get_parameters")
        res = self._read("get_parameters", lambda: compat.recorddict_to_getparametersres(content, keep_input=False))
        if hint is None and res.status.code == Code.GET_PARAMETERS_NOT_IMPLEMENTED:
            return None
        self._status("get_parameters", res.status, hint=hint or "")
        arrays = self._read("get_parameters", lambda: parameters_to_ndarrays(res.parameters))
        pinned = self.spec.pinned()
        if pinned is not None and len(pinned) != len(arrays):
            raise ConfigError(f"{self.name}: get_parameters returned {len(arrays)} arrays, the task pins {len(pinned)}")
        names = list(pinned) if pinned is not None else [f"param_{i:04d}" for i in range(len(arrays))]
        return dict(zip(names, arrays))

    # -- messages -------------------------------------------------------------------------------

    def _positions(self, weights: Weights) -> list[str]:
        """The names in the order a legacy app's lists follow: the order the spec pins (the
        state dict's, as the task's creator built it), not the sorted order of a decoded model file."""
        pinned = self.spec.pinned()
        return list(pinned) if pinned is not None and set(pinned) == set(weights) else list(weights)

    def _config(self, round: int, seed: int) -> dict[str, Any]:
        return {"server-round": round, "seed": seed, **self.hyper}

    def _message_content(self, weights: Weights, config: Mapping[str, Any]) -> RecordDict:
        arrays = ArrayRecord({name: Array(a) for name, a in zip(weights, _sendable(weights, list(weights)))})
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
            except USER_ERRORS as exc:  # the user's code: whatever it raises is one line, sys.exit too
                raise ConfigError(f"{self.name}: {what} raised {error_line(exc)}") from None
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
            after = _as_pinned(after, code_of(before))
            if after.dtype != before.dtype:
                raise ConfigError(f"{self.name}: tensor {name} came back as {after.dtype}, not {_dtype_name(before)}")
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


def _sendable(weights: Weights, names: list[str]) -> list[np.ndarray]:
    """The arrays an app is sent, in the order of `names`: a bfloat16 tensor as its float32
    values (exact; numpy has no bfloat16, and Flower's Array is built through numpy), every other
    dtype as it is."""
    return [as_float32(weights[n], "BF16") if code_of(weights[n]) == "BF16" else np.asarray(weights[n]) for n in names]


def _as_pinned(array: np.ndarray, code: str) -> np.ndarray:
    """A float array an app returned for a float tensor, in the tensor's dtype `code`, rounded to
    nearest, ties to even, once (apps often compute in float64, and get bfloat16 as float32);
    any other array as it is, for the caller to refuse if it is not the pinned dtype."""
    if code not in FLOATS or array.dtype.kind != "f" or array.dtype == MODEL_DTYPES[code]:
        return array
    if code == "BF16":
        return bfloat16_nearest(array)
    with np.errstate(over="ignore"):  # an overflow is refused later as infinite
        return array.astype(MODEL_DTYPES[code])


def bfloat16_nearest(values: np.ndarray) -> np.ndarray:
    """The bfloat16 values nearest to float `values`, ties to even, as a `BFLOAT16` array; NaN
    stays NaN, what overflows is infinite. Rounded once: a wider float is first rounded to
    float32 by round-to-odd, after which rounding to the 8 bits of bfloat16 is exact
    [Boldo & Melquiond, "Emulation of FMA and correctly rounded sums", 2008]. Integer bit
    arithmetic on the float32 patterns: the same bits on any CPU."""
    wide = np.asarray(values)
    with np.errstate(over="ignore", invalid="ignore"):
        single = wide.astype(np.float32)
        bits = single.view(np.uint32).astype(np.uint32)
        if wide.dtype.itemsize > 4:  # round-to-odd: truncate towards zero, an inexact result's last bit set
            back = single.astype(wide.dtype)
            inexact = back != wide
            bits = np.where(inexact & (np.abs(back) > np.abs(wide)), bits - np.uint32(1), bits)
            bits = np.where(inexact, bits | np.uint32(1), bits)
    rounded = (bits + (np.uint32(0x7FFF) + ((bits >> 16) & np.uint32(1)))) >> 16
    rounded = np.where(np.isnan(wide), np.uint32(0x7FC0), rounded)  # a NaN's payload could carry it to 0
    return bfloat16_from_bits(rounded.astype(np.uint16)).reshape(wide.shape)


def _dtype_name(array: np.ndarray) -> str:
    return "bfloat16" if code_of(array) == "BF16" else str(array.dtype)


def _id_of(data: bytes) -> int:
    return int.from_bytes(hashlib.sha256(data).digest()[:8], "big") >> 1  # positive, fits sint64


def _line(value: Any) -> str:
    return " ".join(str(value).split())[:200]
