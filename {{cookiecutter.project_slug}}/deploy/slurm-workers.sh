#!/usr/bin/env bash
# Pipeline workers on a SLURM cluster: one worker per array task, all sharing the
# pipeline's database through DataJoint's job reservation.
#
#   mkdir -p logs && sbatch --array=1-8 deploy/slurm-workers.sh
#
# Run from the project folder (it holds datajoint.json) with the project installed in
# .venv (or a module/conda environment activated). Credentials: DJ_USER and DJ_PASS in the
# environment, or the files in .secrets/ (see .secrets/README.md). At the time limit, or on
# `scancel <jobid>`, SLURM sends SIGTERM: each worker finishes the key in progress, then
# exits (exit status 143) with no key left reserved; a later array job takes up the rest.
#SBATCH --job-name={{ cookiecutter.project_slug }}-worker
#SBATCH --array=1-4
#SBATCH --cpus-per-task=1
#SBATCH --mem=4G
#SBATCH --time=08:00:00
#SBATCH --output=logs/worker-%A_%a.out
set -euo pipefail

cd "${SLURM_SUBMIT_DIR:-.}"
if [[ -f .venv/bin/activate ]]; then
  # shellcheck disable=SC1091
  source .venv/bin/activate
fi

# Production, set here and not taken from the submitting shell (sbatch passes its
# environment on): the production schemas, and workers that never declare a table
# (DataJoint's production mode; declare once with `python -m {{ cookiecutter.package_name }} declare`).
export {{ cookiecutter.__prefix_variable }}={{ cookiecutter.schema_prefix }}
export DJ_CREATE_TABLES=false

# Re-queue keys held by workers that were killed outright (node failure, scancel -s KILL);
# keep ORPHAN_TIMEOUT longer than the slowest make().
exec python -m {{ cookiecutter.package_name }}.worker \
  --loop "${WORKER_SLEEP:-60}" \
  --orphan-timeout "${ORPHAN_TIMEOUT:-7200}" \
  --log-level "${WORKER_LOG_LEVEL:-INFO}"
