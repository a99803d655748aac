"""The plan stage: a validated request turned into what the later stages need."""
