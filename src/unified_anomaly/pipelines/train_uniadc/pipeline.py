"""train_uniadc: ``ingested_images`` + ``synthetic_images`` → ``uniadc_model`` (+ its training history)."""

from kedro.pipeline import Node, Pipeline

from unified_anomaly.pipelines.train_uniadc.nodes import train_uniadc


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                train_uniadc,
                inputs=["ingested_images", "synthetic_images", "params:train_uniadc"],
                outputs=["uniadc_model", "uniadc_training_history"],
                name="train_uniadc",
            ),
        ]
    )
