"""llm-dispatch: the front (job model, configuration, routing, CLI)."""
