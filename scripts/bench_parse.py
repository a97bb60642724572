"""Time the update reader on hostile headers and on many-tensor updates (#14 H1).

Runbook (from the repository root):

    .venv/bin/python scripts/bench_parse.py
    .venv/bin/python scripts/bench_parse.py --sizes 1 4 16 --tensors 20000 200000

For each hostile header family at each size (MiB) it prints the CPU time the
reader takes to reject the file, best of `--repeat` runs, and that time per
MiB: a linear reader keeps the per-MiB column flat as the size grows (the old
bracket tokenizer took 0.9 s for 16 KiB of escaped quotes, and four times as
long for twice as many). Then, for updates of N one-value tensors, the CPU time
of `decode_update` next to `json.loads` of the same header (the C parse that
any reader must pay at least once) and their ratio.

CPU time of this process (time.process_time) rather than wall-clock, so that
other processes on a shared machine barely move the numbers.
"""

from __future__ import annotations

import argparse
import json
import math
import struct
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aggregation.errors import InvalidUpdateError  # noqa: E402
from aggregation.safetensors_io import read_safetensors  # noqa: E402
from aggregation.update import decode_update, encode_update  # noqa: E402

MIB = 2**20

# Each family makes a header of about `size` bytes; all are rejected.
FAMILIES: dict[str, Callable[[int], bytes]] = {
    "unterminated escaped quotes": lambda size: b'"' + b'\\"' * (size // 2),
    "open brackets": lambda size: b"[" * size,
    "brackets side by side": lambda size: b'{"w":[' + b"[]," * (size // 3) + b"[]]}",
    "many keys": lambda size: b"{" + b",".join(b'"%x":0' % i for i in range(size // 8)) + b"}",
    "many metadata keys": lambda size: b'{"__metadata__":{' + b",".join(b'"%x":""' % i for i in range(size // 10)) + b"}}",
}


def best_cpu_time(function: Callable[[], object], repeat: int) -> float:
    best = math.inf
    for _ in range(repeat):
        start = time.process_time()
        try:
            function()
        except InvalidUpdateError:
            pass
        best = min(best, time.process_time() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 4], help="hostile header sizes in MiB")
    parser.add_argument("--tensors", type=int, nargs="+", default=[20_000, 200_000], help="tensor counts")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    print(f"{'hostile header':30s} {'MiB':>4s} {'cpu s':>8s} {'s/MiB':>8s}")
    for family, make in FAMILIES.items():
        for size in args.sizes:
            header = make(size * MIB)
            data = struct.pack("<Q", len(header)) + header
            seconds = best_cpu_time(lambda: read_safetensors(data, len(data)), args.repeat)
            print(f"{family:30s} {size:4d} {seconds:8.3f} {seconds / size:8.3f}")

    print(f"\n{'tensors':>8s} {'header MB':>10s} {'json s':>8s} {'decode s':>9s} {'ratio':>6s}")
    for n in args.tensors:
        shapes = {f"layer{i:07d}.w": (1,) for i in range(n)}
        data = encode_update({name: np.zeros(1, np.float32) for name in shapes}, num_samples=1, task=1, round=1, base="b")
        header = data[8 : 8 + struct.unpack_from("<Q", data)[0]].decode()
        t_json = best_cpu_time(lambda: json.loads(header), args.repeat)
        t_decode = best_cpu_time(lambda: decode_update(data, expected=shapes, max_bytes=len(data)), args.repeat)
        print(f"{n:8d} {len(header) / 1e6:10.1f} {t_json:8.3f} {t_decode:9.3f} {t_decode / t_json:6.1f}")


if __name__ == "__main__":
    main()
