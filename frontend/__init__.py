"""The Flask web site and JSON API (issue 4)."""
