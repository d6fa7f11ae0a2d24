"""The trainer's fruit model behind the embedded server: image bytes in, classes out."""

from __future__ import annotations

import base64
import io
import threading
from collections.abc import Iterator

import numpy as np
import pytest
import requests
from PIL import Image

from core.serving_client import ServingClient, ServingRequestError
from core.settings import get_settings
from tests.factories import encoded, wait_until
from tests.serving_process import ServingProcess, available_versions
from trainer import export

MODEL = "fruits"


@pytest.fixture(scope="module", params=["litert", "none"])
def server(request, fruit_model, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[ServingProcess]:
    """The fruit model's version 1, run by LiteRT from its pixels.tflite, and
    by its SavedModel (--accelerated_backend=none): every test runs against both."""
    folder = tmp_path_factory.mktemp(f"fruit_server_{request.param}")
    batching = folder / "batching.config"
    # A long timeout, so that concurrent requests surely share a model call.
    batching.write_text("max_batch_size { value: 32 }\nbatch_timeout_micros { value: 300000 }\n"
                        "num_batch_threads { value: 1 }\n")
    process = ServingProcess(
        [f"--model_name={MODEL}", f"--model_base_path={fruit_model.version_dir.parent}",
         "--enable_batching", f"--batching_parameters_file={batching}",
         "--monitoring_config_file=serving/monitoring.config",
         f"--accelerated_backend={request.param}"], folder / "server.log").start()
    client = process.client(MODEL)
    wait_until(lambda: available_versions(client) == {fruit_model.version}, 120, "the model")
    yield process
    assert process.stop() == 0


@pytest.fixture(scope="module")
def test_photos(fruit_model) -> tuple[list[bytes], list[str]]:
    lines = (fruit_model.report_dir / "test.txt").read_text().splitlines()
    pairs = [line.split("\t") for line in lines]
    fruits = get_settings().fruits_dir
    return [(fruits / path).read_bytes() for _, path in pairs], [label for label, _ in pairs]


def b64(data: bytes) -> dict[str, str]:
    return {"b64": base64.b64encode(data).decode()}


def predict(server: ServingProcess, body: dict) -> requests.Response:
    return requests.post(f"{server.url}/v1/models/{MODEL}:predict", json=body, timeout=60)


def test_version_is_warmed_up_before_it_is_served(server: ServingProcess):
    assert f"Successfully loaded servable version {{name: {MODEL} version: 1}} " \
           "(2 warm-up requests)" in server.log()


def test_the_log_and_the_metadata_name_the_backend(server: ServingProcess):
    accelerated = "--accelerated_backend=litert" in server.args
    metadata = ServingClient(server.url, MODEL).metadata()["metadata"]
    assert ("backend" in metadata) == accelerated
    assert ("now serving it with litert (pixels.tflite" in server.log()) == accelerated
    assert ("now serving it with its SavedModel" in server.log()) != accelerated


def test_metadata_describes_the_image_signature(server: ServingProcess):
    signature = ServingClient(server.url, MODEL).metadata()["metadata"]["signature_def"][
        "signature_def"]["serving_default"]
    assert signature["inputs"]["image_bytes"]["dtype"] == "DT_STRING"
    assert signature["inputs"]["image_bytes"]["tensor_shape"]["dim"] == [
        {"size": "-1", "name": ""}]
    assert set(signature["outputs"]) == {"classes", "scores"}


def test_served_scores_match_the_saved_model_in_process(server, fruit_model, test_photos):
    images, labels = test_photos
    served = ServingClient(server.url, MODEL).classify(images)
    expected, names = export.predict_bytes(fruit_model.version_dir, images)
    assert names == fruit_model.metrics["class_names"]
    scores = np.array([[p.scores[name] for name in names] for p in served])
    np.testing.assert_allclose(scores, expected, atol=1e-4)
    accuracy = np.mean([p.label == label for p, label in zip(served, labels, strict=True)])
    assert accuracy >= 0.95


def test_row_and_columnar_forms_give_the_same_answer(server, test_photos):
    image = b64(test_photos[0][0])
    rows = predict(server, {"instances": [{"image_bytes": image}]}).json()["predictions"]
    columns = predict(server, {"inputs": {"image_bytes": [image]}}).json()["outputs"]
    assert rows[0]["scores"] == columns["scores"][0]
    assert rows[0]["classes"] == columns["classes"][0] == [
        "apple", "banana", "kiwi", "orange", "pear"]


def test_png_and_webp_uploads_are_decoded_by_the_model(server, test_photos):
    photo = Image.open(io.BytesIO(test_photos[0][0]))
    answers = []
    for fmt in ("PNG", "WEBP", "JPEG"):
        answers.append(ServingClient(server.url, MODEL).classify([encoded(photo, fmt)])[0].label)
    assert len(set(answers)) == 1


@pytest.mark.parametrize(("instance", "message"), [
    ({"b64": "not base64!"}, "Unable to base64 decode"),
    (b64(b"GIF89a but not really an image"), "Invalid GIF data"),
    (b64(b""), "Input is empty. (at node map/while/decode_image/DecodeImage)"),
    ({"b64": 42}, '{"b64": "<base64>"}'),
    (17, "takes strings"),
])
def test_bad_image_inputs_get_400(server: ServingProcess, instance, message: str):
    response = predict(server, {"instances": [instance]})
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]


def batch_size_totals(server: ServingProcess) -> dict[str, float]:
    """The processed_batch_size histogram's _sum (examples) and _count (model calls)."""
    metrics = requests.get(f"{server.url}/monitoring/prometheus/metrics", timeout=10).text
    prefix = ":tensorflow:serving:batching_session:processed_batch_size_"
    return {line[len(prefix):].split("{")[0]: float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith(prefix) and not line.startswith(prefix + "bucket")}


def test_a_bad_image_fails_alone_when_batched_with_good_ones(server, test_photos):
    images = test_photos[0][:6]
    results: dict[int, int] = {}
    before = batch_size_totals(server)

    def send(index: int, data: bytes) -> None:
        results[index] = predict(server, {"instances": [b64(data)]}).status_code

    threads = [threading.Thread(target=send, args=(i, data))
               for i, data in enumerate([*images, b"definitely not a photo"])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == {**{i: 200 for i in range(len(images))}, len(images): 400}
    after = batch_size_totals(server)
    examples, calls = after["sum"] - before["sum"], after["count"] - before["count"]
    assert examples == len(images) + 1
    assert calls < examples  # the requests shared model calls


def test_client_reports_errors_with_the_servers_message(server: ServingProcess):
    with pytest.raises(ServingRequestError) as raised:
        ServingClient(server.url, MODEL).classify([b"nope"])
    assert raised.value.status_code == 400
    assert not raised.value.retryable
