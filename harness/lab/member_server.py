"""The lab's test backend: HTTP, HTTPS, TCP and UDP services that answer with the member's id.

Every answer says which member answered and which client address the member saw, so a scenario
can tell from the response alone where the load balancer sent it and whether the source was
rewritten. HTTP knobs (query parameters): `delay=<seconds>` waits before answering, `status=<code>`
answers with that status.

    HTTP/HTTPS  JSON {"member", "client", "client_port", "method", "path", "forwarded_for",
                "forwarded_port", "forwarded_proto"}
                and the header X-Member-Id
    TCP         one JSON line {"member", "client", "client_port", "proto": "tcp"}, then close
    UDP         one JSON datagram per datagram received, same fields, "proto": "udp"

Standard library only: it runs on Debian's python3 in the member image and on the host in tests.
One asyncio loop serves everything; with keep-alive it handles well over 5,000 small requests
per second on one core (see the README for the measured figure). Once every socket is bound it
prints one JSON line `{"ready": true, "ports": {...}}` to stdout (ports may be 0 = any).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import ssl
import sys
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 16 * 1024 * 1024
MAX_DELAY_S = 120.0
# An idle keep-alive connection is closed after this long, so abandoned clients free their slot.
IDLE_TIMEOUT_S = 60.0


class BadRequest(Exception):
    """The request cannot be answered; the connection is closed after the error response."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def identity(member_id: str, peer: tuple, **extra: object) -> dict:
    """The fields every answer carries: who answered and whom it saw."""
    return {"member": member_id, "client": peer[0], "client_port": peer[1], **extra}


def _status_line(status: int) -> str:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Status"
    return f"HTTP/1.1 {status} {phrase}\r\n"


def _knobs(query: str) -> tuple[float, int]:
    """delay (seconds) and status from the query string, validated."""
    params = parse_qs(query)
    try:
        delay = float(params.get("delay", ["0"])[-1])
        status = int(params.get("status", ["200"])[-1])
    except ValueError as exc:
        raise BadRequest(400, f"bad knob: {exc}") from exc
    if not 0 <= delay <= MAX_DELAY_S:
        raise BadRequest(400, f"delay must be within 0..{MAX_DELAY_S:g}")
    if not 200 <= status <= 599:
        raise BadRequest(400, "status must be within 200..599")
    return delay, status


def _parse_head(head: bytes) -> tuple[str, str, str, dict[str, str]]:
    """method, target, version, headers (lower-case names) of one request head."""
    try:
        lines = head.decode("latin-1").split("\r\n")
        method, target, version = lines[0].split(" ")
    except ValueError as exc:
        raise BadRequest(400, "malformed request line") from exc
    if not version.startswith("HTTP/1."):
        raise BadRequest(505, "only HTTP/1.x is served")
    headers = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise BadRequest(400, "malformed header line")
        headers[name.strip().lower()] = value.strip()
    return method, target, version, headers


def _keep_alive(version: str, headers: dict[str, str]) -> bool:
    connection = headers.get("connection", "").lower()
    if version == "HTTP/1.0":
        return connection == "keep-alive"
    return connection != "close"


def _response(status: int, body: bytes, keep_alive: bool, member_id: str, head_only: bool) -> bytes:
    head = (
        _status_line(status)
        + "Content-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n"
        + f"X-Member-Id: {member_id}\r\n"
        + ("" if keep_alive else "Connection: close\r\n")
        + "\r\n"
    )
    return head.encode("latin-1") + (b"" if head_only else body)


class HttpService:
    """HTTP/1.1 with keep-alive; the same handler serves HTTPS when the server has a TLS context."""

    def __init__(self, member_id: str) -> None:
        self.member_id = member_id

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        try:
            while await self._one_request(reader, writer, peer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError, ssl.SSLError):
            pass  # the client went away or stalled: nothing left to answer
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()

    async def _one_request(self, reader, writer, peer) -> bool:
        """Answer one request; False when the connection should close."""
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), IDLE_TIMEOUT_S)
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                raise
            return False  # clean end of a keep-alive connection
        except asyncio.LimitOverrunError:
            writer.write(self._error(431, "request head too large"))
            return False
        try:
            method, target, version, headers = _parse_head(head[:-4])
            await self._discard_body(reader, headers)
            url = urlsplit(target)
            delay, status = _knobs(url.query)
        except BadRequest as exc:
            writer.write(self._error(exc.status, exc.reason))
            return False
        if delay:
            await asyncio.sleep(delay)
        keep_alive = _keep_alive(version, headers)
        body = json.dumps(
            identity(
                self.member_id, peer,
                method=method, path=url.path,
                forwarded_for=headers.get("x-forwarded-for"),
                forwarded_port=headers.get("x-forwarded-port"),
                forwarded_proto=headers.get("x-forwarded-proto"),
            )
        ).encode()
        writer.write(_response(status, body, keep_alive, self.member_id, method == "HEAD"))
        await writer.drain()
        return keep_alive

    @staticmethod
    async def _discard_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> None:
        if "transfer-encoding" in headers:
            raise BadRequest(501, "chunked request bodies are not served")
        try:
            length = int(headers.get("content-length", "0"))
        except ValueError as exc:
            raise BadRequest(400, "bad Content-Length") from exc
        if not 0 <= length <= MAX_BODY_BYTES:
            raise BadRequest(413, "request body too large")
        if length:
            await reader.readexactly(length)

    def _error(self, status: int, reason: str) -> bytes:
        body = json.dumps({"member": self.member_id, "error": reason}).encode()
        return _response(status, body, False, self.member_id, False)


class TcpService:
    """Answers every connection with one JSON line, then closes it."""

    def __init__(self, member_id: str) -> None:
        self.member_id = member_id

    async def handle(self, _reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        line = json.dumps(identity(self.member_id, peer, proto="tcp")) + "\n"
        with contextlib.suppress(ConnectionError):
            writer.write(line.encode())
            await writer.drain()
        writer.close()


class UdpService(asyncio.DatagramProtocol):
    """Answers every datagram with one JSON datagram."""

    def __init__(self, member_id: str) -> None:
        self.member_id = member_id
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, _data: bytes, addr) -> None:
        answer = json.dumps(identity(self.member_id, addr, proto="udp")).encode()
        self.transport.sendto(answer, addr)


def tls_context(pem_path: str) -> ssl.SSLContext:
    """A server context from one PEM file holding the key and the certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pem_path)
    return context


async def serve(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    http = HttpService(args.id)
    servers = {
        "http": await asyncio.start_server(
            http.handle, args.bind, args.http_port, limit=MAX_HEADER_BYTES
        ),
        "tcp": await asyncio.start_server(TcpService(args.id).handle, args.bind, args.tcp_port),
    }
    if args.tls_pem:
        servers["https"] = await asyncio.start_server(
            http.handle, args.bind, args.https_port, limit=MAX_HEADER_BYTES,
            ssl=tls_context(args.tls_pem),
        )
    udp, _ = await loop.create_datagram_endpoint(
        lambda: UdpService(args.id), local_addr=(args.bind, args.udp_port)
    )
    ports = {name: server.sockets[0].getsockname()[1] for name, server in servers.items()}
    ports["udp"] = udp.get_extra_info("sockname")[1]
    stopped = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopped.set)
    # Only now: whoever waits for this line may signal us right away.
    print(json.dumps({"ready": True, "member": args.id, "ports": ports}), flush=True)
    await stopped.wait()
    udp.close()
    for server in servers.values():
        server.close()


def build_arg_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="amphora-harness test backend (member)")
    parser.add_argument("--id", required=True, help="the member id every answer carries")
    parser.add_argument("--bind", default="0.0.0.0")
    parser.add_argument("--http-port", type=int, default=8080)
    parser.add_argument("--https-port", type=int, default=8443)
    parser.add_argument("--tls-pem", help="key + certificate PEM; HTTPS is served only with it")
    parser.add_argument("--tcp-port", type=int, default=9000)
    parser.add_argument("--udp-port", type=int, default=9000)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_arg_parser().parse_args(argv)
    try:
        asyncio.run(serve(args))
    except OSError as exc:
        print(f"member-server: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
