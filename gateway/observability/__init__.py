"""Metrics, tracing, health, GC watch, recent traffic and the access log: declared once."""
