"""Frames one worker process of a node hands to its sibling workers, read in causal order.

A worker that has committed something the others keep in memory (a person's paid settlement)
publishes it before it answers; a sibling reads what was published before it uses that
memory. Each worker listens on a Unix stream socket in the abstract namespace (its name
derives from the node's data folder, the channel and the pid, so a long data-folder path does
not matter) and leaves a marker file named by its pid in `DATA_DIR/.siblings/<channel>/`.

Why this is causal: a Unix stream `send` puts the bytes on the receiver's queue before it
returns, and the publisher answers its client only after the send. A request that follows
that answer, whichever worker takes it, finds the frame queued there.

Nothing is ever silently lost: a publisher never blocks; when a sibling's queue is full it
closes that connection, and a receiver treats any closed connection as a possible gap
(`Drained.lost`) and forgets what it kept, to read it again from the store.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
import struct
import threading
from dataclasses import dataclass, field
from pathlib import Path

_log = logging.getLogger("citybrain.node")
HEADER = struct.Struct("!I")
# the largest frame a sibling accepts: a settlement record is a few kilobytes
MAX_FRAME = 1 << 20
# the kernel buffers this much for one sibling before a publisher gives up on it
BUFFER = 4 << 20
_CRED = struct.Struct("3i")


@dataclass
class Drained:
    """What a drain read: the frames in order, and whether some may have been lost."""

    frames: list[bytes] = field(default_factory=list)
    lost: bool = False


@dataclass
class _Inbound:
    sock: socket.socket
    buffer: bytearray = field(default_factory=bytearray)


class SiblingFeed:
    """One process's end of a node's channel: publish to the siblings, drain what they sent."""

    def __init__(self, data_dir: Path, channel: str, name: int | None = None) -> None:
        """Listen for the siblings of this process; name: its number among them (the pid)."""
        self.folder = data_dir / ".siblings" / channel
        self.folder.mkdir(parents=True, exist_ok=True)
        self._tag = hashlib.sha256(f"{data_dir.resolve()}\0{channel}".encode()).hexdigest()[:20]
        self.pid = os.getpid()
        self.name = self.pid if name is None else name
        self._lock = threading.Lock()
        self._out: dict[int, socket.socket] = {}
        self._in: list[_Inbound] = []
        self._listed: int | None = None
        self._siblings: list[int] = []
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(self._address(self.name))
        self._listener.listen(256)
        self._listener.setblocking(False)
        self._marker = self.folder / str(self.name)
        self._marker.touch()

    def _address(self, name: int) -> str:
        return f"\0citybrain-{self._tag}-{name}"

    # --- publishing ---------------------------------------------------------------------------

    def siblings(self) -> list[int]:
        """The pids of the other live workers on this channel (re-listed when it changes)."""
        try:
            stamp = os.stat(self.folder).st_mtime_ns
        except FileNotFoundError:
            self.folder.mkdir(parents=True, exist_ok=True)
            stamp = os.stat(self.folder).st_mtime_ns
        if stamp != self._listed:
            self._listed = stamp
            self._siblings = sorted(int(p.name) for p in self.folder.iterdir() if p.name.isdigit())
            self._siblings = [p for p in self._siblings if p != self.name]
        return self._siblings

    def publish(self, frame: bytes) -> None:
        """Queue a frame at every sibling before returning (never blocks)."""
        if len(frame) > MAX_FRAME:
            raise ValueError(f"a sibling frame is at most {MAX_FRAME} bytes")
        data = HEADER.pack(len(frame)) + frame
        with self._lock:
            for pid in self.siblings():
                sock = self._out.get(pid) or self._connect(pid)
                if sock is None:
                    continue
                try:
                    sent = sock.send(data)
                except (BlockingIOError, InterruptedError):
                    sent = 0
                except OSError:
                    # the sibling went away: a new one starts with an empty memory
                    self._drop(pid)
                    continue
                if sent != len(data):
                    # its queue is full: closing tells it that it may have missed frames
                    _log.warning("sibling %s is not reading; it will reload from the store", pid)
                    self._drop(pid)

    def _connect(self, pid: int) -> socket.socket | None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, BUFFER)
        try:
            sock.connect(self._address(pid))
        except OSError:
            sock.close()
            # no process listens under that name: the marker is left by a dead worker
            with contextlib.suppress(OSError):
                (self.folder / str(pid)).unlink()
            return None
        sock.setblocking(False)
        self._out[pid] = sock
        return sock

    def _drop(self, pid: int) -> None:
        sock = self._out.pop(pid, None)
        if sock is not None:
            sock.close()

    # --- reading ------------------------------------------------------------------------------

    def drain(self) -> Drained:
        """Read every frame the siblings have queued for this process, in their order."""
        out = Drained()
        with self._lock:
            self._accept(out)
            for inbound in list(self._in):
                self._read(inbound, out)
        return out

    def _accept(self, out: Drained) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            uid = _CRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CRED.size))[
                1
            ]
            if uid != os.getuid():
                # the abstract namespace has no file permissions: only our own user may speak
                _log.warning("refused a sibling connection from uid %s", uid)
                sock.close()
                continue
            sock.setblocking(False)
            self._in.append(_Inbound(sock))

    def _read(self, inbound: _Inbound, out: Drained) -> None:
        closed = False
        while True:
            try:
                chunk = inbound.sock.recv(1 << 16)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            inbound.buffer += chunk
        buffer = inbound.buffer
        start = 0
        while len(buffer) - start >= HEADER.size:
            (size,) = HEADER.unpack_from(buffer, start)
            if size > MAX_FRAME:
                closed = True
                break
            end = start + HEADER.size + size
            if end > len(buffer):
                break
            out.frames.append(bytes(buffer[start + HEADER.size : end]))
            start = end
        del buffer[:start]
        if closed:
            # a publisher closes when our queue was full or when it stops: either way a frame
            # may be missing, so the reader must not trust what it kept
            out.lost = True
            inbound.sock.close()
            self._in.remove(inbound)

    def close(self) -> None:
        """Stop: remove the marker and close every socket."""
        with self._lock:
            with contextlib.suppress(OSError):
                self._marker.unlink()
            for sock in [*self._out.values(), *(i.sock for i in self._in), self._listener]:
                sock.close()
            self._out.clear()
            self._in.clear()
