"""The books: what a request cost and where that is written, closed once per request."""
