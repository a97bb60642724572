"""Benchmark the embedded storage against raw SHA-256 speed.

Runbook (from the repository root):

    .venv/bin/python scripts/bench_storage.py
    .venv/bin/python scripts/bench_storage.py --sizes 1 16 64 --repeat 3 --dir /tmp

For 1, 16 and 64 MB of random bytes it prints, best of `--repeat` runs:

- sha256    hashlib.sha256 over the same bytes: the ceiling, since every byte is hashed once;
- cid       `cid_of(data)`: CID computation alone (chunking, hashing, building the DAG);
- add       `EmbeddedStorage.put(data)` into a fresh store in a temp dir (CIDs + every
            block written atomically + pin), with fsync (the default, durable) and without;
- get       `EmbeddedStorage.get(cid)`: every block read back from disk and re-hashed;

each with its ratio to sha256. With fsync the add is bound by the disk, not by hashing;
compare with `dd if=/dev/urandom of=X bs=1M count=256 conv=fsync` on the same disk.
Fetching from a peer is not measured yet (it comes with the libp2p block exchange).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
import time
from collections.abc import Callable

from node.storage import EmbeddedStorage, cid_of

MB = 1024 * 1024


def best_of(repeat: int, setup: Callable[[], object], run: Callable[[object], object]) -> float:
    """Fastest wall time of `run(setup())` over `repeat` runs; setup is not timed."""
    best = float("inf")
    for _ in range(repeat):
        state = setup()
        start = time.perf_counter()
        run(state)
        best = min(best, time.perf_counter() - start)
    return best


def bench_size(size_mb: int, repeat: int, base_dir: str | None) -> list[tuple[str, float]]:
    """(label, MB/s) rows for one size."""
    data = os.urandom(size_mb * MB)
    rows: list[tuple[str, float]] = []
    rows.append(("sha256", size_mb / best_of(repeat, lambda: None, lambda _: hashlib.sha256(data).digest())))
    rows.append(("cid", size_mb / best_of(repeat, lambda: None, lambda _: cid_of(data))))

    with tempfile.TemporaryDirectory(dir=base_dir) as tmp:
        counter = iter(range(1_000_000))

        def fresh_store(fsync: bool) -> Callable[[], object]:
            # A new directory per run, so every block is really written (a re-put is a no-op).
            return lambda: EmbeddedStorage(os.path.join(tmp, f"s{next(counter)}"), fsync=fsync)

        for label, fsync in (("add (fsync)", True), ("add (no fsync)", False)):
            seconds = best_of(repeat, fresh_store(fsync), lambda store: store.put(data))  # type: ignore[attr-defined]
            rows.append((label, size_mb / seconds))

        store = EmbeddedStorage(os.path.join(tmp, "read"), fsync=False)
        cid = store.put(data)
        assert store.get(cid) == data, "round trip failed"
        rows.append(("get", size_mb / best_of(repeat, lambda: None, lambda _: store.get(cid))))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 16, 64], help="sizes in MB")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement; the best is kept")
    parser.add_argument("--dir", default=None, help="where the temporary stores go (default: system temp)")
    args = parser.parse_args()

    print(f"{'size':>6}  {'operation':<15} {'MB/s':>9}  {'x sha256':>8}")
    for size_mb in args.sizes:
        rows = bench_size(size_mb, args.repeat, args.dir)
        sha = rows[0][1]
        for label, rate in rows:
            print(f"{size_mb:>4}MB  {label:<15} {rate:>9.1f}  {rate / sha:>8.2f}")
    print("peer fetch: not measured yet (comes with the libp2p block exchange)")


if __name__ == "__main__":
    main()
