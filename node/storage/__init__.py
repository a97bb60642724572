"""Content-addressed storage: kubo-identical CIDs, the UnixFS importer/reader and the embedded blockstore.

`cid_of(data)` is what `ipfs add --cid-version=1` prints (`cid_version=0`:
plain `ipfs add`); `EmbeddedStorage` is the default `node.abc.Storage`
backend, a verified blockstore in the node's data directory; `KuboStorage`
the same protocol on an IPFS daemon's RPC API, verified on our side.
"""

from node.storage.cid import Cid, parse_cid, verify_block
from node.storage.embedded import EmbeddedStorage
from node.storage.kubo import KuboStorage
from node.storage.unixfs import build_dag, cid_of, read_dag

__all__ = ["Cid", "EmbeddedStorage", "KuboStorage", "build_dag", "cid_of", "parse_cid", "read_dag", "verify_block"]
