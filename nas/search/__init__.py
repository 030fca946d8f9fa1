"""The search: the Optuna controller, the confirm phase, and `nas launch` tying them together."""
