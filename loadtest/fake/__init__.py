"""The fake OpenAI-compatible provider (see ``loadtest.fake_provider`` for its rules)."""

from .app import (
    FAULT_KINDS,
    MODELS,
    Endpoint,
    FakeConfig,
    FakeProvider,
    Fault,
    create_app,
    fake_vector,
)
from .wire import Dropped

__all__ = ["FAULT_KINDS", "MODELS", "Dropped", "Endpoint", "FakeConfig", "FakeProvider", "Fault",
    "create_app", "fake_vector"]
