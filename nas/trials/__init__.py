"""A trial's life: its plan, its run inside a Ray worker, its artefacts, its one recorder."""
