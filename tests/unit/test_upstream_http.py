"""The upstream HTTP client against a scripted raw-socket server: framing, reuse, faults, back-pressure."""

from __future__ import annotations

import asyncio
import gzip
import ssl
from collections.abc import Awaitable, Callable

import pytest
from multidict import CIMultiDict

from proxy.upstream_http import BodyBroken, ClosedBeforeAnswer, ConnectFailed, HTTPClient
from proxy.upstream_http.connection import FEED_SLICE, Connection, Pool
from proxy.upstream_http.response import HIGH_WATER, Response
from proxy.upstream_http.wire import parse_origin
from tests.fixtures.servers import free_port

Script = Callable[["ScriptedServer", asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class ScriptedServer:
    """Answers each connection with a script; records every request head and counts connections."""

    def __init__(self, script: Script, tls: ssl.SSLContext | None = None) -> None:
        self.script = script
        self.tls = tls
        self.connections = 0
        self.heads: list[bytes] = []
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> ScriptedServer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.close()
        await self.server.wait_closed()

    @property
    def url(self) -> str:
        assert self.server is not None
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def read_request(self, reader: asyncio.StreamReader) -> bytes:
        head = await reader.readuntil(b"\r\n\r\n")
        self.heads.append(head)
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                await reader.readexactly(int(line.split(b":")[1]))
        return head

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        try:
            await self.script(self, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


def keep_answering(answer: bytes) -> Script:
    async def script(server: ScriptedServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await server.read_request(reader)
            writer.write(answer)
            await writer.drain()

    return script


def answer_once(answer: bytes) -> Script:
    """Then the connection closes."""

    async def script(server: ScriptedServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(answer)
        await writer.drain()

    return script


async def until(condition: Callable[[], bool]) -> None:
    """For states the client offers no event for (a FIN seen, a socket paused)."""
    async with asyncio.timeout(5):
        while not condition():  # noqa: ASYNC110 - no event to await
            await asyncio.sleep(0.005)


def headers(**values: str) -> CIMultiDict[str]:
    return CIMultiDict({k.replace("_", "-"): v for k, v in values.items()})


async def test_a_kept_alive_connection_serves_the_next_request():
    answer = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-type: text/plain\r\n\r\nhello"
    server = ScriptedServer(keep_answering(answer))
    client = HTTPClient()
    async with server:
        url = server.url
        for _ in range(3):
            response = await client.request("POST", url + "/v1/x?a=%2F", headers(content_type="text/plain"), b"hi")
            assert (response.status, response.content_length, await response.read()) == (200, 5, b"hello")
            response.release()
        assert server.connections == 1
        assert client.connections() == (0, 1)
    await client.close()
    head = server.heads[0].decode()
    assert head.startswith("POST /v1/x?a=%2F HTTP/1.1\r\n")  # the target goes as given, still encoded
    assert f"Host: {url.removeprefix('http://')}\r\n" in head
    assert "Content-Length: 2\r\n" in head and "content-type: text/plain\r\n" in head


async def test_a_chunked_body_arrives_piece_by_piece_as_it_is_sent():
    sent_second = asyncio.Event()
    got_first = asyncio.Event()

    async def script(server: ScriptedServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        await got_first.wait()  # the second piece only after the client has the first
        writer.write(b"6\r\nsecond\r\n0\r\n\r\n")
        sent_second.set()
        await reader.read()

    client = HTTPClient()
    async with ScriptedServer(script) as server:
        response = await client.request("GET", server.url + "/", headers())
        assert response.content_length is None
        assert await response.readany() == b"first"
        assert not sent_second.is_set()
        got_first.set()
        assert await response.readany() == b"second"
        assert await response.readany() == b""
        response.release()
    await client.close()


async def test_a_body_delimited_by_the_end_of_the_connection_is_whole_and_the_connection_is_not_kept():
    answer = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil the end"
    client = HTTPClient()
    async with ScriptedServer(answer_once(answer)) as server:
        response = await client.request("GET", server.url + "/", headers())
        assert await response.read() == b"until the end"
        response.release()
        assert client.connections() == (0, 0)
    await client.close()


async def test_gzip_bodies_are_decoded_and_interim_answers_skipped():
    packed = gzip.compress(b'{"ok": true}')
    answer = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        + b"HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ncontent-length: %d\r\n\r\n" % len(packed)
        + packed
    )
    server = ScriptedServer(keep_answering(answer))
    client = HTTPClient()
    async with server:
        response = await client.request("POST", server.url + "/", headers(), b"{}")
        assert response.status == 200
        assert await response.read() == b'{"ok": true}'
        assert "Accept-Encoding: gzip, deflate\r\n" in server.heads[0].decode()
        response.release()
    await client.close()


async def test_a_head_answer_has_no_body_whatever_its_length_says():
    server = ScriptedServer(keep_answering(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n"))
    client = HTTPClient()
    async with server:
        response = await client.request("HEAD", server.url + "/", headers())
        assert (response.status, await response.read()) == (200, b"")
        response.release()
    await client.close()


@pytest.mark.parametrize(
    ("answer", "expected"),
    [(b"", ClosedBeforeAnswer), (b"HTTP/1.1 20", ClosedBeforeAnswer), (b"SMTP ready\r\n\r\n", ClosedBeforeAnswer)],
)
async def test_no_head_is_closed_before_answer(answer, expected):
    client = HTTPClient()
    async with ScriptedServer(answer_once(answer)) as server:
        with pytest.raises(expected):
            await client.request("GET", server.url + "/", headers())
        assert client.connections() == (0, 0)
    await client.close()


async def test_a_body_cut_short_gives_what_arrived_then_fails():
    client = HTTPClient()
    async with ScriptedServer(answer_once(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhalf.")) as server:
        response = await client.request("GET", server.url + "/", headers())
        assert await response.readany() == b"half."
        with pytest.raises(BodyBroken):
            await response.readany()
        response.close()
    await client.close()


async def test_connecting_nowhere_fails_to_connect():
    client = HTTPClient()
    with pytest.raises(ConnectFailed):
        await client.request("GET", f"http://127.0.0.1:{free_port()}/", headers(), connect_s=2)
    await client.close()


async def test_a_line_break_in_a_header_never_reaches_the_wire():
    client = HTTPClient()
    with pytest.raises(ValueError, match="line break"):
        await client.request("GET", "http://127.0.0.1:9/", headers(x_evil="a\r\nx-injected: 1"))
    await client.close()


async def test_user_info_in_the_url_becomes_basic_auth():
    server = ScriptedServer(keep_answering(b"HTTP/1.1 204 No Content\r\n\r\n"))
    client = HTTPClient()
    async with server:
        url = server.url.replace("http://", "http://tool:s%40cret@") + "/"
        response = await client.request("GET", url, headers())
        assert response.status == 204
        response.release()
    await client.close()
    assert "Authorization: Basic dG9vbDpzQGNyZXQ=\r\n" in server.heads[0].decode()  # tool:s@cret
    assert "@" not in server.heads[0].decode().split("Host: ")[1].split("\r\n")[0]


async def test_a_connection_the_server_closed_while_idle_is_not_reused():
    client = HTTPClient()
    # the server closes each connection after one answer, as an idle timeout would
    async with ScriptedServer(answer_once(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")) as server:
        first = await client.request("GET", server.url + "/", headers())
        await first.read()
        pooled = first._conn
        first.release()
        await until(lambda: pooled.lost)  # the server's FIN reaches the pooled connection
        second = await client.request("GET", server.url + "/", headers())
        assert await second.read() == b"ok"
        second.release()
        assert server.connections == 2
    await client.close()


async def test_an_unread_body_stops_the_socket_being_read():
    size = 8 * 1024 * 1024
    drained = asyncio.Event()

    async def script(server: ScriptedServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % size + b"x" * size)
        await writer.drain()
        drained.set()

    client = HTTPClient()
    async with ScriptedServer(script) as server:
        response = await client.request("GET", server.url + "/", headers())
        transport = response._conn.transport
        await until(lambda: not transport.is_reading())
        assert response._buffered <= 2 * HIGH_WATER  # held back, not the whole 8 MiB
        assert not drained.is_set()
        received = len(response.read_nowait())
        while chunk := await response.readany():
            received += len(chunk)
        assert received == size
        response.release()
    await client.close()


def self_signed(tmp_path) -> tuple[str, str]:
    """A certificate for 127.0.0.1 and its key, as PEM files."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return str(cert_path), str(key_path)


async def test_https_verifies_the_certificate(tmp_path):
    cert, key = self_signed(tmp_path)
    server_side = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_side.load_cert_chain(cert, key)
    answer = b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nsecret"
    trusting = HTTPClient(ssl_context=ssl.create_default_context(cafile=cert))
    async with ScriptedServer(keep_answering(answer), tls=server_side) as server:
        response = await trusting.request("GET", server.url + "/", headers())
        assert await response.read() == b"secret"
        response.release()
        with pytest.raises(ConnectFailed):  # the default trust store does not know this certificate
            await HTTPClient().request("GET", server.url + "/", headers(), connect_s=2)
    await trusting.close()


async def test_no_head_by_the_first_byte_deadline_times_out_and_drops_the_connection():
    async def silent(server: ScriptedServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        await reader.read()

    client = HTTPClient()
    async with ScriptedServer(silent) as server:
        loop = asyncio.get_running_loop()
        with pytest.raises(TimeoutError):
            await client.request("GET", server.url + "/", headers(), first_byte_at=loop.time() + 0.05)
        assert client.connections() == (0, 0)
    await client.close()


async def test_a_read_with_nothing_arriving_times_out_at_its_deadline():
    async def head_only(server: ScriptedServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nhi\r\n")
        await reader.read()

    client = HTTPClient()
    async with ScriptedServer(head_only) as server:
        response = await client.request("GET", server.url + "/", headers())
        loop = asyncio.get_running_loop()
        assert await response.readany(loop.time() + 0.05) == b"hi"  # what is there needs no wait
        with pytest.raises(TimeoutError):
            await response.readany(loop.time() + 0.05)
        response.close()
    await client.close()


class RecordingTransport(asyncio.Transport):
    """Stands in for the socket, so one `data_received` can carry a whole burst."""

    def __init__(self) -> None:
        super().__init__()
        self.reading, self.closed = True, False

    def write(self, data: bytes) -> None:
        pass

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: object = None) -> object:
        return default


async def test_a_burst_is_parsed_a_slice_at_a_time_so_the_head_is_read_before_the_rest():
    events = [b"data: event %d\n\n" % i for i in range(5000)]
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(e), e) for e in events) + b"0\r\n\r\n"
    burst = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n" + chunked
    assert len(burst) > 4 * FEED_SLICE
    pool = Pool(parse_origin("http://upstream.test"), 30.0)
    conn, transport = Connection(pool), RecordingTransport()
    conn.connection_made(transport)
    response = Response(conn, "GET", None)
    conn.start(response, b"")
    conn.data_received(burst)  # all of it in one read
    assert response.has_head and not response.done  # the rest waits for later turns of the loop
    assert not transport.reading  # and no more is read from the socket meanwhile
    assert await response.read() == b"".join(events)  # every slice, in order
    assert response.done and transport.reading


class IdleConnection:
    """What a `Response` needs of its connection when it is fed by hand."""

    def resume(self) -> None:
        pass

    def finish(self, reusable: bool) -> None:
        pass


async def test_a_read_is_timed_by_its_own_deadline_not_an_earlier_one():
    loop = asyncio.get_running_loop()
    response = Response(IdleConnection(), "GET", None)
    response._on_head(200, "OK")
    loop.call_later(0.01, response._on_body, b"first")
    assert await response.readany(loop.time() + 0.05) == b"first"  # arms the watch for +0.05
    loop.call_later(0.1, response._on_body, b"second")  # after that first deadline, before this read's own
    assert await response.readany(loop.time() + 0.5) == b"second"
    with pytest.raises(TimeoutError):
        await response.readany(loop.time() + 0.02)
    response.close()
