"""HTTP routes: the OpenAI-compatible ``/v1`` API and the seed's own ``/call``, ``/models``, ``/health``."""
