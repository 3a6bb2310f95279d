"""unified-anomaly: UniADC, UniAD and CADA as one reproducible Kedro + MLflow workflow."""

__version__ = "0.1.0"
