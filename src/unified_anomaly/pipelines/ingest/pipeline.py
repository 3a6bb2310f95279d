from kedro.pipeline import Node, Pipeline

from unified_anomaly.pipelines.ingest.nodes import decode_images, scan_dataset


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(scan_dataset, "params:ingest", ["ingest_manifest", "ingest_info", "ingest_class_counts"],
                 name="scan_dataset"),
            Node(decode_images, ["ingest_manifest", "ingest_info", "params:ingest"], "ingested_images",
                 name="decode_images"),
        ]
    )
