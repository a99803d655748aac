"""Between uvicorn/BentoML and the edges: intake, dispatch, every patched third-party internal."""
