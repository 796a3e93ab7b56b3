"""gunicorn's settings for Marejesho. gunicorn reads this file from the directory it starts
in (or name it with ``-c gunicorn.conf.py``); command-line options still win.

Only logging lives here: gunicorn's own lines, the master's from the first one on, in the
same one-JSON-object-per-line format as the app's (lenders/logs.py), which each worker sets
up again when it builds the app. Access lines are off unless ``--access-logfile`` is given;
they then carry the request's id and show callback tokens and phones masked."""

from gunicorn.glogging import Logger


class StructuredLogger(Logger):
    """gunicorn's logger, its handlers (and the files they write to) kept, in our format;
    set up again on every reload, as gunicorn's own is."""

    def setup(self, cfg) -> None:
        super().setup(cfg)
        try:
            from lenders.logs import configure_logging
        except ImportError:  # gunicorn serves something else from here (bench's floor app)
            return
        configure_logging()


logger_class = StructuredLogger
