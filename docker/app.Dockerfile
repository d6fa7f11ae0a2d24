# syntax=docker/dockerfile:1
# The site and the workers: one image, three uses in docker-compose.yml
# (gunicorn, `python -m worker`, and the one-off `flask --app frontend db upgrade`).
#
# Only the `web` extra is installed. These processes reach the model through
# Serving's REST API (core/serving_client.py needs only requests) and never import
# TensorFlow, which would add about 2 GB and a second copy of the model's RAM.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The same uid runs the site (which writes uploads, mode 0600), the workers
# (which read them) and the trainer (trainer/Dockerfile). A new named volume
# takes the owner of the folder it is mounted on, so the site can write
# /data/uploads and promote versions in /models.
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/app app \
    && mkdir -p /data/uploads /models \
    && chown app:app /data/uploads /models

WORKDIR /src
# Dependencies first, in a layer of their own that only pyproject.toml
# invalidates: empty package folders satisfy setuptools' package list.
COPY pyproject.toml ./
RUN mkdir core frontend serving trainer worker \
    && pip install --no-cache-dir '.[web]'
# Then the code, without touching the dependencies. setuptools lists all five
# packages, so trainer/ and serving/ come along as source only: their
# TensorFlow lives in the `ml` extra, which this image does not install.
COPY core core
COPY frontend frontend
COPY serving serving
COPY trainer trainer
COPY worker worker
RUN pip install --no-cache-dir --no-deps --force-reinstall . \
    && rm -rf build ./*.egg-info

# gunicorn.conf.py is read from the working directory; the packages come from
# site-packages, not from a checkout.
WORKDIR /app
COPY gunicorn.conf.py ./
COPY docker/healthcheck.py ./

USER app
EXPOSE 8000
CMD ["gunicorn", "--config", "/app/gunicorn.conf.py", "frontend:create_app()"]
