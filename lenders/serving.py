"""gunicorn's settings for Marejesho (``gunicorn -c python:lenders.serving 'app:create_app()'``):
the Procfile, the systemd unit and the drills use it, so they serve alike. Command-line
options (``--workers``, ``--bind``) still override these.

gunicorn's own lines, the master's from the first one on, are written in the same
one-JSON-object-per-line format as the app's (lenders/logs.py), which each worker sets up
again when it builds the app; access lines carry the request's id and show callback tokens
and phones masked."""

from gunicorn.glogging import Logger


class StructuredLogger(Logger):
    """gunicorn's logger, its handlers (and the files they write to) kept, in our format;
    set up again on every reload, as gunicorn's own is."""

    def setup(self, cfg) -> None:
        super().setup(cfg)
        from lenders.logs import configure_logging

        configure_logging()


logger_class = StructuredLogger
workers = 2
bind = "127.0.0.1:8000"
graceful_timeout = 20
accesslog = "-"


def post_worker_init(worker) -> None:
    """Start this worker's job thread at once, not at its first request: a process that
    gets no traffic must still replay the confirmation journal (lenders/worker.py)."""
    jobs = getattr(worker.wsgi, "extensions", {}).get("marejesho.jobs")
    if jobs is not None:
        jobs.wake()
