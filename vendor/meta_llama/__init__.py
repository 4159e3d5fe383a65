"""Meta's multi-token-prediction LLaMA layout (facebook/multi-token-prediction), our own trainable implementation."""
