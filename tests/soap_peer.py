"""A SOAP endpoint over real HTTP on loopback: the one home of the tests' stand-ins for other actors
(a registry that hangs or refuses, a repository that records what it got, another vendor's registry).

The peer reads each POST with the project's MTOM reader and envelope parser and hands the request to
``answer``, which returns the :class:`SoapResponse` to send, or a raw ``(HTTP status, Content-Type, bytes)``
answer for a broken peer (an HTML page, a fault with status 500).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from xds_core.soap.envelope import SoapRequest, SoapResponse, parse_envelope
from xds_core.soap.mtom_reader import read_message

RawAnswer = tuple[int, str, bytes]
Answer = Callable[[SoapRequest, str], SoapResponse | RawAnswer]


class SoapPeer:
    """Serves ``answer(request, request Content-Type)`` at ``http://127.0.0.1:<port><path>`` until :meth:`stop`."""

    def __init__(self, path: str, answer: Answer, *, max_size: int = 1 << 30) -> None:
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                content_type = self.headers["Content-Type"]
                message = read_message(content_type, self.rfile, content_length=int(self.headers["Content-Length"]),
                                       max_size=max_size, max_xml_size=1 << 26)
                request = parse_envelope(message)
                answered = answer(request, content_type)
                if isinstance(answered, SoapResponse):
                    answered.relates_to = request.message_id
                    answer_type, _, chunks = answered.render()
                    status, data = 200, b"".join(chunks)
                else:
                    status, answer_type, data = answered
                self.send_response(status)
                self.send_header("Content-Type", answer_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}{path}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
