"""``dispatch serve``: the OpenAI-compatible HTTP gateway (Starlette on uvicorn).

Modules, one job each: :mod:`app` (routes and middleware), :mod:`auth` (bearer tokens,
loopback rule, body size limits), :mod:`errors` (OpenAI-shaped errors), :mod:`chat`
(``/v1/chat/completions``), :mod:`interactive` (waiting ahead of batch jobs),
:mod:`stream` (SSE), :mod:`models`, :mod:`files`, :mod:`batches`, :mod:`openapi`.
"""
