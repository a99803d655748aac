"""Edges for the APIs the upstream does not speak: each module translates one API's request to
an OpenAI chat completions payload and the chat answer (JSON or stream chunks) back. Pure: no
I/O, no Starlette, no globals; the routes that use them live with the core."""
