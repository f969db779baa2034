"""A TCP relay in front of Redis that records what its clients send (``bench/volume.py``).

Every command is kept as sent (the RESP array of arguments, in the order the relay passed
it on) and every round trip counted: a client's burst of requests after an answer, so a
pipeline of 50 commands is one round trip and a blocking BRPOP is one. Redis cannot tell
either (MONITOR shows commands, not round trips, and with its own quoting), which is why
the benchmark puts this between the stack and its Redis. Two threads per connection; the
relay costs the clients latency, never Redis work.
"""

from __future__ import annotations

import itertools
import socket
import threading
import time
from dataclasses import dataclass, field

import hiredis

Command = list[bytes]


@dataclass
class Trips:
    """One connection's round trips: a request that follows an answer (or opens) is a new one."""

    count: int = 0
    answered: bool = True

    def request(self) -> bool:
        """Bytes went to Redis; True when they began a new round trip."""
        new = self.answered
        if new:
            self.count += 1
            self.answered = False
        return new

    def answer(self) -> None:
        self.answered = True


@dataclass
class Mark:
    """Where the tap's tallies stood at one moment."""

    at: float
    commands: int
    trips: int


@dataclass
class Tap:
    """Relays ``127.0.0.1:port`` to the Redis on ``target_port``; see the module docstring."""

    target_port: int
    port: int = 0
    log: list[Command] = field(default_factory=list)
    _trips: list[Trips] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _sockets: list[socket.socket] = field(default_factory=list)
    _closed: bool = False

    def start(self) -> Tap:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(512)
        self.port = listener.getsockname()[1]
        self._sockets.append(listener)
        threading.Thread(target=self._accept, args=(listener,), name="redis-tap", daemon=True).start()
        return self

    def stop(self) -> None:
        self._closed = True
        for sock in list(self._sockets):
            try:
                sock.close()
            except OSError:
                pass

    def mark(self) -> Mark:
        with self._lock:
            return Mark(time.monotonic(), len(self.log), sum(t.count for t in self._trips))

    def commands_since(self, mark: Mark) -> list[Command]:
        with self._lock:
            return self.log[mark.commands :]

    # -- the relay -------------------------------------------------------------------------

    def _accept(self, listener: socket.socket) -> None:
        for n in itertools.count():
            try:
                client, _ = listener.accept()
            except OSError:
                return  # stopped
            server = socket.create_connection(("127.0.0.1", self.target_port))
            for sock in (client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            trips = Trips()
            with self._lock:
                self._sockets += [client, server]
                self._trips.append(trips)
            threading.Thread(target=self._requests, args=(client, server, trips), name=f"tap-{n}", daemon=True).start()
            threading.Thread(target=self._answers, args=(server, client, trips), name=f"tap-{n}r", daemon=True).start()

    def _requests(self, client: socket.socket, server: socket.socket, trips: Trips) -> None:
        reader = hiredis.Reader()
        while data := self._recv(client):
            reader.feed(data)
            commands: list[Command] = []
            while (command := reader.gets()) is not False:
                commands.append(command)
            with self._lock:  # recorded before it is passed on: the log's order is Redis's
                trips.request()
                self.log += commands
            if not self._send(server, data):
                break
        self._close(client, server)

    def _answers(self, server: socket.socket, client: socket.socket, trips: Trips) -> None:
        while data := self._recv(server):
            with self._lock:
                trips.answer()
            if not self._send(client, data):
                break
        self._close(client, server)

    @staticmethod
    def _recv(sock: socket.socket) -> bytes:
        try:
            return sock.recv(1 << 16)
        except OSError:
            return b""

    @staticmethod
    def _send(sock: socket.socket, data: bytes) -> bool:
        try:
            sock.sendall(data)
            return True
        except OSError:
            return False

    @staticmethod
    def _close(*socks: socket.socket) -> None:
        for sock in socks:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
