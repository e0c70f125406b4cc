"""Every worker process checks its limits before it takes a task, however it was started.

``dispatch worker`` compares its limits with those in force before it starts Celery; a
plain ``celery -A workers.celery_app worker`` goes through this module instead (the app
imports it): on ``worker_init`` the process loads its configuration and compares the
fingerprint of every input of a charge (workers/quota/engine.py ``ensure_limits``) with
the one in Redis. A mismatch, an invalid configuration or an unreachable quota store
stops the worker before it consumes anything, with the reason on stderr and exit code 2.

Celery logs and swallows an ``Exception`` raised by a signal handler, so the refusal is
a ``SystemExit``.
"""

from __future__ import annotations

import sys

from celery import signals

EXIT_REFUSED = 2


def limits_problem() -> str | None:
    """Why this process must not run (None: its limits are the ones in force)."""
    from dispatcher.config.loader import ConfigError
    from workers.quota.engine import LimitsMismatch, QuotaUnavailable
    from workers.runtime import get_runtime

    try:
        rt = get_runtime()
        rt.live_quota.ensure_limits()
        rt.sim_quota.ensure_limits()
    except ConfigError as exc:
        return "invalid configuration:\n  " + "\n  ".join(exc.problems)
    except (LimitsMismatch, QuotaUnavailable) as exc:
        return str(exc)
    return None


@signals.worker_init.connect
def check_limits(sender: object = None, **_: object) -> None:
    """Refuse to start (exit 2) when :func:`limits_problem` finds one."""
    problem = limits_problem()
    if problem:
        print(f"dispatch: this worker refuses to start: {problem}", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_REFUSED)
