"""HTTP routes: the client APIs (OpenAI's, Anthropic's Messages, the simplified ``/call``),
``/models``, ``/health``, ``/batch``, and the admin API."""
