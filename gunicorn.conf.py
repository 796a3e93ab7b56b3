"""gunicorn's settings for Marejesho. gunicorn reads this file from the directory it starts
in (or name it with ``-c gunicorn.conf.py``); command-line options still win.

Only logging lives here: the master's own lines (starting, booting and reaping workers) in
the same one-JSON-object-per-line format as the app's (lenders/logs.py), which each worker
sets up again when it builds the app. Access lines are off unless ``--access-logfile`` is
given; they then carry the request's id and show callback tokens and phones masked."""


def _structured_logs(server) -> None:
    from lenders.logs import configure_logging

    configure_logging()


on_starting = _structured_logs  # after gunicorn set up its loggers, before any worker
on_reload = _structured_logs  # a HUP sets gunicorn's loggers up again
