r"""Which versions are loaded, which one answers, and how they come and go.

TF Serving's version life cycle, kept per model:

    START -> LOADING -> AVAILABLE -> UNLOADING -> END
                     \-> END (with the load error)

- Polling the base path computes the versions the policy wants. A new one is
  loaded and warmed up on a loader thread while the old ones keep serving; it
  is routed to only once AVAILABLE.
- A version the policy no longer wants is unloaded only once every wanted
  version is AVAILABLE (availability first), and only after the requests
  holding it have finished: it is first taken out of routing (UNLOADING), then
  dropped. Wanted again before that (a quick rollback), it is kept.
- A version that fails to load is END with its error and never routed to; the
  policy then picks among the versions that do load, so the previous one keeps
  serving. It is retried only if its files change.
- Deleting the newest folder makes the policy want the previous version
  again: it is loaded, then the deleted one is unloaded (a rollback).

Requests hold a version through `acquire()`; the count of holders is what
makes an unload wait, so no request ever sees its model disappear.
"""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from tensorflow_serving.config.model_server_config_pb2 import ModelServerConfig

from core.contract import version_folders
from serving import accelerated, versions
from serving.batching import BatchScheduler
from serving.config import BatchingOptions
from serving.errors import Code, ConfigError, ServingError, not_found
from serving.metrics import Metrics
from serving.model import Handle, Model, State, Version, VersionStatus
from serving.servable import Servable, first_line

log = logging.getLogger(__name__)


class ModelManager:
    def __init__(self, *, batching: BatchingOptions | None = None,
                 metrics: Metrics | None = None, load_threads: int = 1,
                 base_path_root: Path = Path("/"), accelerated_threads: int | None = None):
        self.metrics = metrics or Metrics()
        #: LiteRT's cores per call for versions with a pixels file; None: SavedModels only.
        self.accelerated_threads = accelerated_threads
        self.base_path_root = base_path_root
        self.scheduler = BatchScheduler(batching, self.metrics.batch) if batching else None
        self._models: dict[str, Model] = {}
        self._lock = threading.Lock()
        self._loader = ThreadPoolExecutor(load_threads, thread_name_prefix="load")
        self._unloaders: list[threading.Thread] = []

    # --- configuration and polling ---------------------------------------

    def apply(self, config: ModelServerConfig) -> None:
        """Serve exactly the models of `config`; unchanged models keep their versions.

        A served model's base path cannot change: its versions would be dropped
        before the new folder's had loaded. Such a config is refused whole.
        """
        wanted = {m.name: m for m in config.model_config_list.config}
        retired: list[Model] = []
        with self._lock:
            for name, model_config in wanted.items():
                model = self._models.get(name)
                if model is not None and model.config.base_path != model_config.base_path:
                    raise ConfigError(
                        f"model {name!r} cannot move from {model.config.base_path} to "
                        f"{model_config.base_path} while served: give it a new name, or restart")
            for name, model_config in wanted.items():
                model = self._models.get(name)
                if model is not None:
                    if model.config != model_config:
                        log.info("Model %s: new policy %s, labels %s", name,
                                 versions.describe(model_config.model_version_policy),
                                 dict(model_config.version_labels) or "none")
                    with model.lock:
                        model.config = model_config
                    continue
                model = Model(model_config, self.base_path_root)
                log.info("Adding model %s from %s (policy %s)", name, model.base_path,
                         versions.describe(model_config.model_version_policy))
                self._models[name] = model
            for name in [n for n in self._models if n not in wanted]:
                log.info("Removing model %s: no longer in the config", name)
                retired.append(self._models.pop(name))
        for model in retired:
            self._retire(model, "model removed from the config")
        self.poll()

    def poll(self) -> None:
        """Look at every model's base path once, loading and unloading as needed."""
        with self._lock:
            models = list(self._models.values())
        for model in models:
            self._reconcile(model)

    def _reconcile(self, model: Model) -> None:
        # Called by the poll thread and after every load and unload.
        with model.reconciling:
            if not model.base_path.is_dir():
                # TF Serving keeps serving what it has when the base path is unreadable.
                log.warning("Model %s: base path %s is not a readable folder", model.name,
                            model.base_path)
                return
            on_disk = version_folders(model.base_path)
            with model.lock:
                if not model.retired:
                    self._converge(model, on_disk)

    def _converge(self, model: Model, on_disk: dict[int, Path]) -> None:
        """Start the loads and unloads that move the model towards its policy."""
        policy = model.config.model_version_policy
        candidates = [number for number, path in on_disk.items()
                      if not self._still_broken(model.versions.get(number), path)]
        wanted = versions.aspired(policy, candidates)
        for number in sorted(wanted, reverse=True):
            current = model.versions.get(number)
            if current is not None and current.state == State.UNLOADING:
                current.state = State.AVAILABLE  # its unload thread sees this and gives up
                self.metrics.routed(model.name, number, current.servable.backend, True)
                log.info("Keeping servable version %s: wanted again before it was unloaded",
                         model.describe(number))
            elif current is None or current.state == State.END:
                self._start_load(model, Version(number, on_disk[number]))
        if not all(model.versions[n].state == State.AVAILABLE for n in wanted):
            return  # availability first: unload nothing until the wanted versions serve
        for version in list(model.versions.values()):
            if version.state == State.AVAILABLE and version.number not in wanted:
                reason = ("its folder was deleted" if version.number not in on_disk
                          else f"policy {versions.describe(policy)}")
                self._start_unload(model, version, reason)

    @staticmethod
    def _still_broken(version: Version | None, path: Path) -> bool:
        return (version is not None and version.failed_files is not None
                and versions.fingerprint(path) == version.failed_files)

    def wait_for_initial_loads(self) -> None:
        """Block until no version is loading, as TF Serving does before opening its port."""
        with self._lock:
            models = list(self._models.values())
        for model in models:
            with model.lock:
                model.lock.wait_for(lambda m=model: not any(
                    v.state in (State.START, State.LOADING) for v in m.versions.values()))

    # --- loading and unloading -------------------------------------------

    def _start_load(self, model: Model, version: Version) -> None:
        model.versions[version.number] = version
        version.state = State.LOADING
        files = versions.fingerprint(version.path)
        self._loader.submit(self._load, model, version, files)

    def _load(self, model: Model, version: Version, files: versions.Fingerprint) -> None:
        name = model.describe(version.number)
        log.info("Loading servable version %s from %s", name, version.path)
        try:
            servable = Servable(version.path)
            if self.accelerated_threads is not None:
                accelerated.attach(servable, self.accelerated_threads)
            replayed = servable.warm_up()
        except ServingError as exc:
            error = exc
        except Exception as exc:  # a broken model must never take the server down
            error = ServingError(Code.UNKNOWN, first_line(exc))
        else:
            error = None
        with model.lock:
            if error is not None:
                version.state, version.error, version.failed_files = State.END, error, files
                self.metrics.loads.labels(model.name, "error").inc()
                log.error("Failed to load servable version %s: %s; it will not be served "
                          "(retried when its files change)", name, error.message)
            elif model.retired:
                version.state = State.END
            else:
                version.servable, version.state = servable, State.AVAILABLE
                self.metrics.loads.labels(model.name, "ok").inc()
                self.metrics.routed(model.name, version.number, servable.backend, True)
                log.info("Successfully loaded servable version %s (%d warm-up requests); "
                         "now serving it with %s", name, replayed, servable.describe_backend())
            model.lock.notify_all()
        self._reconcile(model)

    def _start_unload(self, model: Model, version: Version, reason: str) -> None:
        version.state = State.UNLOADING
        self.metrics.routed(model.name, version.number, version.servable.backend, False)
        log.info("Unloading servable version %s: %s; waiting for %d in-flight requests",
                 model.describe(version.number), reason, version.in_flight)
        thread = threading.Thread(target=self._unload, args=(model, version),
                                  name=f"unload-{model.name}-{version.number}")
        self._unloaders = [t for t in self._unloaders if t.is_alive()] + [thread]
        thread.start()

    def _unload(self, model: Model, version: Version) -> None:
        with model.lock:
            model.lock.wait_for(
                lambda: version.in_flight == 0 or version.state != State.UNLOADING)
            if version.state != State.UNLOADING:
                return  # wanted again meanwhile: _converge put it back to AVAILABLE
            for queue in version.queues.values():
                queue.close()
            version.queues.clear()
            version.servable = None
            version.state = State.END
        gc.collect()
        log.info("Done unloading servable version %s", model.describe(version.number))
        self._reconcile(model)

    def _retire(self, model: Model, reason: str) -> None:
        with model.lock:
            model.retired = True
            for version in model.versions.values():
                if version.state == State.AVAILABLE:
                    self._start_unload(model, version, reason)

    def stop(self) -> None:
        """Unload everything once in-flight requests are done (SIGTERM)."""
        with self._lock:
            models = list(self._models.values())
        for model in models:
            self._retire(model, "the server is stopping")
        self._loader.shutdown(wait=True, cancel_futures=True)
        for thread in self._unloaders:
            thread.join()
        if self.scheduler is not None:
            self.scheduler.stop()

    # --- requests --------------------------------------------------------

    def _model(self, name: str, request: str) -> Model:
        with self._lock:
            model = self._models.get(name)
        if model is None:
            raise not_found(f"Servable not found for request: {request}")
        return model

    @contextmanager
    def acquire(self, name: str, version: int | None = None,
                label: str | None = None) -> Iterator[Handle]:
        """The version a request names (or the newest available), held until exit."""
        model = self._model(name, f"Latest({name})" if version is None else
                            f"Specific({name}, {version})")
        with model.lock:
            if label is not None:
                version = model.labelled(label)
            if version is None:
                available = [n for n, v in model.versions.items() if v.state == State.AVAILABLE]
                if not available:
                    raise not_found(f"Servable not found for request: Latest({name})")
                version = max(available)
            held = model.versions.get(version)
            if held is None or held.state != State.AVAILABLE:
                raise not_found(f"Servable not found for request: Specific({name}, {version})")
            held.in_flight += 1
        try:
            yield Handle(self.scheduler, model, held)
        finally:
            with model.lock:
                held.in_flight -= 1
                if held.in_flight == 0:
                    model.lock.notify_all()

    def knows(self, name: str) -> bool:
        with self._lock:
            return name in self._models

    def status(self, name: str, version: int | None = None,
               label: str | None = None) -> list[VersionStatus]:
        with self._lock:
            model = self._models.get(name)
        if model is None:
            raise not_found(f"Could not find any versions of model {name}")
        with model.lock:
            if label is not None:
                version = model.labelled(label)
            if version is not None:
                found = model.versions.get(version)
                if found is None:
                    raise not_found(f"Could not find version {version} of model {name}")
                chosen = [found]
            else:
                chosen = [model.versions[n] for n in sorted(model.versions, reverse=True)]
            if not chosen:
                raise not_found(f"Could not find any versions of model {name}")
            return [VersionStatus(v.number, v.state, v.error) for v in chosen]
