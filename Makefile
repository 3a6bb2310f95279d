# The two set-up commands of the README. Both build (or reuse) the environment keyed on the dependency pins.
.PHONY: run test lint viz mlflow-ui airflow-dag benchmarks benchmarks-quick

run:  ## install, then run the default pipeline (ingest -> synthesize -> train -> evaluate) on the embedded data
	bash scripts/run.sh

test:  ## install, then lint and run the whole test suite
	bash scripts/test.sh

lint:
	"$$(bash scripts/setup_env.sh)/bin/ruff" check src tests benchmarks notebooks

viz:  ## static kedro-viz export into build/ (open build/index.html)
	"$$(bash scripts/setup_env.sh)/bin/kedro" viz build

mlflow-ui:  ## the MLflow UI on http://127.0.0.1:5000 (localhost only)
	"$$(bash scripts/setup_env.sh)/bin/mlflow" ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5000

airflow-dag:  ## the default pipeline as an Airflow DAG, one task per node (kedro-airflow), into build/airflow_dags/
	"$$(bash scripts/setup_env.sh)/bin/kedro" airflow create --pipelines __default__ --target-dir build/airflow_dags

benchmarks:  ## every benchmark on the real MTD in sequence; regenerates docs/benchmarks.md (long: hours on a CPU)
	. scripts/env.sh && "$$(bash scripts/setup_env.sh | tail -n 1)/bin/python" benchmarks/run_all.py

benchmarks-quick:  ## smoke run of every benchmark (tiny epochs) into a temporary file, not docs/benchmarks.md
	. scripts/env.sh && "$$(bash scripts/setup_env.sh | tail -n 1)/bin/python" benchmarks/run_all.py --quick
