"""python -m serving: the embedded TF-Serving-compatible model server.

Flags are tensorflow_model_server's, so the same command line works on both:

    python -m serving --rest_api_port=8501 --model_config_file=serving/models.config \
        --enable_batching --batching_parameters_file=serving/batching.config \
        --monitoring_config_file=serving/monitoring.config
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from serving.errors import ConfigError
from serving.options import Options

DEFAULTS = Options()


def flag_bool(text: str) -> bool:
    """TF Serving's flags take --enable_batching, --enable_batching=true or =false."""
    value = text.lower()
    if value in ("1", "true", "yes"):
        return True
    if value in ("0", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, not {text!r}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m serving", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--rest_api_port", type=int, default=DEFAULTS.rest_api_port,
        help="HTTP port (0 picks a free one)")
    add("--rest_api_host", default=DEFAULTS.rest_api_host,
        help="address to bind (not a TF Serving flag)")
    add("--rest_api_num_threads", type=int, default=DEFAULTS.rest_api_num_threads,
        help="HTTP worker threads")
    add("--model_name", default=DEFAULTS.model_name,
        help="the model's name, with --model_base_path")
    add("--model_base_path", help="folder holding the model's numbered versions")
    add("--model_config_file", type=Path, help="ModelServerConfig in protobuf text format")
    add("--model_config_file_poll_wait_seconds", type=float,
        default=DEFAULTS.model_config_file_poll_wait_seconds,
        help="re-read --model_config_file this often and apply changes (0: never)")
    add("--file_system_poll_wait_seconds", type=float,
        default=DEFAULTS.file_system_poll_wait_seconds,
        help="look for new or deleted versions this often")
    add("--enable_batching", type=flag_bool, nargs="?", const=True,
        default=DEFAULTS.enable_batching,
        help="merge concurrent requests into one model call")
    add("--batching_parameters_file", type=Path, help="BatchingParameters in text format")
    add("--monitoring_config_file", type=Path,
        help="MonitoringConfig in text format (enables Prometheus metrics)")
    add("--base_path_root", type=Path, default=DEFAULTS.base_path_root,
        help="find the config's absolute base paths under this folder, as a container "
             "finds them on its volume (not a TF Serving flag)")
    add("--max_request_body_bytes", type=int, default=DEFAULTS.max_request_body_bytes,
        help="larger bodies get HTTP 413 (not a TF Serving flag)")
    add("--accelerated_backend", choices=("litert", "none"), default=DEFAULTS.accelerated_backend,
        help="run a version's pixels.tflite with LiteRT where it has one, or always the "
             "SavedModel (not a TF Serving flag)")
    add("--accelerated_threads", type=int, default=DEFAULTS.accelerated_threads,
        help="cores for each LiteRT call, 0 for all (not a TF Serving flag)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from serving.server import run  # imports TensorFlow: after --help

    try:
        run(Options(**vars(args)))
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # e.g. the port is taken
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
