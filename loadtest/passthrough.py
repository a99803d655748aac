"""The floor under any gateway on this stack: a pass-through on the gateway's own server and
client (uvicorn with uvloop and httptools, as BentoML runs it; the gateway's default transport,
aiohttp), with none of the gateway's work: no keys, no plan, no accounting.
``bench tenants`` measures it in the same run as the gateway, so the added latency of the
gateway's own code reads against it.

    python -m loadtest.passthrough --port 8100 --upstream http://127.0.0.1:8000/v1 --key sk-...
"""

from __future__ import annotations

import argparse

import uvicorn
from starlette.types import Message, Receive, Scope, Send

from gateway.upstream.transports import AiohttpTransport, Wire, default_headers


class PassThrough:
    """Every POST body goes to ``upstream`` + the path after ``/v1``; the answer comes back."""

    def __init__(self, upstream: str, key: str) -> None:
        self.transport = AiohttpTransport(Wire(upstream, default_headers(key), 100, 20, 5.0))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["method"] != "POST":  # readiness
            await _answer(send, 200, b"{}")
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        status, _, content = await self.transport.post(scope["path"].removeprefix("/v1"), body,
                                                       60.0)
        await _answer(send, status, content)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message: Message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await self.transport.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _answer(send: Send, status: int, content: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(content)).encode())]})
    await send({"type": "http.response.body", "body": content})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--key", default="")
    args = parser.parse_args()
    uvicorn.run(PassThrough(args.upstream, args.key), host=args.host, port=args.port,
                loop="uvloop", http="httptools", log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
