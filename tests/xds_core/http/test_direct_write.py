"""Vectored writes straight to gunicorn's client socket (xds_core.http.direct_write)."""

from __future__ import annotations

import socket
import threading

import pytest
from gunicorn.config import Config
from gunicorn.http.wsgi import Response

from xds_core.http import direct_write
from xds_core.http.direct_write import IOV_MAX, DirectWriter, install, send_all


class _TrickleSocket:
    """A socket whose sendmsg takes at most ``limit`` bytes per call (as after a signal or a full buffer)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.data = bytearray()
        self.calls: list[int] = []

    def sendmsg(self, buffers: list) -> int:  # noqa: ANN001
        self.calls.append(len(buffers))
        taken = 0
        for buffer in buffers:
            piece = bytes(buffer)[: self.limit - taken]
            self.data += piece
            taken += len(piece)
            if taken == self.limit:
                break
        return taken


def test_send_all_resends_what_a_partial_sendmsg_left() -> None:
    pieces = [b"head", memoryview(b"0123456789abcdef")[3:12], b"", bytearray(b"tail")]
    sock = _TrickleSocket(limit=5)
    assert send_all(sock, pieces) == 4 + 9 + 4  # type: ignore[arg-type]
    assert bytes(sock.data) == b"head3456789abtail"
    assert len(sock.calls) == 4  # 17 bytes, at most 5 per call


def test_send_all_never_passes_more_than_iov_max_buffers() -> None:
    pieces = [bytes([i % 251]) for i in range(3 * IOV_MAX + 7)]
    sock = _TrickleSocket(limit=10**9)
    send_all(sock, pieces)  # type: ignore[arg-type]
    assert bytes(sock.data) == b"".join(pieces)
    assert max(sock.calls) <= IOV_MAX and len(sock.calls) == 4


def test_send_all_on_a_real_socket_delivers_every_byte_in_order() -> None:
    left, right = socket.socketpair()
    left.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)  # many partial sends
    received = bytearray()

    def drain() -> None:
        while chunk := right.recv(65536):
            received.extend(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    block = bytes(range(256)) * 4096  # 1 MiB
    pieces = [memoryview(block)[i:i + 40_000] for i in range(0, len(block), 40_000)]
    try:
        assert send_all(left, pieces) == len(block)
    finally:
        left.close()
        reader.join(10)
        right.close()
    assert bytes(received) == block


class _FakeResponse:
    """The attributes of gunicorn's Response that DirectWriter relies on."""

    def __init__(self, sock: object, *, chunked: bool, response_length: int | None = None,
                 headers: list[tuple[str, str]] | None = None) -> None:
        self.sock = sock
        self.chunked = chunked
        self.response_length = response_length
        self.headers = headers or [("Content-Type", "multipart/related")]
        self.sent = 0
        self.headers_sent = False

    def send_headers(self) -> None:
        if not self.headers_sent:
            send_all(self.sock, [b"HTTP/1.1 200 OK\r\n\r\n"])  # type: ignore[arg-type]
            self.headers_sent = True


def test_direct_writer_frames_a_group_as_one_http_chunk_after_the_headers() -> None:
    sock = _TrickleSocket(limit=10**9)
    response = _FakeResponse(sock, chunked=True)
    writer = DirectWriter(response)
    assert writer.write([b"--b\r\n", memoryview(b"xDICMy")[1:5], b"\r\n"])
    assert writer.write([])  # nothing to send: no empty chunk (it would end the body)
    assert bytes(sock.data) == b"HTTP/1.1 200 OK\r\n\r\n" + b"B\r\n--b\r\nDICM\r\n\r\n"
    assert response.sent == 11


def test_direct_writer_writes_a_close_delimited_body_unframed() -> None:
    sock = _TrickleSocket(limit=3)
    writer = DirectWriter(_FakeResponse(sock, chunked=False))
    assert writer.write([b"abc", b"defg"])
    assert bytes(sock.data) == b"HTTP/1.1 200 OK\r\n\r\nabcdefg"


def test_direct_writer_leaves_a_content_length_answer_to_the_server() -> None:
    sock = _TrickleSocket(limit=10**9)
    assert not DirectWriter(_FakeResponse(sock, chunked=False, response_length=10)).write([b"abc"])
    assert sock.data == b""


def test_direct_writer_leaves_a_re_encoded_answer_to_the_middleware() -> None:
    sock = _TrickleSocket(limit=10**9)
    response = _FakeResponse(sock, chunked=True, headers=[("Content-Encoding", "gzip")])
    assert not DirectWriter(response).write([b"abc"])
    assert sock.data == b""


class _Request:
    version = (1, 1)
    method = "POST"
    uri = path = "/xds/imaging-source"
    headers: list = []  # noqa: RUF012

    def should_close(self) -> bool:
        return False


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_install_offers_a_writer_to_gunicorn_over_plain_tcp_only(tls: bool) -> None:
    left, right = socket.socketpair()
    try:
        sock = left
        if tls:
            class _TlsLike(socket.socket):  # stands for ssl.SSLSocket: a subclass without a usable sendmsg
                pass
            sock = _TlsLike(fileno=left.detach())
        response = Response(_Request(), sock, Config())
        environ: dict = {}
        install(environ, response.start_response)
        assert (direct_write.ENVIRON_KEY in environ) is not tls
        install(other := {}, lambda status, headers: None)  # any other WSGI server: nothing offered
        assert other == {}
    finally:
        sock.close()
        right.close()
