"""gunicorn's settings for `gunicorn 'frontend:create_app()'`, read from the
working directory. Threads, because result pages long-poll the API: a waiting
request holds a thread, not a process."""

from core.settings import get_settings

_settings = get_settings()
# PORT as honcho and most platforms set it; WEB_BIND for another address (0.0.0.0 in a container).
bind = _settings.web_bind
workers = _settings.web_workers
worker_class = "gthread"
threads = _settings.web_threads
# Long polls last up to 30 s; uploads of large batches take a while to read.
timeout = 120
graceful_timeout = 30
accesslog = "-"
