"""The article's style of serving, which bench/serving_speed.py measures against:
Flask, the model loaded by Keras, one `predict` call per request, under gunicorn.

    MODEL_DIR=models/classifier/1 .venv/bin/gunicorn -w 2 -b 127.0.0.1:8000 \
        --chdir bench naive_server:app
"""

import base64
import os

import keras
import tensorflow as tf
from flask import Flask, request

app = Flask(__name__)
model = keras.Sequential([keras.Input((), dtype="string"),
                          keras.layers.TFSMLayer(os.environ["MODEL_DIR"],
                                                         call_endpoint="serving_default")])


@app.post("/v1/models/<name>:predict")
def predict(name: str):
    images = tf.constant([base64.b64decode(i["b64"]) for i in request.json["instances"]])
    scores = model.predict(images, verbose=0)["scores"]
    return {"predictions": [{"scores": row.tolist()} for row in scores]}
