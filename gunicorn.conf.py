"""gunicorn's settings for `gunicorn 'frontend:create_app()'`, read from the
working directory. Threads, because result pages long-poll the API: a waiting
request holds a thread, not a process."""

import os

# PORT as honcho and most platforms set it; WEB_BIND for another address (0.0.0.0 in a container).
bind = os.environ.get("WEB_BIND") or f"127.0.0.1:{os.environ.get('PORT') or 8000}"
workers = int(os.environ.get("WEB_WORKERS", "2"))
worker_class = "gthread"
threads = int(os.environ.get("WEB_THREADS", "16"))
# Long polls last up to 30 s; uploads of large batches take a while to read.
timeout = 120
graceful_timeout = 30
accesslog = "-"
