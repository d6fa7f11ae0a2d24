"""RQ workers: classify queued uploads through Serving and write the results."""
