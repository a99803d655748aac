"""BentoML's tracer, read from its internal container (checked, since it is not public API)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.server.seams import mismatch

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer


def configured_tracer() -> Tracer | None:
    """BentoML's tracer when its tracing exports and samples; call it inside a worker."""
    from bentoml._internal.configuration.containers import BentoMLContainer

    if not all(hasattr(BentoMLContainer, name) for name in ("tracing", "tracer_provider")):
        raise mismatch("tracing", "BentoMLContainer has no tracing/tracer_provider")
    tracing = BentoMLContainer.tracing
    if not tracing.exporter_type.get() or not tracing.sample_rate.get():
        return None
    return BentoMLContainer.tracer_provider.get().get_tracer("llm-gateway")
