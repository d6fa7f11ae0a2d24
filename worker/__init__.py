"""RQ workers that call Serving and store results (issue 4)."""
