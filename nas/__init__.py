"""nas: neural-architecture search and ablation orchestration for fast residual CNNs."""

__version__ = "0.1.0"
