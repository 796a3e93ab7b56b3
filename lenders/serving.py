"""gunicorn's settings for Marejesho (``gunicorn -c python:lenders.serving 'app:create_app()'``):
the Procfile, the systemd unit and the drills use it, so they serve alike. Command-line
options (``--workers``, ``--bind``) still override these."""

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
