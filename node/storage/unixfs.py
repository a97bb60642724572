"""The UnixFS file importer and reader, matching kubo's `ipfs add` defaults.

Importer (what `ipfs add` does with no flags but `--cid-version`):

- fixed-size chunker of 262144 bytes (`size-262144`);
- balanced layout (go-unixfs `importer/balanced`): at most 174 links per
  node, every subtree but the last one full. Building it bottom-up, grouping
  each level into runs of 174 until one node is left, gives the same tree as
  kubo's top-down `fillNodeRec`;
- `cid_version=1`: raw leaves (codec raw), dag-pb internal nodes, CIDv1 text
  in base32 — `ipfs add --cid-version=1`;
- `cid_version=0`: leaves are dag-pb UnixFS File nodes carrying the chunk,
  CIDv0 text — plain `ipfs add`;
- a file of one chunk is its own root; an empty file is an empty raw block
  (v1) or an empty UnixFS File node (v0).

Each link's Tsize is the cumulative size of the child's subtree (all block
bytes below the link, the child included); each internal node's UnixFS data
carries the file size below it and one `blocksizes` entry per child.

Reader: `read_dag` walks a DAG from untrusted blocks without recursion,
hashing every block against its CID and checking every declared size before
it trusts it, with explicit limits on depth, block size, block count and total
size, so a hostile DAG cannot make it recurse, loop or allocate unboundedly.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator

from node.errors import IntegrityError, StorageError
from node.storage.cid import CODEC_DAG_PB, CODEC_RAW, Cid, parse_cid, verify_block
from node.storage.dagpb import (
    UNIXFS_FILE,
    UNIXFS_RAW,
    decode_node,
    decode_unixfs,
    encode_link,
    encode_node,
    encode_unixfs_file,
    pb_varint,
)

#: kubo's default chunk size (`--chunker=size-262144`).
CHUNK_SIZE = 262144
#: kubo's default maximum links per node in the balanced layout.
MAX_LINKS = 174
#: Largest block accepted from anyone: bitswap's hard limit is 2 MiB.
MAX_BLOCK_SIZE = 2 * 1024 * 1024
#: Deepest DAG `read_dag` follows; 174**8 chunks is already petabytes.
MAX_DEPTH = 16
#: Default ceiling on a reassembled file (callers with larger models pass their own).
DEFAULT_MAX_SIZE = 4 * 1024**3
#: Default ceiling on blocks visited; a DAG can reuse a block under many links,
#: so this bounds work even when sizes are consistent.
DEFAULT_MAX_BLOCKS = 1 << 20
#: Default ceiling on one fetch from peers or one `get`, when the caller names none: four times
#: a task's default `max_update_bytes` (node/taskspec.py). Callers that know the task pass its limit.
DEFAULT_MAX_FETCH_BYTES = 256 * 2**20


def dag_bytes_bound(file_size: int) -> int:
    """An upper bound on the bytes of all the blocks of a kubo-built DAG over `file_size` bytes
    (either CID version): the file, plus 1/256 for the leaves' and internal nodes' framing (a
    v0 leaf adds ~20 bytes to 256 KiB, an internal node ~54 bytes per child), plus 64 KiB for
    the partly filled nodes along the right edge and the root."""
    return file_size + file_size // 256 + 64 * 1024


def dag_blocks_bound(file_size: int) -> int:
    """An upper bound on the blocks of a kubo-built DAG over `file_size` bytes: one leaf per
    chunk, at most one internal node per two of those (174 children each, partly filled ones
    on each of at most MAX_DEPTH levels), and the root."""
    leaves = max(1, -(-file_size // CHUNK_SIZE))
    return leaves + leaves // 2 + MAX_DEPTH + 1

class OverLimit(StorageError):
    """Raised when content is larger than the caller's limit (bytes, or blocks). The CID fixes the
    content, so every node that asks with the same limit gets this same answer: for an update,
    a verdict (too large, like any invalid one), not a matter of availability."""


#: A block source: CID text -> block bytes; raises StorageError when absent.
BlockGetter = Callable[[str], bytes]

# The whole v0 empty-file node: PBNode{Data: UnixFS{Type: File, filesize: 0}}.
_V0_EMPTY_NODE = encode_node([], encode_unixfs_file(0, []))


def check_cid_version(cid_version: int) -> None:
    """Raise ValueError unless `cid_version` is 0 or 1."""
    if cid_version not in (0, 1):
        raise ValueError(f"cid_version must be 0 or 1, got {cid_version!r}")


#: One node of a tree level while the DAG is built: (binary CID, Tsize, file bytes below it).
LevelEntry = tuple[bytes, int, int]


def leaf_block(view: memoryview, offset: int, cid_version: int) -> tuple[Cid, bytes | memoryview, LevelEntry]:
    """The leaf of the chunk of `view` (a non-empty byte memoryview) starting at `offset`.

    Returns (CID, block, level entry). A raw leaf (v1) is a memoryview slice of
    `view` (no copy). Leaves do not depend on each other, so they may be made in
    any order and on any thread; `parent_blocks` then builds the tree over the
    entries, in file order.
    """
    chunk = view[offset : offset + CHUNK_SIZE]
    n = len(chunk)
    if cid_version == 1:
        cid = Cid(1, CODEC_RAW, hashlib.sha256(chunk).digest())
        return cid, chunk, (cid.to_bytes(), n, n)
    # PBNode{Data: UnixFS{Type=File, Data=chunk, filesize=n}}, joined with one copy of the chunk.
    nv = pb_varint(n)
    unixfs_len = 3 + len(nv) + n + 1 + len(nv)
    block = b"".join((b"\x0a", pb_varint(unixfs_len), b"\x08\x02\x12", nv, chunk, b"\x18", nv))
    cid = Cid(0, CODEC_DAG_PB, hashlib.sha256(block).digest())
    return cid, block, (cid.to_bytes(), len(block), n)


def parent_blocks(level: list[LevelEntry], cid_version: int) -> Iterator[tuple[Cid, bytes]]:
    """Yield the internal nodes of the balanced tree over the leaves' `level` entries (file order),
    each level bottom-up, the root last; nothing when there is a single leaf."""
    while len(level) > 1:
        parents: list[LevelEntry] = []
        for start in range(0, len(level), MAX_LINKS):
            group = level[start : start + MAX_LINKS]
            blocksizes = [filesize for _, _, filesize in group]
            filesize = sum(blocksizes)
            node = encode_node(
                [encode_link(cid_bytes, tsize) for cid_bytes, tsize, _ in group],
                encode_unixfs_file(filesize, blocksizes),
            )
            cid = Cid(cid_version, CODEC_DAG_PB, hashlib.sha256(node).digest())
            yield cid, node
            parents.append((cid.to_bytes(), len(node) + sum(tsize for _, tsize, _ in group), filesize))
        level = parents


def iter_blocks(data: bytes | bytearray | memoryview, cid_version: int = 1) -> Iterator[tuple[Cid, bytes | memoryview]]:
    """Yield every block of `data`'s DAG as (CID, bytes), children before parents; the root comes last.

    Raw leaves are yielded as memoryview slices of `data` (no copy); the
    caller must not mutate `data` while it still uses them.
    """
    check_cid_version(cid_version)
    view = memoryview(data).cast("B")
    size = len(view)
    if size == 0:
        if cid_version == 1:
            yield Cid(1, CODEC_RAW, hashlib.sha256(b"").digest()), b""
        else:
            yield Cid(0, CODEC_DAG_PB, hashlib.sha256(_V0_EMPTY_NODE).digest()), _V0_EMPTY_NODE
        return

    level: list[LevelEntry] = []
    for offset in range(0, size, CHUNK_SIZE):
        cid, block, entry = leaf_block(view, offset, cid_version)
        yield cid, block
        level.append(entry)
    yield from parent_blocks(level, cid_version)


def build_dag(data: bytes, cid_version: int = 1) -> tuple[str, dict[str, bytes]]:
    """Chunk `data` as `ipfs add` does; return (root CID text, every block by CID text)."""
    blocks: dict[str, bytes] = {}
    root = ""
    for cid, block in iter_blocks(data, cid_version):
        root = str(cid)
        blocks[root] = bytes(block)
    return root, blocks


def cid_of(data: bytes, cid_version: int = 1) -> str:
    """The CID `ipfs add` (v0) or `ipfs add --cid-version=1` (v1) would print for `data`."""
    root: Cid | None = None
    for root, _ in iter_blocks(data, cid_version):
        pass
    assert root is not None  # iter_blocks always yields at least the root
    return str(root)


def read_dag(
    root_cid: str | Cid,
    get_block: BlockGetter,
    *,
    max_size: int = DEFAULT_MAX_SIZE,
    max_blocks: int = DEFAULT_MAX_BLOCKS,
) -> bytes:
    """Reassemble a UnixFS file from its blocks, verifying each one; raise StorageError on anything wrong.

    Every block is hashed against its CID (IntegrityError naming the CID on a
    mismatch) before it is parsed; every node's declared sizes must agree
    with its children's; the walk is iterative, at most MAX_DEPTH deep, and
    stops past `max_size` bytes or `max_blocks` blocks.
    """
    root = root_cid if isinstance(root_cid, Cid) else parse_cid(root_cid)
    pieces: list[bytes | memoryview] = []
    total = 0
    root_size = 0
    visited = 0
    # Pre-order depth-first walk with an explicit stack: (cid, size the parent declared, depth).
    stack: list[tuple[Cid, int | None, int]] = [(root, None, 0)]
    while stack:
        cid, expected, depth = stack.pop()
        visited += 1
        if visited > max_blocks:
            raise OverLimit(f"DAG {root} has more than {max_blocks} blocks; refusing to read further")
        if depth > MAX_DEPTH:
            raise StorageError(f"DAG {root} is deeper than {MAX_DEPTH} levels at block {cid}")
        block = get_block(str(cid))
        if len(block) > MAX_BLOCK_SIZE:
            raise StorageError(f"block {cid} is {len(block)} bytes, over the {MAX_BLOCK_SIZE}-byte limit")
        verify_block(cid, block)

        if cid.codec == CODEC_RAW:
            own: bytes | memoryview = block
            size = len(block)
            children: list[tuple[Cid, int]] = []
        else:
            own, size, children = _file_node(cid, block)
        if expected is not None and size != expected:
            raise StorageError(f"block {cid} holds {size} file bytes but its parent declares {expected}")
        if depth == 0:
            if size > max_size:
                raise OverLimit(f"DAG {root} declares {size} bytes, over the {max_size}-byte limit")
            root_size = size

        if len(own):
            pieces.append(own)
            total += len(own)
        # Reversed so the first child is popped, and so read, first.
        for child, child_size in reversed(children):
            stack.append((child, child_size, depth + 1))

    # The root's size was checked against its children level by level; this catches any slip in that logic.
    if total != root_size:
        raise StorageError(f"DAG {root} reassembled to {total} bytes, not the declared size")
    return b"".join(pieces)


def _file_node(cid: Cid, block: bytes) -> tuple[memoryview | bytes, int, list[tuple[Cid, int]]]:
    """Parse a verified dag-pb file node: (its own payload, file bytes below it, [(child, declared size)])."""
    node = decode_node(block, cid)
    if node.data is None:
        raise StorageError(f"dag-pb node {cid} has no UnixFS data; not a file")
    fs = decode_unixfs(node.data, cid)
    own = fs.data if fs.data is not None else b""
    if not node.links:
        if fs.type not in (UNIXFS_FILE, UNIXFS_RAW):
            raise StorageError(f"block {cid} is a UnixFS {fs.type_name}, not a file")
        if fs.blocksizes:
            raise StorageError(f"leaf {cid} declares blocksizes but has no links")
        size = len(own)
    else:
        if fs.type != UNIXFS_FILE:
            raise StorageError(f"block {cid} is a UnixFS {fs.type_name} with links, not a file")
        if len(fs.blocksizes) != len(node.links):
            raise StorageError(
                f"node {cid} has {len(node.links)} links but {len(fs.blocksizes)} blocksizes"
            )
        # A zero-sized child adds work but no bytes; refusing it keeps the walk bounded by the output size.
        if 0 in fs.blocksizes:
            raise StorageError(f"node {cid} links a child of declared size 0")
        size = len(own) + sum(fs.blocksizes)
    if fs.filesize is not None and fs.filesize != size:
        raise StorageError(f"node {cid} declares filesize {fs.filesize} but holds {size} bytes")
    children = [(link.cid, bs) for link, bs in zip(node.links, fs.blocksizes)]
    return own, size, children


def received_block(cid: str, data: bytes | memoryview, source: str | None = None) -> Cid:
    """`cid` parsed, once `data` is checked to be its block: at most MAX_BLOCK_SIZE bytes
    (StorageError) that hash to it (IntegrityError naming `source`, e.g. the peer it came from).
    What every store's put_block runs before it keeps a block."""
    parsed = parse_cid(cid)
    origin = f" from {source}" if source else ""
    if len(data) > MAX_BLOCK_SIZE:
        raise StorageError(f"block {parsed}{origin} is {len(data)} bytes, over the {MAX_BLOCK_SIZE}-byte limit")
    try:
        verify_block(parsed, data)
    except IntegrityError as exc:
        raise IntegrityError(f"{exc}{origin}") from None
    return parsed
