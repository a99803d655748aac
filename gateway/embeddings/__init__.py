"""The embeddings path: batching inputs into shared upstream calls."""
