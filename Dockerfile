# llm-dispatch: one image for every role (router, provider workers, beat, Flower).
#   docker compose build    (see docs/operations.md)
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY dispatcher ./dispatcher
COPY workers ./workers
# Install, then fail the build if any Lua script the code loads at run time did not make
# it into the installed package (package data is easy to drop; a worker would only
# find out at its first job).
RUN pip install . \
 && site="$(python -I -c 'import pathlib, workers; print(pathlib.Path(workers.__file__).parent)')" \
 && for f in $(cd workers && find . -name '*.lua' | cut -c3-); do \
      test -f "$site/$f" || { echo "workers/$f is missing from the installed package (pyproject.toml package-data)"; exit 1; }; \
    done

WORKDIR /app
COPY config ./config
RUN rm -rf /src && useradd --create-home --uid 10001 dispatch
USER dispatch
ENV DISPATCH_CONFIG=/app/config \
    DISPATCH_STATE_DIR=/home/dispatch/.dispatch

ENTRYPOINT ["dispatch"]
CMD ["--help"]
