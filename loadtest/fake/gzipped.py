"""``--gzip`` (``--brotli``): every ``/v1/*`` answer gzip- (brotli-) encoded, whatever the
client offered (some upstreams do that), streams flushed chunk by chunk so they still stream."""

from __future__ import annotations

import zlib
from typing import Any


class _Brotli:
    def __init__(self) -> None:
        import brotli

        self._packer = brotli.Compressor()

    def compress(self, data: bytes) -> bytes:
        return bytes(self._packer.process(data))

    def flush(self, mode: int) -> bytes:
        return bytes(self._packer.finish() if mode == zlib.Z_FINISH else self._packer.flush())


class GzipEverything:
    def __init__(self, app: Any, encoding: str = "gzip") -> None:
        self.app = app
        self.encoding = encoding

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        packer: Any = _Brotli() if self.encoding == "br" else \
            zlib.compressobj(wbits=31)  # 16 + 15: the gzip container
        start: dict[str, Any] = {}

        async def gzip_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
                return
            if message["type"] != "http.response.body":
                await send(message)
                return
            more = message.get("more_body", False)
            body = packer.compress(message.get("body", b""))
            body += packer.flush(zlib.Z_SYNC_FLUSH if more else zlib.Z_FINISH)
            if start:
                headers = [(k, v) for k, v in start["headers"]
                           if k.lower() not in (b"content-length", b"content-encoding")]
                headers.append((b"content-encoding", self.encoding.encode()))
                if not more:
                    headers.append((b"content-length", str(len(body)).encode()))
                await send({**start, "headers": headers})
                start.clear()
            await send({"type": "http.response.body", "body": body, "more_body": more})

        await self.app(scope, receive, gzip_send)
