"""Training: the recipe, the epoch loop, evaluation, US-Nets."""
