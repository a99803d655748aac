"""HTTP routes: the OpenAI-compatible ``/v1`` API, the simplified ``/call``, ``/models``, ``/health``, ``/batch``."""
