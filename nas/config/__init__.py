"""Configuration: one validator, YAML loading, the search space and the experiment spec."""
