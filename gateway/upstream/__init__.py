"""The upstream stage: the provider client, its transports, SSE and failure kinds."""
