"""train_uniad: ``ingested_images`` → cached frozen features → trained UniAD with its threshold → ``uniad_model``."""

from kedro.pipeline import Node, Pipeline

from unified_anomaly.pipelines.train_uniad.nodes import extract_uniad_features, train_uniad_model


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                extract_uniad_features,
                inputs=["ingested_images", "params:train_uniad"],
                outputs="uniad_features",
                name="extract_uniad_features",
            ),
            Node(
                train_uniad_model,
                inputs=["uniad_features", "params:train_uniad"],
                outputs=["uniad_model", "uniad_training_history"],
                name="train_uniad_model",
            ),
        ]
    )
