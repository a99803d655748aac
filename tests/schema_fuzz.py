"""Schema-driven fuzzing of the gateway with Schemathesis, from the published OpenAI and
Anthropic OpenAPI documents (see ``tests/published_specs.py``).

Cases are generated first (Hypothesis, derandomized, no example database: the same cases on
every run), then sent by the caller: over a socket to ``bentoml serve`` or in process over
ASGI. The spec cannot know the gateway's catalog, so schema hooks keep generated requests
servable: a ``model`` string in a body becomes one of the catalog's models of the right kind,
``{model}`` in a path a catalog id, ``dimensions`` stays within the embedding model's size, and
integers stay within 64 bits. One constraint the spec states only in prose is added to its
schema (``prose_constraints``). Everything else is the spec's own.

Positive mode: the spec calls the request valid, so the gateway must answer 2xx (a stream must
end with ``[DONE]`` and carry no error event). Negative mode: the request violates the spec;
whatever the gateway answers, it is never a 5xx, and an error is JSON in the API's own shape.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cache
from typing import Any

import hypothesis.strategies as st
import schemathesis
from hypothesis import HealthCheck, Phase, given, reject, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import Case, GenerationMode
from schemathesis.core import NOT_SET
from schemathesis.core.errors import UnsupportedSchema

from gateway.catalog import load_catalog
from gateway.errors import ErrorCode

from .published_specs import published, subset


class Api(StrEnum):
    OPENAI = "openai"
    ANTHROPIC = "anthropic"


@dataclass(frozen=True)
class Target:
    """One operation of a published spec, as the gateway serves it."""

    api: Api
    path: str  # as the spec spells it
    method: str  # upper case
    model_kind: str  # which catalog models the ``model`` field may name
    stream: bool = False  # every generated body asks for a stream (rare in plain generation)
    bridged: bool = False  # translated to chat completions: some features cannot be

    @property
    def prefix(self) -> str:
        """OpenAI's paths are relative to its ``/v1`` server; Anthropic's carry ``/v1``."""
        return "/v1" if self.api is Api.OPENAI else ""

    @property
    def route(self) -> str:
        return self.prefix + self.path

    @property
    def name(self) -> str:
        return f"{self.method} {self.route}" + (" stream" if self.stream else "")


TARGETS = (
    Target(Api.OPENAI, "/chat/completions", "POST", "chat"),
    Target(Api.OPENAI, "/chat/completions", "POST", "chat", stream=True),
    Target(Api.OPENAI, "/embeddings", "POST", "embedding"),
    Target(Api.OPENAI, "/models", "GET", "chat"),
    Target(Api.OPENAI, "/models/{model}", "GET", "any"),
    Target(Api.OPENAI, "/completions", "POST", "chat", bridged=True),
    Target(Api.OPENAI, "/responses", "POST", "chat", bridged=True),
    Target(Api.OPENAI, "/responses", "POST", "chat", stream=True, bridged=True),
    Target(Api.ANTHROPIC, "/v1/messages", "POST", "chat", bridged=True),
    Target(Api.ANTHROPIC, "/v1/messages", "POST", "chat", stream=True, bridged=True),
)


@cache
def catalog_models(kind: str) -> tuple[str, ...]:
    models = load_catalog().models
    return tuple(sorted(name for name, entry in models.items()
                        if kind == "any" or entry.kind == kind))


# The catalog's embedding model (text-embedding-3-small) makes vectors of at most this size; the
# spec only says ``dimensions >= 1``.
EMBEDDING_DIMENSIONS = 1536


def _servable(body: dict[str, Any], model: str, stream: bool) -> dict[str, Any]:
    body = {**body, "model": model}
    if stream:
        body["stream"] = True
    dimensions = body.get("dimensions")
    if isinstance(dimensions, int) and not isinstance(dimensions, bool) and \
            dimensions > EMBEDDING_DIMENSIONS:
        body["dimensions"] = 1 + (dimensions - 1) % EMBEDDING_DIMENSIONS
    return body


def _with_catalog_model(target: Target) -> Callable[[Any, Any], Any]:
    def flatmap_body(context: Any, body: Any) -> Any:
        if target.path == "/responses" and isinstance(body, dict) and "prompt" not in body:
            # Optional in the spec because a stored prompt can supply them; the gateway
            # stores no prompts, so a servable request names both.
            body = {"model": "", "input": "Hello", **body}
        if isinstance(body, dict) and isinstance(body.get("model"), str):
            return st.sampled_from(catalog_models(target.model_kind)).map(
                lambda model: _servable(body, model, target.stream))
        return st.just(body)
    return flatmap_body


def _with_catalog_path_model(context: Any, path_parameters: Any) -> Any:
    if isinstance(path_parameters, dict) and isinstance(path_parameters.get("model"), str):
        return st.sampled_from(catalog_models("any")).map(
            lambda model: {**path_parameters, "model": model})
    return st.just(path_parameters)


INT64 = 2**63


def _within_int64(value: Any) -> bool:
    if isinstance(value, bool) or value is None or isinstance(value, str | float):
        return True
    if isinstance(value, int):
        return -INT64 <= value < INT64
    if isinstance(value, dict):
        return all(_within_int64(v) for v in value.values())
    if isinstance(value, list):
        return all(_within_int64(v) for v in value)
    return True


def _filter_body(context: Any, body: Any) -> bool:
    """JSON integers beyond 64 bits are not interoperable (RFC 8259 §6): every parser the
    gateway or an upstream uses reads them as floats or refuses them. The spec puts no bound
    on most integers, so the generator would send them."""
    return _within_int64(body)


def prose_constraints(api: Api, document: dict[str, Any]) -> None:
    """Constraints the spec states in its descriptions but not in its schemas, added to the
    subset so generated requests obey them too."""
    schemas = document["components"]["schemas"]
    if api is Api.OPENAI and "CreateEmbeddingRequest" in schemas:
        # "... cannot be an empty string" (the description of ``input``).
        variants = schemas["CreateEmbeddingRequest"]["properties"]["input"]["oneOf"]
        variants[0]["minLength"] = 1
        variants[1]["items"]["minLength"] = 1


@cache
def operation(target: Target) -> Any:
    """The Schemathesis operation for ``target``, in a document holding only that operation."""
    document = subset(published(target.api.value), [(target.path, target.method.lower())],
                      server="http://gateway.invalid" + target.prefix)
    prose_constraints(target.api, document)
    schema = schemathesis.openapi.from_dict(document)
    schema.hook("filter_body")(_filter_body)
    schema.hook("flatmap_body")(_with_catalog_model(target))
    schema.hook("flatmap_path_parameters")(_with_catalog_path_model)
    return schema[target.path][target.method]


@st.composite
def _supported(draw: st.DrawFn, cases: st.SearchStrategy[Case]) -> Case:
    """A case from ``cases``; one whose drawing reaches a part of the schema Schemathesis cannot
    generate for (in negative mode: a ``not`` it cannot negate) is rejected, not fatal: it would
    otherwise end the whole generation, for some draws and not others."""
    try:
        return draw(cases)
    except UnsupportedSchema:
        reject()


def generate(target: Target, mode: GenerationMode, max_examples: int) -> list[Case]:
    """Up to ``max_examples`` distinct cases, the same ones on every run."""
    cases: dict[str, Case] = {}

    @settings(max_examples=max_examples, derandomize=True, database=None, deadline=None,
              phases=[Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=_supported(operation(target).as_strategy(generation_mode=mode)))
    def collect(case: Case) -> None:
        key = json.dumps([case.formatted_path, case.query, _body(case)], sort_keys=True,
                         default=repr)
        cases.setdefault(key, case)

    try:
        collect()
    except Unsatisfiable:  # nothing in the operation to generate (negative: nothing to violate)
        return []
    return list(cases.values())


def _latin1(value: str) -> bool:
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


def _body(case: Case) -> Any:
    return None if case.body is NOT_SET else case.body


def request_args(case: Case, target: Target, auth: dict[str, str]) -> dict[str, Any]:
    """httpx ``request()`` arguments for ``case``: the generated parts plus the client's key."""
    # A header value HTTP/1.1 cannot carry (beyond Latin-1) never reaches a server: left out.
    headers = {str(k): str(v) for k, v in (case.headers or {}).items()
               if _latin1(str(v))}
    args: dict[str, Any] = {"method": case.method, "url": target.prefix + case.formatted_path,
                            "params": case.query or None, "headers": {**headers, **auth}}
    if isinstance(case.body, bytes):  # negative mode's raw payloads go as they are
        args["content"] = case.body
        args["headers"].setdefault("Content-Type", case.media_type or "application/json")
    elif case.body is not NOT_SET:
        args["json"] = case.body
    return args


def describe(args: dict[str, Any]) -> str:
    shown = {k: v for k, v in args.items() if k != "headers"}
    shown = {"param": shown.pop("param", None), **shown}  # the offending value first
    text = json.dumps(shown, default=repr, ensure_ascii=True)
    return text if len(text) <= 600 else text[:600] + "..."


# --- what a response must look like -----------------------------------------------------------

def _json(content: bytes) -> Any:
    try:
        return json.loads(content)
    except ValueError:
        return None


def error_shape_problem(api: Api, content_type: str, content: bytes) -> str | None:
    """Why an error body is not in the API's error shape (OpenAI's or Anthropic's), or None."""
    if not content_type.startswith("application/json"):
        return f"error with content type {content_type!r}"
    body = _json(content)
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return "error body without an 'error' object"
    if api is Api.ANTHROPIC:
        if body.get("type") != "error" or not all(
                isinstance(error.get(k), str) for k in ("type", "message")):
            return "error body not in Anthropic's shape"
        return None
    if not isinstance(error.get("message"), str) or not isinstance(error.get("type"), str) or \
            any(k not in error or not isinstance(error[k], str | None) for k in ("param", "code")):
        return "error body not in OpenAI's shape"
    return None


# How each API's stream ends: OpenAI chat and completions, Anthropic, Responses (complete, or
# cut by ``max_output_tokens``).
TERMINAL_EVENTS = (b"data: [DONE]", b"event: message_stop", b"event: response.completed",
                   b"event: response.incomplete")


def success_problem(content_type: str, content: bytes) -> str | None:
    """Why a 2xx answer is really a failure (an error inside, a stream cut short), or None."""
    if content_type.startswith("text/event-stream"):
        events = [line[5:].strip() for line in content.decode(errors="replace").splitlines()
                  if line.startswith("data:")]
        if any(isinstance(e := _json(event.encode()), dict)
               and (e.get("error") or e.get("type") in ("error", "response.failed"))
               for event in events):
            return "stream carries an error event"
        if not any(end in content for end in TERMINAL_EVENTS):
            return "stream ended without its terminal event"
        return None
    body = _json(content)
    if isinstance(body, dict) and body.get("error") and body.get("object") != "response":
        return "2xx with an error inside"
    return None


def _param_value(args: dict[str, Any], content: bytes) -> Any:
    """The value the error's ``param`` names, for the report (top-level field or its head)."""
    body = _json(content)
    error = body.get("error") if isinstance(body, dict) else None
    param = error.get("param") if isinstance(error, dict) else None
    sent = args.get("json")
    if isinstance(param, str) and isinstance(sent, dict):
        return sent.get(param.split(".")[0], "<absent>")
    return None


def error_label(content: bytes) -> str:
    body = _json(content)
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return f"{error.get('code') or error.get('type')} param={error.get('param')}: " \
               f"{str(error.get('message'))[:160]}"
    return content[:160].decode(errors="replace")


# Refusals a bridge makes on purpose: what it cannot translate to chat completions, or state it
# does not keep (README, "API bridges"). Valid by the spec, so each is reported, but only a
# refusal matching one of these fails nothing; every other refusal of a valid request does.
DELIBERATE_GAPS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), why) for pattern, why in (
        (r"not supported( on [\w ]+)? by this gateway|\(prefill\) is not supported|"
         r"cannot contain a 'thinking' block", "a feature the bridge names as unsupported"),
        (r"not stored by this gateway", "no stored responses, conversations or prompts"),
        (r"^Unsupported parameter: ", "a field the bridge does not know (it translates, "
                                      "so it cannot pass unknown fields on)"),
        (r"Missing required parameter: '(model|input)'",
         "Responses: optional in the spec because a stored prompt can supply them"),
        (r"'(tool_choice\.type|include\.\d+)': Input should be",
         "Responses: built-in tools and includes have no chat equivalent"),
        (r"'input\.\d+\.role'", "Responses: item references need stored items"),
        (r"does not match any of the expected tags",
         "Messages: a content block with no chat equivalent (documents, server tool results)"),
        (r"'messages': List should have at least 1 item|"
         r"'messages' must contain at least one message",
         "Messages: an empty conversation (no message, or only empty ones), which Anthropic's "
         "API refuses too"),
        (r"a (base64|url) image source needs", "Messages: an image without its data or URL"),
        (r"'tools\.\d+\.name': String should have at least 1 character",
         "Responses: a function tool without a name (chat's function names need 1-64)"),
        (r"^Invalid 'max_tokens': integer below minimum value",
         "Messages: max_tokens 0 (valid for Anthropic) refused by the chat upstream itself"),
        (r"A user message cannot contain a 'tool_use' block",
         "Messages: a tool_use block in a user turn (the spec's block union allows it; only the "
         "assistant calls tools, and chat has no way to say a user did)"),
        (r"An assistant message cannot contain a '(image|tool_result)' block",
         "Messages: an image or a tool result in an assistant turn (the spec's block union allows "
         "it; chat's assistant messages carry text and tool calls only)"),
        (r"'messages\.\d+\.role': Input should be 'user' or 'assistant'",
         "Messages: a 'system' role inside 'messages' (the spec's enum has it; the bridge "
         "takes the system prompt from 'system' only)"),
    ))


GATEWAY_CODES = frozenset(code.value for code in ErrorCode)

# Valid by the schema, refused by the upstream for what the values say, with a code that is also
# one of the gateway's (so the code alone cannot tell who refused).
UPSTREAM_REFUSALS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), why) for pattern, why in (
        (r"(?s)^Invalid 'tool_choice': no function named .* in 'tools'\.$",
         "tool_choice names a function that is not in tools: the upstream refuses it, as "
         "OpenAI's API does"),
    ))


def deliberate_gap(target: Target, content: bytes) -> str | None:
    """Why a refusal of a valid request is acceptable, or None: the upstream's own answer
    passed through (its code is none of the gateway's), or a bridge's refusal on purpose."""
    body = _json(content)
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return None
    code = error.get("code")
    if target.api is Api.OPENAI and isinstance(code, str) and code not in GATEWAY_CODES:
        return f"the upstream's own answer, passed through ({code})"
    message = error.get("message")
    if isinstance(message, str):
        for pattern, why in UPSTREAM_REFUSALS:
            if pattern.search(message):
                return why
    if target.bridged and isinstance(message, str):
        for pattern, why in DELIBERATE_GAPS:
            if pattern.search(message):
                return why
    return None


@dataclass
class Findings:
    """What a run found, grouped by kind so one cause is reported once, with an example."""

    target: Target
    mode: GenerationMode
    sent: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    problems: dict[str, list[str]] = field(default_factory=dict)
    gaps: dict[str, int] = field(default_factory=dict)  # deliberate refusals, by reason

    def check(self, args: dict[str, Any], status: int, content_type: str,
              content: bytes) -> None:
        self.sent += 1
        self.statuses[status] = self.statuses.get(status, 0) + 1
        problem: str | None
        if self.mode is GenerationMode.POSITIVE:
            if 200 <= status < 300:
                problem = success_problem(content_type, content)
            elif status == 400 and (gap := deliberate_gap(self.target, content)):
                self.gaps[gap] = self.gaps.get(gap, 0) + 1
                problem = None
            else:
                problem = f"valid request refused: {status} {error_label(content)}"
                args = {**args, "param": _param_value(args, content)}
        elif status >= 500:
            problem = f"{status} {error_label(content)}"
        elif status >= 400:
            problem = error_shape_problem(self.target.api, content_type, content)
        else:
            problem = success_problem(content_type, content)
        if problem is not None:
            self.problems.setdefault(problem, []).append(describe(args))

    def report(self) -> str:
        lines = [f"{self.target.name} [{self.mode.value}]: {self.sent} requests, "
                 f"statuses {dict(sorted(self.statuses.items()))}"]
        for gap, count in self.gaps.items():
            lines.append(f"  {count}x refused on purpose: {gap}")
        for problem, examples in self.problems.items():
            lines.append(f"  {len(examples)}x {problem}\n      e.g. {examples[0]}")
        return "\n".join(lines)


Send = Callable[[dict[str, Any]], Awaitable[tuple[int, str, bytes]]]


async def run(target: Target, mode: GenerationMode, cases: Iterable[Case],
              auth: dict[str, str], send: Send, budget_s: float) -> Findings:
    """Send ``cases`` one by one through ``send`` (which returns status, content type and
    body) until they run out or ``budget_s`` is spent, checking every answer."""
    findings = Findings(target, mode)
    deadline = time.monotonic() + budget_s
    for case in cases:
        if time.monotonic() > deadline:
            break
        args = request_args(case, target, auth)
        findings.check(args, *await send(args))
    return findings
