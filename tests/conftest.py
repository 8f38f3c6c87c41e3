"""Suite-wide fixtures: the tiny trained models of `tests.tiny_models` (trained lazily, once per session)."""

pytest_plugins = ["tests.tiny_models"]
