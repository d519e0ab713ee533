"""Loopback TCP proxies in front of the test PACS's HTTP port, to watch or hold what passes."""

from __future__ import annotations

import socket
import threading


class LoopbackProxy:
    """Accepts on an ephemeral loopback port; each connection is handed to :meth:`relay` on its own thread."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self.relay, args=(client,), daemon=True).start()

    def relay(self, client: socket.socket) -> None:
        raise NotImplementedError

    def forward_requests(self, client: socket.socket, upstream: socket.socket) -> None:
        """Pass what the client sends on to the PACS, on a thread of its own (see :meth:`seen`)."""

        def forward() -> None:
            try:
                while data := client.recv(65536):
                    self.seen(data)
                    upstream.sendall(data)
            except OSError:
                pass  # the answer side closed both

        threading.Thread(target=forward, daemon=True).start()

    def seen(self, data: bytes) -> None:
        """Called with each piece of a request on its way to the PACS."""

    def close(self) -> None:
        self.listener.close()


class CountingProxy(LoopbackProxy):
    """Records the request line of every request that reaches the PACS."""

    def __init__(self, upstream_port: int) -> None:
        self.requests: list[bytes] = []
        super().__init__(upstream_port)

    def seen(self, data: bytes) -> None:
        if data.startswith(b"GET "):
            self.requests.append(data.split(b"\r\n", 1)[0])

    def relay(self, client: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        self.forward_requests(client, upstream)
        try:
            while data := upstream.recv(65536):
                client.sendall(data)
        except OSError:
            pass  # the client dropped its request
        finally:
            client.close()
            upstream.close()


class HoldingProxy(LoopbackProxy):
    """Forwards the PACS's answer as it comes but keeps its last bytes until ``release`` is set:
    the PACS has not finished sending."""

    HOLD = 16  # inside the close delimiter, so the last part cannot be known complete either

    def __init__(self, upstream_port: int) -> None:
        self.release = threading.Event()
        self.holding = threading.Event()  # set once the upstream answer is in, all but HOLD bytes sent
        # Set once the held tail went out (after ``release``, or after 30 s without it): a consumer
        # that got an instance before this is set got it while the PACS's answer was incomplete.
        self.tail_sent = threading.Event()
        self.fetch_gone = threading.Event()  # the tail could not be sent: the fetch had hung up
        super().__init__(upstream_port)

    def relay(self, client: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        self.forward_requests(client, upstream)
        held = b""
        try:
            while data := upstream.recv(65536):
                held += data
                if len(held) > self.HOLD:
                    client.sendall(held[:-self.HOLD])
                    held = held[-self.HOLD:]
            self.holding.set()
            self.release.wait(30)
            client.sendall(held)
            self.tail_sent.set()
        except OSError:  # our side (the fetch) closed its connection to the PACS before the answer's end
            self.fetch_gone.set()
        finally:
            client.close()
            upstream.close()

    def close(self) -> None:
        self.release.set()
        super().close()


class TransferSyntaxProxy(LoopbackProxy):
    """An HTTP proxy that records each request's Accept and, with ``refuse``, answers 406 Not Acceptable
    to any Accept naming a specific transfer syntax (PS3.18 8.7.3.5.2), as a PACS that does not
    transcode would; everything else goes to the PACS.  One request per connection (``Connection: close``
    is put in the forwarded request, so the PACS closes after its answer)."""

    def __init__(self, upstream_port: int, *, refuse: bool) -> None:
        self.refuse = refuse
        self.accepts: list[str] = []  # the Accept of every GET, in order
        self.refused = 0
        super().__init__(upstream_port)

    def relay(self, client: socket.socket) -> None:
        try:
            head = b""
            while b"\r\n\r\n" not in head:
                data = client.recv(65536)
                if not data:
                    return
                head += data
            lines = head.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
            accept = headers.get("accept", "")
            self.accepts.append(accept)
            if self.refuse and "transfer-syntax=" in accept and "transfer-syntax=*" not in accept:
                self.refused += 1
                body = b"no such transfer-syntax"
                client.sendall(b"HTTP/1.1 406 Not Acceptable\r\nContent-Type: text/plain\r\nConnection: close\r\n"
                               b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
                return
            forwarded = [line for line in lines if not line.lower().startswith("connection:")]
            request = "\r\n".join([*forwarded, "Connection: close", "", ""]).encode("latin-1")
            with socket.create_connection(("127.0.0.1", self.upstream_port)) as upstream:
                upstream.sendall(request)
                while data := upstream.recv(65536):
                    client.sendall(data)
        except OSError:
            pass  # the client dropped its request
        finally:
            client.close()
