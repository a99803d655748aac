"""The README's demo: the fake provider, the gateway in front of it, and a few real requests.

python -m loadtest.demo
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import httpx
import openai

from .harness import CLIENT_KEY, FakeProvider, GatewayServer


def show(title: str, payload: object) -> None:
    print(f"\n=== {title}")
    print(
        payload if isinstance(payload, str) else json.dumps(payload, indent=2, ensure_ascii=False)
    )


def main() -> None:
    logs = Path(tempfile.mkdtemp(prefix="gateway-demo-"))
    fake = FakeProvider(logs, "--chunks", "6", "--chunk-delay-ms", "50")
    gateway = GatewayServer(logs, fake.base_url, env={"GATEWAY_CACHE": "true"})
    print(f"fake provider on {fake.url}, gateway on {gateway.url} (logs in {logs})")
    try:
        auth = {"Authorization": f"Bearer {CLIENT_KEY}"}
        show(
            "POST /call",
            httpx.post(
                f"{gateway.url}/call",
                headers=auth,
                json={
                    "messages": [
                        {"role": "system", "content": "You are a Python expert."},
                        {"role": "user", "content": "Write quicksort in Python"},
                    ]
                },
            ).json(),
        )

        sdk = openai.OpenAI(base_url=gateway.v1, api_key=CLIENT_KEY)
        raw = sdk.chat.completions.with_raw_response.create(
            model="gpt-4.1", messages=[{"role": "user", "content": "Hello from the OpenAI SDK"}]
        )
        completion = raw.parse()
        show(
            "openai SDK: chat.completions.create(model='gpt-4.1')",
            {
                "content": completion.choices[0].message.content,
                "usage": completion.usage.model_dump() if completion.usage else None,
                "x-gateway-cost-usd": raw.headers.get("x-gateway-cost-usd"),
                "x-gateway-model": raw.headers.get("x-gateway-model"),
            },
        )

        print("\n=== openai SDK: streaming from gemini-2.5-flash")
        for chunk in sdk.chat.completions.create(
            model="gemini-2.5-flash",
            stream=True,
            stream_options={"include_usage": True},
            messages=[{"role": "user", "content": "Stream me something"}],
        ):
            if chunk.choices:
                print(repr(chunk.choices[0].delta.content or ""), end=" ", flush=True)
            elif chunk.usage:
                print(f"\nusage: {chunk.usage.model_dump()}")

        again = sdk.chat.completions.with_raw_response.create(
            model="gpt-4.1", messages=[{"role": "user", "content": "Hello from the OpenAI SDK"}]
        )
        show(
            "the same request again: served by the cache",
            {
                "x-gateway-cache": again.headers.get("x-gateway-cache"),
                "x-gateway-cost-usd": again.headers.get("x-gateway-cost-usd"),
                "x-gateway-saved-usd": again.headers.get("x-gateway-saved-usd"),
            },
        )

        fake.fault(model="deepseek-v3.2", kind="status", status=503)
        raw = sdk.chat.completions.with_raw_response.create(
            model="deepseek-v3.2", messages=[{"role": "user", "content": "Are you there?"}]
        )
        show(
            "deepseek-v3.2 failing with 503: the fallback chain answers",
            {
                "served by": raw.headers.get("x-gateway-model"),
                "attempts": raw.headers.get("x-gateway-attempts"),
            },
        )
        fake.reset()

        show("GET /models", httpx.get(f"{gateway.url}/models").json())
        show("GET /health", httpx.get(f"{gateway.url}/health").json())
    finally:
        gateway.stop()
        fake.stop()


if __name__ == "__main__":
    main()
