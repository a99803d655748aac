"""The dashboard: a page served by the gateway, its login sessions, its read-only data."""
