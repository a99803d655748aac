"""An OpenAI-compatible LLM gateway in front of HolySheep AI, served by BentoML."""
