"""synthesize: ``ingested_images`` → ``synthetic_images`` + ``synthesis_metadata`` + contact sheets."""

from kedro.pipeline import Node, Pipeline

from unified_anomaly.pipelines.synthesize.nodes import make_contact_sheets, synthesize_anomalies


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                synthesize_anomalies,
                inputs=["ingested_images", "params:synthesize"],
                outputs=["synthetic_images", "synthesis_metadata"],
                name="synthesize_anomalies",
            ),
            Node(
                make_contact_sheets,
                inputs=["synthetic_images", "synthesis_metadata", "params:synthesize"],
                outputs="synthesis_contact_sheets",
                name="make_synthesis_contact_sheets",
            ),
        ]
    )
