"""train_uniad: ``ingested_images`` → cached features → trained UniAD → threshold → ``uniad_model``."""

from kedro.pipeline import Node, Pipeline

from unified_anomaly.pipelines.train_uniad.nodes import (
    build_uniad_bundle,
    calibrate_uniad_threshold,
    extract_uniad_features,
    train_uniad_model,
)


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                extract_uniad_features,
                inputs=["ingested_images", "params:train_uniad"],
                outputs="uniad_feature_cache",
                name="extract_uniad_features",
            ),
            Node(
                train_uniad_model,
                inputs=["uniad_feature_cache", "params:train_uniad"],
                outputs=["uniad_trained_model", "uniad_training_history", "uniad_training_summary"],
                name="train_uniad_model",
            ),
            Node(
                calibrate_uniad_threshold,
                inputs=["uniad_trained_model", "uniad_feature_cache", "params:train_uniad"],
                outputs="uniad_threshold",
                name="calibrate_uniad_threshold",
            ),
            Node(
                build_uniad_bundle,
                inputs=["uniad_trained_model", "uniad_threshold", "uniad_training_summary", "params:train_uniad"],
                outputs="uniad_model",
                name="build_uniad_bundle",
            ),
        ]
    )
