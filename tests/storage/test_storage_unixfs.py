"""The UnixFS importer against kubo's CIDs, its tree layout byte for byte, and the reader against hostile DAGs."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.errors import IntegrityError, StorageError
from node.storage import build_dag, cid_of, parse_cid
from node.storage import unixfs
from node.storage.cid import CODEC_DAG_PB, CODEC_RAW, Cid
from node.storage.dagpb import (
    decode_node,
    decode_unixfs,
    encode_link,
    encode_node,
    encode_unixfs_file,
)
from node.storage.unixfs import read_dag

C = 262144


def pattern(n: int) -> bytes:
    """Deterministic test bytes: a 251-byte ramp, so consecutive 256 KiB chunks all differ."""
    return (bytes(range(251)) * (n // 251 + 1))[:n]


# CIDv0 of pattern(n), printed by Debian's `ipfs_cid` (whose CIDv0 matches kubo's `ipfs add`).
GOLDEN_V0 = {
    0: "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH",
    1: "QmS9JArPwa55ePgDnyg6TzX24mYTS1b1vLqWNebyVotKxQ",
    C - 1: "QmRfm83kqBpGJbGxJg1en9hpwq8eNnP4E2Dj8K73F4m983",
    C: "QmeqfRyS3vkku7n6krqC3DgGMex3x2sCpSeKMDmrG13QQq",
    C + 1: "QmUSjGawaz4ptvREcMKSMJneWCa5j8dAz2wSAAvHtW2rnB",
    2 * C: "QmX9AxjaxS7HCFKUdcQRgNKmfEj9hhjTsE57CB5iPe8zus",
    3 * C + 7: "QmYKHnGmGcTZUhG63wV6bUNX5acWmpjrgM5BcUNBdxVcuS",
    174 * C: "QmXCym15aFeWjAWyPFaAgwVmkuKB7EBsV77Skt54KmxChF",
    174 * C + 1: "QmTedsTekQQkgACJXb1sPZSW8bLdS9LPMrT7L4YdjNRd4n",
    175 * C + 1: "QmfSNfmSo1Gg885jm8qFWAEe14nkjYc7bXgXjuvKWjVoKw",
}

# CIDv1 of pattern(n) from this implementation (no kubo here to print them): a regression guard.
# Sizes 0 and 1 are single raw blocks, so those two are just the raw CID of the bytes.
REGRESSION_V1 = {
    0: "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku",
    1: "bafkreidogqfzz75tpkmjzjke425xqcrmpcib2p5tg44hnbirumdbpl5adu",
    C: "bafkreibruh455iawsviqslif5c7uurdcfdemh22mtnytyzvnzn75kpejxy",
    C + 1: "bafybeiexg2oqkfnj56l7fcmawswqbijt5shq4b5rg6a546uwpkqqzwjioi",
    3 * C + 7: "bafybeidxpyx2zp63l6vwztnevwkg62e2qiag37ujerq7xkz5hremsvv3vq",
    175 * C + 1: "bafybeihzhgkxa5ea4r5cr73r73tsf3ppwpstcxnsuyqxio3vy7xpikkhmi",
}


def getter(blocks: dict[str, bytes]) -> Callable[[str], bytes]:
    """A block source over a dict that fails like a store does when a block is missing."""

    def get(cid: str) -> bytes:
        try:
            return blocks[cid]
        except KeyError:
            raise StorageError(f"block {cid} is not held") from None

    return get


def dagpb(block: bytes) -> str:
    """CIDv1 dag-pb text of a hand-made block."""
    return str(Cid(1, CODEC_DAG_PB, hashlib.sha256(block).digest()))


def raw(block: bytes) -> tuple[str, bytes]:
    """(CIDv1 raw text, binary CID) of a hand-made leaf."""
    cid = Cid(1, CODEC_RAW, hashlib.sha256(block).digest())
    return str(cid), cid.to_bytes()


# --- kubo's CIDs ----------------------------------------------------------------------------


def test_hello_world_matches_kubo_in_both_versions() -> None:
    # Prepare
    data = b"hello world\n"

    # Execute
    v0, v1 = cid_of(data, cid_version=0), cid_of(data, cid_version=1)

    # Assert
    assert v0 == "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o"
    assert v1 == "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4"


@pytest.mark.parametrize("size", sorted(GOLDEN_V0))
def test_cidv0_matches_kubo_and_reads_back(size: int) -> None:
    # Prepare
    data = pattern(size)

    # Execute
    root, blocks = build_dag(data, cid_version=0)

    # Assert
    assert root == GOLDEN_V0[size]
    assert read_dag(root, getter(blocks)) == data
    assert all(parse_cid(cid).version == 0 for cid in blocks)


@pytest.mark.parametrize("size", sorted(REGRESSION_V1))
def test_cidv1_is_stable_and_reads_back(size: int) -> None:
    # Prepare
    data = pattern(size)

    # Execute
    root, blocks = build_dag(data, cid_version=1)

    # Assert
    assert root == REGRESSION_V1[size]
    assert read_dag(root, getter(blocks)) == data
    assert cid_of(data) == root


def test_two_chunk_v1_root_is_byte_for_byte_what_kubo_writes() -> None:
    # Prepare: the expected root, spelled out field by field from the dag-pb and UnixFS schemas.
    data = pattern(C + 7)
    _, cid0 = raw(data[:C])
    _, cid1 = raw(data[C:])
    link0 = b"\x0a\x24" + cid0 + b"\x12\x00" + b"\x18\x80\x80\x10"  # Hash, Name "", Tsize 262144
    link1 = b"\x0a\x24" + cid1 + b"\x12\x00" + b"\x18\x07"  # Tsize 7
    fs = b"\x08\x02" + b"\x18\x87\x80\x10" + b"\x20\x80\x80\x10" + b"\x20\x07"  # File, filesize, blocksizes
    expected = b"\x12\x2c" + link0 + b"\x12\x2a" + link1 + b"\x0a\x0c" + fs

    # Execute
    root, blocks = build_dag(data, cid_version=1)

    # Assert
    assert blocks[root] == expected
    assert root == dagpb(expected)
    node = decode_node(blocks[root])
    assert [(str(link.cid), link.name, link.tsize) for link in node.links] == [
        (raw(data[:C])[0], "", C),
        (raw(data[C:])[0], "", 7),
    ]
    meta = decode_unixfs(node.data)  # type: ignore[arg-type]
    assert (meta.type, meta.filesize, meta.blocksizes, meta.data) == (2, C + 7, [C, 7], None)


def test_two_level_tree_has_174_then_1_children_and_cumulative_tsizes() -> None:
    # Prepare
    data = pattern(175 * C + 1)

    # Execute
    root, blocks = build_dag(data, cid_version=1)

    # Assert
    top = decode_node(blocks[root])
    assert len(top.links) == 2
    first, second = (decode_node(blocks[str(link.cid)]) for link in top.links)
    assert len(first.links) == 174 and len(second.links) == 2
    # Tsize = the child's own bytes plus every block beneath it.
    first_tsize = len(blocks[str(top.links[0].cid)]) + 174 * C
    assert top.links[0].tsize == first_tsize
    assert decode_unixfs(top.data).blocksizes == [174 * C, C + 1]  # type: ignore[arg-type]
    assert len(blocks) == 176 + 3


def test_identical_chunks_share_one_block() -> None:
    # Prepare
    data = b"\0" * (3 * C)

    # Execute
    root, blocks = build_dag(data)

    # Assert
    assert len(decode_node(blocks[root]).links) == 3
    assert len(blocks) == 2
    assert read_dag(root, getter(blocks)) == data


def test_unknown_cid_version_is_a_programming_error() -> None:
    # Execute / Assert
    with pytest.raises(ValueError, match="cid_version"):
        cid_of(b"x", cid_version=2)


@settings(max_examples=30, deadline=None)
@given(st.binary(max_size=3 * C + 100), st.sampled_from([0, 1]))
def test_random_bytes_round_trip(data: bytes, version: int) -> None:
    # Execute
    root, blocks = build_dag(data, cid_version=version)

    # Assert
    assert read_dag(root, getter(blocks)) == data
    assert cid_of(data, version) == root
    assert parse_cid(root).version == version


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=0, max_value=400), st.sampled_from([0, 1]))
def test_layout_is_balanced_with_full_left_subtrees(size: int, version: int) -> None:
    # Prepare: tiny chunks and fan-out so a few hundred bytes make deep trees.
    data = pattern(size)
    with mock.patch.object(unixfs, "CHUNK_SIZE", 3), mock.patch.object(unixfs, "MAX_LINKS", 4):
        # Execute
        root, blocks = build_dag(data, cid_version=version)

    # Assert: every leaf at the same depth, every node but the rightmost at each level full.
    assert read_dag(root, getter(blocks)) == data
    levels: list[list[str]] = [[root]]
    while True:
        below: list[str] = []
        for position, cid in enumerate(levels[-1]):
            parsed = parse_cid(cid)
            if parsed.codec == CODEC_RAW:
                continue
            links = decode_node(blocks[cid]).links
            assert len(links) <= 4
            if position < len(levels[-1]) - 1 and links:
                assert len(links) == 4
            below.extend(str(link.cid) for link in links)
        if not below:
            break
        levels.append(below)
    leaves = levels[-1]
    assert len(leaves) == max(1, -(-size // 3))
    assert all(not decode_node(blocks[c]).links for c in leaves if parse_cid(c).codec == CODEC_DAG_PB)


# --- the reader against hostile DAGs --------------------------------------------------------


def test_corrupted_block_raises_integrity_error_naming_it() -> None:
    # Prepare
    root, blocks = build_dag(pattern(2 * C + 5))
    victim = next(cid for cid in blocks if cid != root)
    blocks[victim] = blocks[victim][:-1] + b"!"

    # Execute
    with pytest.raises(IntegrityError) as err:
        read_dag(root, getter(blocks))

    # Assert
    assert victim in str(err.value)


def test_missing_block_raises_storage_error() -> None:
    # Prepare
    root, blocks = build_dag(pattern(2 * C))
    del blocks[next(cid for cid in blocks if cid != root)]

    # Execute / Assert
    with pytest.raises(StorageError, match="not held"):
        read_dag(root, getter(blocks))


LEAF_CID, LEAF_BIN = raw(b"abc")


@pytest.mark.parametrize(
    "block, reason",
    [
        (b"\x12", "truncated varint"),
        (b"\x0a\x05ab", "runs past the end"),
        (b"\x1a\x00", "unexpected field 3"),
        (b"\x0a\x02\x08\x02" + b"\x12\x00", "link after Data"),
        (b"\x0a\x02\x08\x02\x0a\x02\x08\x02", "Data field twice"),
        (b"\x12\x02\x12\x00\x0a\x02\x08\x02", "link without Hash"),
        (b"\x12\x04\x0a\x02\x01\x55\x0a\x02\x08\x02", "malformed binary CID"),
        (b"\x12\x02\x18\x01" + b"\x0a\x02\x08\x02", "link without Hash"),
        (b"\x0a\x80\x00", "non-minimal varint"),
        (b"\x0a\x02\x08\x01", "Directory"),
        (b"\x0a\x02\x18\x00", "missing Type"),
        (b"\x0a\x03\x08\x02\x21", "unexpected field 4 with wire type 1"),
        (b"", "no UnixFS data"),
        (b"\x0a\x04\x08\x02\x18\x05", "declares filesize 5"),
        (encode_node([encode_link(LEAF_BIN, 3)], encode_unixfs_file(3, [])), "1 links but 0 blocksizes"),
        (encode_node([encode_link(LEAF_BIN, 3)], encode_unixfs_file(4, [4])), "parent declares 4"),
        (encode_node([encode_link(LEAF_BIN, 3)], encode_unixfs_file(0, [0])), "declared size 0"),
        (encode_node([encode_link(LEAF_BIN, 3)], encode_unixfs_file(9, [3])), "declares filesize 9"),
        (encode_node([], encode_unixfs_file(3, [3], b"abc")), "blocksizes but has no links"),
    ],
)
def test_malformed_nodes_are_rejected_with_storage_error(block: bytes, reason: str) -> None:
    # Prepare: correctly hashed, so only the structure can be blamed.
    root = dagpb(block)
    blocks = {root: block, LEAF_CID: b"abc"}

    # Execute
    with pytest.raises(StorageError) as err:
        read_dag(root, getter(blocks))

    # Assert
    assert reason in str(err.value)
    assert not isinstance(err.value, IntegrityError)


def test_root_data_and_children_are_read_in_order() -> None:
    # Prepare: old importers put bytes in the root next to links; kubo can read those, so can we.
    node = encode_node([encode_link(LEAF_BIN, 3)], encode_unixfs_file(5, [3], b"xy"))
    root = dagpb(node)

    # Execute
    data = read_dag(root, getter({root: node, LEAF_CID: b"abc"}))

    # Assert
    assert data == b"xyabc"


def test_deep_chain_is_refused_without_recursion() -> None:
    # Prepare: a one-link-per-level chain one level past the limit.
    blocks = {LEAF_CID: b"abc"}
    child_bin, child_tsize = LEAF_BIN, 3
    for _ in range(unixfs.MAX_DEPTH + 1):
        node = encode_node([encode_link(child_bin, child_tsize)], encode_unixfs_file(3, [3]))
        cid = Cid(1, CODEC_DAG_PB, hashlib.sha256(node).digest())
        blocks[str(cid)] = node
        child_bin, child_tsize = cid.to_bytes(), child_tsize + len(node)

    # Execute
    with pytest.raises(StorageError) as err:
        read_dag(str(cid), getter(blocks))

    # Assert
    assert "deeper than" in str(err.value)


def diamond(levels: int) -> tuple[str, dict[str, bytes]]:
    """A DAG that reuses one child under 174 links at every level: 174**levels leaves, levels+1 blocks."""
    blocks = {LEAF_CID: b"abc"}
    child_bin, size = LEAF_BIN, 3
    for _ in range(levels):
        node = encode_node([encode_link(child_bin, 0)] * 174, encode_unixfs_file(size * 174, [size] * 174))
        cid = Cid(1, CODEC_DAG_PB, hashlib.sha256(node).digest())
        blocks[str(cid)] = node
        child_bin, size = cid.to_bytes(), size * 174
    return str(cid), blocks


def test_diamond_dag_stops_at_the_size_limit_before_reading_children() -> None:
    # Prepare: declares 3 * 174**4 bytes (about 2.7 GB) in 5 blocks.
    root, blocks = diamond(4)
    reads: list[str] = []

    def counting(cid: str) -> bytes:
        reads.append(cid)
        return blocks[cid]

    # Execute
    with pytest.raises(StorageError) as err:
        read_dag(root, counting, max_size=10**6)

    # Assert
    assert "over the 1000000-byte limit" in str(err.value)
    assert reads == [root]


def test_diamond_dag_stops_at_the_block_limit() -> None:
    # Prepare
    root, blocks = diamond(2)

    # Execute
    with pytest.raises(StorageError) as err:
        read_dag(root, getter(blocks), max_blocks=1000)

    # Assert
    assert "more than 1000 blocks" in str(err.value)


def test_oversized_block_is_refused_before_hashing() -> None:
    # Prepare
    big = b"\0" * (unixfs.MAX_BLOCK_SIZE + 1)
    cid, _ = raw(big)

    # Execute / Assert
    with pytest.raises(StorageError, match="over the"):
        read_dag(cid, getter({cid: big}))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_decoding_arbitrary_bytes_fails_only_with_storage_error(block: bytes) -> None:
    # Execute
    try:
        node = decode_node(block)
        if node.data is not None:
            decode_unixfs(node.data)
    except StorageError:
        return

    # Assert: whatever decoded is structurally sound
    assert all(link.cid.version in (0, 1) for link in node.links)
