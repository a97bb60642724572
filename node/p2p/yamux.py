"""Yamux receive-window credit as go-yamux gives it: back to the sender in batches, not per read.

py-libp2p 0.8's `YamuxStream` sends a WINDOW_UPDATE frame after nearly every read that
consumes data (its "partial slack" branch), and gossipsub reads each message's varint length a
byte at a time, so every message received cost two or three encrypted frames sent back, each
parsed by the peer. In a 16-daemon run that was ~7 % of a daemon's CPU. Here a stream credits
the bytes it consumed once they reach half its window (go-yamux's threshold), which keeps the
sender's view of the window exact: it never sends more than the window, and a reader that keeps
reading keeps it moving. The window stays at yamux's 256 KiB (no auto-tuning): the bulk of a
model moves over the block exchange's direct channel, not over yamux.
"""

from __future__ import annotations

import logging
from typing import Any

from libp2p.stream_muxer.yamux.yamux import YamuxStream

log = logging.getLogger(__name__)

_ORIGINAL = YamuxStream._auto_tune_and_send_window_update
_NEEDED = ("window_lock", "recv_window", "target_recv_window", "_pending_recv_release", "send_window_update")


async def _batched_window_update(self: Any, *, bytes_read: int = 0) -> None:
    async with self.window_lock:
        self._pending_recv_release = max(0, self._pending_recv_release) + max(0, bytes_read)
        if self._pending_recv_release < self.target_recv_window // 2:
            return
        delta, self._pending_recv_release = self._pending_recv_release, 0
        self.recv_window += delta
    await self.send_window_update(delta, skip_lock=True)  # outside the lock, as the library's own does


def batch_window_updates(enabled: bool = True) -> bool:
    """Install (or, with False, remove) the batched credit on every yamux stream of this
    process; whether it is installed. A py-libp2p whose streams lack what it uses keeps its own."""
    if not enabled:
        YamuxStream._auto_tune_and_send_window_update = _ORIGINAL  # type: ignore[method-assign]
        return False
    probe = YamuxStream.__init__.__code__.co_names + tuple(dir(YamuxStream))
    if not all(name in probe for name in _NEEDED):
        log.debug("py-libp2p's YamuxStream changed; keeping its own window updates")
        return False
    YamuxStream._auto_tune_and_send_window_update = _batched_window_update  # type: ignore[method-assign]
    return True
