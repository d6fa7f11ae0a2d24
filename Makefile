# Everything a fresh machine needs, from the project's own files.
#   make run    the whole system under honcho (Procfile): Serving, workers, the site
#               on PORT (8000), and Redis if none answers on REDIS_URL; trains a first
#               model version if there is none
#   make test   lint and run every test
#   make bench  print the trainer, serving, site and loop benchmarks (Redis DBs 11, 13 flushed)
#   make secrets  the random secrets docker-compose.yml reads from secrets/ (missing ones only)

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SHARED_DIR ?= ../shared
KERAS_HOME ?= $(HOME)/.keras
WEIGHTS := mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5
# dataset/ once it holds class folders; until then the reference fruit photos.
DATASET_DIR ?= $(if $(wildcard dataset/*/),dataset,$(SHARED_DIR)/datasets/fruits)
# Where the trainer writes; serving/models.config serves /models/classifier,
# i.e. ./models/classifier: change both together.
MODEL_BASE_PATH ?= models
MODEL_NAME ?= classifier
# TF Serving's protos, without the `tensorflow` package it would pull in.
TF_SERVING_API := tensorflow-serving-api==2.21.0

export SHARED_DIR KERAS_HOME DATASET_DIR MODEL_BASE_PATH MODEL_NAME

.PHONY: setup weights browser nginx secrets run train serve web worker migrate admin test lint bench protos clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[web,ml,local,dev]'
	$(BIN)/pip install --quiet --no-deps '$(TF_SERVING_API)'
	touch $@

# Keras downloads the ImageNet weights into its cache on first use; machines
# without internet get them from $(SHARED_DIR)/weights instead.
weights:
	@if [ ! -f "$(KERAS_HOME)/models/$(WEIGHTS)" ] && [ -f "$(SHARED_DIR)/weights/$(WEIGHTS)" ]; then \
		mkdir -p "$(KERAS_HOME)/models" && \
		cp "$(SHARED_DIR)/weights/$(WEIGHTS)" "$(KERAS_HOME)/models/" && \
		echo "copied ImageNet weights into $(KERAS_HOME)/models/"; \
	fi

# The browser tests drive Debian's chromium (never a downloaded browser);
# installed here when missing and apt-get is at hand, else they are skipped
# (REQUIRE_BROWSER=1, as CI sets, makes that, and a missing nginx, a failure).
browser:
	@if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		echo "installing Debian's chromium for the browser tests"; \
		apt-get install -y --no-install-recommends chromium >/dev/null 2>&1 || \
		{ apt-get update >/dev/null && apt-get install -y --no-install-recommends chromium >/dev/null; }; \
	fi
	@[ -x /usr/bin/chromium ] || echo "no /usr/bin/chromium: the browser tests will be skipped"

# The proxy tests (tests/test_proxy.py) run Debian's nginx in front of gunicorn,
# installed here the same way. The package starts a system nginx on port 80
# where the init system lets it: stopped (and not started at boot) at once,
# since the tests start their own.
nginx:
	@if [ ! -x /usr/sbin/nginx ] && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		echo "installing Debian's nginx for the proxy tests"; \
		apt-get install -y --no-install-recommends nginx >/dev/null 2>&1 || \
		{ apt-get update >/dev/null && apt-get install -y --no-install-recommends nginx >/dev/null; }; \
		if [ -s /run/nginx.pid ]; then /usr/sbin/nginx -s quit; fi; \
		if [ -d /run/systemd/system ]; then systemctl disable --now nginx >/dev/null 2>&1; fi; \
	fi
	@[ -x /usr/sbin/nginx ] || echo "no /usr/sbin/nginx: the proxy tests will be skipped"

# docker-compose.yml's secrets, random and URL-safe. The folder keeps other users
# of this host out; the files are world-readable because each container reads its
# bind-mounted copy as its own non-root user.
SECRET_FILES := secrets/secret_key secrets/postgres_password secrets/redis_password secrets/metrics_token secrets/grafana_admin_password

secrets: $(SECRET_FILES)

$(SECRET_FILES):
	@mkdir -p secrets && chmod 700 secrets
	@$(PYTHON) -c 'import secrets; print(secrets.token_urlsafe(48))' > $@ && chmod 644 $@
	@echo "made $@"

# Everything in one terminal (core/launch.py, Procfile); Ctrl-C stops it all.
run: setup weights migrate
	@if ls -d "$(MODEL_BASE_PATH)/$(MODEL_NAME)"/[0-9]* >/dev/null 2>&1; then \
		echo "$(MODEL_NAME) has versions in $(MODEL_BASE_PATH)/$(MODEL_NAME); 'make train' adds one"; \
	else $(MAKE) --no-print-directory train; fi
	@$(BIN)/python -m core.launch

# The embedded TF-Serving-compatible server, on the very config files the
# official container reads (docker-compose.yml). Versions dropped into
# models/classifier/ are picked up within seconds; Ctrl-C drains and stops it.
serve: setup
	$(BIN)/python -m core.launch serving

# The site alone (gunicorn.conf.py: threads for long polls) on PORT, or WEB_BIND.
web: setup migrate
	$(BIN)/gunicorn 'frontend:create_app()'

# One RQ worker; start several for more throughput.
worker: setup
	$(BIN)/python -m worker

# Alembic migrations up to date (SQLite under var/ unless DATABASE_URL says otherwise).
migrate: setup
	$(BIN)/flask --app frontend db upgrade

# An administrator for /admin; the password is asked for.
admin: setup migrate
	$(BIN)/flask --app frontend create-admin "$(NAME)"

train: setup weights
	$(BIN)/python -m trainer stats "$(DATASET_DIR)"
	$(BIN)/python -m trainer train --data "$(DATASET_DIR)" --out "$(MODEL_BASE_PATH)" --name "$(MODEL_NAME)" $(TRAIN_ARGS)

lint: setup
	$(BIN)/ruff check .

test: setup weights browser nginx lint
	$(BIN)/python -m pytest

bench: setup weights
	$(BIN)/python bench/train_speed.py
	$(BIN)/python bench/recipes.py
	$(BIN)/python bench/shift.py
	@ls -d "$(MODEL_BASE_PATH)/$(MODEL_NAME)"/[0-9]* >/dev/null 2>&1 || $(MAKE) --no-print-directory train
	$(BIN)/python bench/serving_speed.py --model-dir "$(MODEL_BASE_PATH)/$(MODEL_NAME)"
	$(BIN)/python bench/web_speed.py --model-dir "$(MODEL_BASE_PATH)/$(MODEL_NAME)"
	$(BIN)/python bench/feedback_loop.py

# serving/proto/*_pb2.py are committed; regenerate them after editing the .proto.
protos: setup
	$(BIN)/python -m grpc_tools.protoc -I serving/proto --python_out=serving/proto \
		--pyi_out=serving/proto serving/proto/serving_options.proto

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
