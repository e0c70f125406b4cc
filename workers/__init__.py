"""llm-dispatch: the provider side (quota, provider clients, Celery tasks)."""
