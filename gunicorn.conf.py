"""gunicorn's settings for `gunicorn 'frontend:create_app()'`, read from the
working directory. Threads, because result pages long-poll the API: a waiting
request holds a thread, not a process.

A thread is also held while a request is read, for as long as its client takes:
in production nginx reads requests whole before passing them on
(docker/nginx/default.conf.template), so only the proxy may reach this port.
gunicorn's own guards on a request's head stand at their defaults (a 4094-byte
request line, 100 header fields of 8190 bytes each: 400 beyond).
"""

from core.settings import SettingsError, get_settings

try:
    _settings = get_settings()
except SettingsError as exc:
    raise SystemExit(f"gunicorn: refusing to start: {exc}") from None
# PORT as honcho and most platforms set it; WEB_BIND for another address (0.0.0.0 in a container).
bind = _settings.web_bind
workers = _settings.web_workers
worker_class = "gthread"
threads = _settings.web_threads
# Long polls last up to 30 s; uploads of large batches take a while to read.
timeout = 120
graceful_timeout = 30
accesslog = "-"


def on_starting(server):
    """The addresses as gunicorn will really bind them (a --bind on the command line
    wins over `bind` above), checked before it listens on any."""
    for address in server.cfg.address:
        if isinstance(address, tuple):  # a unix socket (a str) is local to the machine
            try:
                _settings.check_site_host(address[0])
            except SettingsError as exc:
                raise SystemExit(f"gunicorn: refusing to start: {exc}") from None
