"""The embedded model server: TF Serving's REST API, its config files and its
version life cycle, for machines without the official container.

Only this package and trainer/ import TensorFlow; what the server shares with
the rest of the system (the model contract, the REST client) lives in core/.
"""
