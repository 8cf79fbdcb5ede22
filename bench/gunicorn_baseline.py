"""gunicorn settings for the baselines: exactly respawn's (app/gunicorn_conf.py), minus the
hook that starts respawn's background in each worker."""

from app.gunicorn_conf import *  # noqa: F403  (every setting of the shipped configuration)


def post_worker_init(worker):  # type: ignore[no-untyped-def]
    """The baselines have no background to start."""
    worker.log.info("Worker ready (pid: %s)", worker.pid)
