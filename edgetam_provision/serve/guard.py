"""What keeps a LAN's idle or slow connections from locking real clients out of the mirror.

uvicorn closes a connection idle *after* a response (keep-alive), but not one that never sends a
complete request: 256 such sockets held every client out (503). `guarded_protocol` adds, on top
of uvicorn's own h11 protocol: a deadline for each request's headers (from the connection's start,
and again after each response), and a cap on connections per client address, so that one machine
cannot take every connection the server allows.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from uvicorn.protocols.http.h11_impl import H11Protocol

HEADER_TIMEOUT_S = 10.0  # a connection must send a whole request head within this (serve's default)
PER_CLIENT = 32  # connections one address may hold at once (a huggingface_hub client uses up to 8)


def guarded_protocol(header_timeout: float, per_client: int = PER_CLIENT) -> type[H11Protocol]:
    """uvicorn's H11Protocol with a header deadline and a per-address connection cap."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    held: Counter[str] = Counter()

    class GuardedH11Protocol(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None
        _peer = "?"

        # uvicorn narrows asyncio's BaseTransport to Transport (and ignores [override] itself)
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            peer = transport.get_extra_info("peername")
            self._peer = peer[0] if isinstance(peer, tuple) and peer else "?"
            held[self._peer] += 1
            if held[self._peer] > per_client:
                transport.close()
                return
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            held[self._peer] -= 1
            if held[self._peer] <= 0:
                del held[self._peer]
            self._disarm()
            super().connection_lost(exc)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm()  # the next request's head has the same deadline

        def _arm(self) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(header_timeout, self._head_too_slow)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _head_too_slow(self) -> None:
            """Close unless a request's head arrived (a response is then being made)."""
            self._deadline = None
            in_request = self.cycle is not None and not self.cycle.response_complete
            if not in_request and not self.transport.is_closing():
                self.transport.close()

    return GuardedH11Protocol
