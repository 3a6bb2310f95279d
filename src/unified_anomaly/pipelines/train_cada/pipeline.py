"""train_cada: ``ingested_images`` → ``rd_model`` → ``rd_cada_model``; ``uniad_model`` → ``uniad_cada_model``."""

from kedro.pipeline import Node, Pipeline

from unified_anomaly.pipelines.train_cada.nodes import fit_cada_on_base, train_rd


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(
                train_rd,
                inputs=["ingested_images", "params:train_cada"],
                outputs=["rd_model", "rd_training_history"],
                name="train_rd",
            ),
            Node(
                fit_cada_on_base,
                inputs=["rd_model", "ingested_images", "params:train_cada"],
                outputs=["rd_cada_model", "rd_cada_groups"],
                name="fit_cada_rd",
            ),
            Node(
                fit_cada_on_base,
                inputs=["uniad_model", "ingested_images", "params:train_cada"],
                outputs=["uniad_cada_model", "uniad_cada_groups"],
                name="fit_cada_uniad",
            ),
        ]
    )
