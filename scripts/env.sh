# Sourced by run.sh and test.sh: the offline-friendly environment every command runs in.
export KEDRO_DISABLE_TELEMETRY=true
export MPLBACKEND=Agg
export HF_HUB_OFFLINE=1
export TRANSFORMERS_OFFLINE=1
export PYTHONUNBUFFERED=1
