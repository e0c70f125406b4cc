"""A local OpenAI-compatible provider simulator that enforces configured limits."""
