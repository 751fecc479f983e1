"""A TCP proxy on loopback between bridges and the broker, to break the link on purpose.

    proxy = TcpProxy("127.0.0.1", broker_port)   # listens on proxy.port
    proxy.cut()     # a lost 4G link: sockets stay open, bytes both ways are dropped silently
    proxy.heal()
    proxy.reset()   # every connection reset at once; new ones refused until heal()

`cut()` is a blackhole: nothing is closed and nothing is refused, so only MQTT's keepalive
(the broker's, and the client's own ping) can tell the link is gone. A connection made
during a cut is accepted (the handshake is local) and leads nowhere. On `heal()` a
connection that lost bytes, or whose other end closed meanwhile, is reset: TCP cannot
deliver a stream with a hole in it, and a peer that forgot the connection answers with a
reset, as it would on a real link. A connection that carried nothing during the cut
simply goes on.

One thread owns every socket; the control methods hand it a command and wait for it.
"""

from __future__ import annotations

import contextlib
import queue
import selectors
import socket
import struct
import threading
from dataclasses import dataclass, field
from enum import Enum

CHUNK = 65536
CONNECT_TIMEOUT_S = 5.0


class Mode(Enum):
    OPEN = "open"
    CUT = "cut"
    DOWN = "down"  # after reset(): nothing listens


@dataclass(eq=False)
class _Pair:
    """One client connection and, unless it came during a cut, its upstream connection."""

    down: socket.socket | None
    up: socket.socket | None
    broken: bool = False  # lost bytes, or one end closed, during a cut

    def sockets(self) -> list[socket.socket]:
        return [s for s in (self.down, self.up) if s is not None]


@dataclass
class ProxyCounters:
    accepted: int = 0
    refused_upstream: int = 0
    bytes_forwarded: int = 0
    bytes_dropped: int = 0
    reset_on_heal: int = 0
    resets: int = 0
    history: list[str] = field(default_factory=list)


def _abort(sock: socket.socket) -> None:
    """Close with a TCP reset (SO_LINGER 0), as a connection torn down by the network."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


class TcpProxy:
    """Forwards 127.0.0.1:port to target_host:target_port until told otherwise."""

    def __init__(self, target_host: str, target_port: int, host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.host = host
        self.counters = ProxyCounters()
        self._mode = Mode.OPEN
        self._selector = selectors.DefaultSelector()
        self._pairs: dict[socket.socket, _Pair] = {}
        self._commands: queue.SimpleQueue[tuple[str, threading.Event]] = queue.SimpleQueue()
        self._wake_r, self._wake_w = socket.socketpair()
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._listener: socket.socket | None = None
        self.port = self._listen(0)
        self._quit = False
        self._thread = threading.Thread(target=self._run, name="tcp-proxy", daemon=True)
        self._thread.start()

    # --- control (any thread) ----------------------------------------------------------------

    @property
    def mode(self) -> Mode:
        return self._mode

    def cut(self) -> None:
        """Blackhole: keep every socket open, drop every byte, accept and ignore new ones."""
        self._command("cut")

    def reset(self) -> None:
        """Reset every connection at once and refuse new ones until heal()."""
        self._command("reset")

    def heal(self) -> None:
        """Forward again (listening again on the same port after a reset)."""
        self._command("heal")

    def close(self) -> None:
        self._command("close")
        self._thread.join(10)
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()

    def _command(self, name: str) -> None:
        done = threading.Event()
        self._commands.put((name, done))
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        if not done.wait(10):
            raise RuntimeError(f"the proxy did not {name} within 10 s")

    # --- the proxy thread ----------------------------------------------------------------------

    def _listen(self, port: int) -> int:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, port))
        listener.listen(64)
        listener.setblocking(False)
        self._selector.register(listener, selectors.EVENT_READ, "listener")
        self._listener = listener
        return int(listener.getsockname()[1])

    def _run(self) -> None:
        while not self._quit:
            for key, _mask in self._selector.select(timeout=1.0):
                if key.data == "wake":
                    with contextlib.suppress(OSError):
                        self._wake_r.recv(4096)
                elif key.data == "listener":
                    self._accept()
                else:
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    if sock in self._pairs:  # not closed earlier in this round
                        self._readable(sock)
            self._handle_commands()

    def _handle_commands(self) -> None:
        while True:
            try:
                name, done = self._commands.get_nowait()
            except queue.Empty:
                return
            self.counters.history.append(name)
            if name == "cut":
                self._mode = Mode.CUT
            elif name == "reset":
                self.counters.resets += 1
                for pair in {id(p): p for p in self._pairs.values()}.values():
                    self._drop(pair, abort=True)
                self._stop_listening()
                self._mode = Mode.DOWN
            elif name == "heal":
                for pair in {id(p): p for p in self._pairs.values()}.values():
                    if pair.broken or pair.up is None or pair.down is None:
                        self.counters.reset_on_heal += 1
                        self._drop(pair, abort=True)
                if self._listener is None:
                    self._listen(self.port)
                self._mode = Mode.OPEN
            elif name == "close":
                for pair in {id(p): p for p in self._pairs.values()}.values():
                    self._drop(pair, abort=False)
                self._stop_listening()
                self._quit = True
            done.set()

    def _stop_listening(self) -> None:
        if self._listener is not None:
            self._selector.unregister(self._listener)
            self._listener.close()
            self._listener = None

    def _accept(self) -> None:
        assert self._listener is not None
        try:
            down, _addr = self._listener.accept()
        except (BlockingIOError, OSError):
            return
        self.counters.accepted += 1
        down.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        up: socket.socket | None = None
        if self._mode is Mode.OPEN:
            try:
                up = socket.create_connection(self.target, timeout=CONNECT_TIMEOUT_S)
            except OSError:
                self.counters.refused_upstream += 1
                _abort(down)  # the broker is not there: the client is refused too
                return
            up.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            up.settimeout(CONNECT_TIMEOUT_S)
        down.settimeout(CONNECT_TIMEOUT_S)
        pair = _Pair(down, up)
        for sock in pair.sockets():
            self._pairs[sock] = pair
            self._selector.register(sock, selectors.EVENT_READ, "conn")

    def _readable(self, sock: socket.socket) -> None:
        pair = self._pairs[sock]
        try:
            data = sock.recv(CHUNK)
        except OSError:
            data = b""
        if self._mode is Mode.CUT:
            pair.broken = True
            if data:
                self.counters.bytes_dropped += len(data)
                return
            # One end closed: on a lost link the other would never hear of it. Forget the
            # closed end; the other stays open until it gives up or the link heals.
            self._forget(sock)
            if sock is pair.up:
                pair.up = None
            else:
                pair.down = None
            return
        other = pair.up if sock is pair.down else pair.down
        if not data or other is None:
            self._drop(pair, abort=False)
            return
        try:
            other.sendall(data)
        except OSError:
            self._drop(pair, abort=True)
            return
        self.counters.bytes_forwarded += len(data)

    def _forget(self, sock: socket.socket) -> None:
        self._pairs.pop(sock, None)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(sock)
        with contextlib.suppress(OSError):
            sock.close()

    def _drop(self, pair: _Pair, *, abort: bool) -> None:
        for sock in pair.sockets():
            self._pairs.pop(sock, None)
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(sock)
            if abort:
                _abort(sock)
            else:
                with contextlib.suppress(OSError):
                    sock.close()
        pair.up = pair.down = None
