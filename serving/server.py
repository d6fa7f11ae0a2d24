"""The embedded model server process: config, polling, HTTP, clean shutdown.

`run(options)` is what `python -m serving` does. SIGTERM (and Ctrl-C) stop
accepting connections, let in-flight requests finish (up to
`drain_seconds`), then unload every version and exit 0.
"""

from __future__ import annotations

import logging
import signal
import threading

from cheroot import wsgi
from tensorflow_serving.config.model_server_config_pb2 import ModelServerConfig

from serving import config as config_files
from serving.errors import ConfigError
from serving.manager import ModelManager
from serving.options import Options
from serving.rest import create_app

log = logging.getLogger("serving")


def model_server_config(options: Options) -> ModelServerConfig:
    if options.model_config_file is not None:
        if options.model_base_path:
            raise ConfigError("give --model_config_file or --model_base_path, not both")
        return config_files.read_model_server_config(options.model_config_file)
    if not options.model_base_path:
        raise ConfigError("give --model_base_path (with --model_name) or --model_config_file")
    return config_files.single_model_config(options.model_name, options.model_base_path)


class ModelServer:
    """Everything but the process (signal handling is run()'s)."""

    def __init__(self, options: Options):
        self.options = options
        self.config = model_server_config(options)
        batching = (config_files.read_batching_parameters(options.batching_parameters_file)
                    if options.enable_batching else None)
        metrics_path = config_files.read_monitoring_config(options.monitoring_config_file)
        accelerated = (options.accelerated_threads
                       if options.accelerated_backend != "none" else None)
        self.manager = ModelManager(batching=batching, base_path_root=options.base_path_root,
                                    accelerated_threads=accelerated)
        if batching:
            log.info("Batching: %s", batching)
        self.app = create_app(self.manager, metrics_path=metrics_path,
                              max_body_bytes=options.max_request_body_bytes)
        self.http = wsgi.Server((options.rest_api_host, options.rest_api_port), self.app,
                                numthreads=options.rest_api_num_threads,
                                request_queue_size=64,
                                shutdown_timeout=options.drain_seconds)
        # No limit in cheroot (its 413 is plain text): Flask's MAX_CONTENT_LENGTH
        # refuses oversized bodies, in JSON, before reading them.
        self.http.max_request_body_size = 0
        self._stopped = threading.Event()
        self._pollers: list[threading.Thread] = []

    @property
    def port(self) -> int:
        return self.http.bind_addr[1]

    def serve(self) -> None:
        """Load the first versions, then answer requests until stop().

        As TF Serving does, the port opens only once the versions found at
        start-up have loaded (or failed to), so a client never sees a server
        that answers 404 because it is still loading.
        """
        self.manager.apply(self.config)
        self.manager.wait_for_initial_loads()
        self._every(self.options.file_system_poll_wait_seconds, self.manager.poll, "fs-poll")
        if self.options.model_config_file is not None:
            self._every(self.options.model_config_file_poll_wait_seconds, self._reload_config,
                        "config-poll")
        self.http.prepare()
        log.info("Serving the REST API at http://%s:%d", self.options.rest_api_host, self.port)
        self.http.serve()
        for poller in self._pollers:  # no config reload may race the unloads
            poller.join()
        self.manager.stop()
        log.info("Stopped")

    def stop(self) -> None:
        """Stop accepting, drain in-flight requests; serve() then unloads and returns."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        log.info("Shutting down: finishing in-flight requests")
        self.http.stop()

    def _every(self, seconds: float, action, name: str) -> None:
        # TF Serving: 0 polls once (already done by apply), negative never.
        if seconds <= 0:
            return
        def loop() -> None:
            while not self._stopped.wait(seconds):
                try:
                    action()
                except Exception:  # a poll must never kill the poller
                    log.exception("%s failed", name)
        thread = threading.Thread(target=loop, name=name, daemon=True)
        self._pollers.append(thread)
        thread.start()

    def _reload_config(self) -> None:
        try:
            config = config_files.read_model_server_config(self.options.model_config_file)
            if config == self.config:
                return
            log.info("%s changed: applying it", self.options.model_config_file)
            self.manager.apply(config)
        except ConfigError as error:
            log.error("Keeping the current config: %s", error)
            return
        self.config = config


def run(options: Options) -> None:
    server = ModelServer(options)

    def on_signal(signum: int, _frame) -> None:
        log.info("Received %s", signal.Signals(signum).name)
        threading.Thread(target=server.stop, name="stop").start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.serve()
