#!/usr/bin/env bash
# The demo, end to end, on the CI SLURM cluster through the project's SLURM profile, without conda;
# audited from SLURM's own records; then a second run that must submit nothing; then the dask
# backend with its workers as SLURM jobs (run-dask.sh).
#
#   .ci/slurm/setup.sh start && .ci/slurm/run-demo.sh
#   ACCOUNTING=none .ci/slurm/setup.sh start && ACCOUNTING=none .ci/slurm/run-demo.sh
#
# Config: config.yaml overlaid with config/slurm-test.yaml, which routes the demo's experiments to
# the cpu, a40, a100 and k80 partitions (fake GPUs, so those entries compute on the CPU).
# The run happens in a fresh copy of the working tree (WORKDIR, default a new /tmp folder), so
# every job really runs and the checkout's own results/ stay untouched; a default folder is removed
# when the demo passes, kept when it fails.
# Knobs: SNAKEMAKE (default .venv/bin/snakemake of this checkout), ACCOUNTING=slurmdbd|none, WORKDIR.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
snakemake="${SNAKEMAKE:-$repo/.venv/bin/snakemake}"
python="$(dirname "$snakemake")/python"
case "${ACCOUNTING:-slurmdbd}" in
  slurmdbd) profile=profiles/slurm records=sacct ;;
  none) profile=profiles/slurm-noacct records=scontrol ;;
  *) echo "ACCOUNTING must be slurmdbd or none" >&2; exit 2 ;;
esac
work="${WORKDIR:-$(mktemp -d /tmp/diffscale-slurm.XXXXXX)}"
mkdir -p "$work"
log() { printf '[slurm-demo %(%H:%M:%S)T] %s\n' -1 "$*"; }

# Tracked files and untracked ones git does not ignore: what a commit of this checkout would hold.
(cd "$repo" && git ls-files -z -co --exclude-standard | tar --null -cf - -T -) | tar -C "$work" -xf -
# Provenance records the checkout's commit: git reads the repository, the copy is its work tree
# (optional locks off, so git never rewrites the checkout's index for the copy's file stamps).
GIT_DIR="$(git -C "$repo" rev-parse --absolute-git-dir)"
export GIT_DIR GIT_WORK_TREE="$work" GIT_OPTIONAL_LOCKS=0
cd "$work"

configs=(config.yaml config/slurm-test.yaml)
# --sdm env-modules: no conda on the CI host; no rule names env modules, so rules run with the
# interpreter that runs Snakemake. Status is polled every 2 s instead of the profile's 30 s.
run_workflow() {
  "$snakemake" --profile "$profile" --configfile "${configs[@]}" --sdm env-modules \
    --slurm-init-seconds-before-status-checks 2 --seconds-between-status-checks 2 > "$1" 2>&1 \
    || { tail -40 "$1"; log "snakemake failed; job logs under $work/.snakemake/slurm_logs"; exit 1; }
}

t0=$SECONDS
log "run 1 in $work (profile $profile)"
run_workflow run1.log
test -s results/report.html
log "run 1 done in $((SECONDS - t0)) s; auditing from $records"
"$python" scripts/slurm_audit.py run --log run1.log --configfile "${configs[@]}" --records "$records" \
  --results results --save-ids slurm-ids.txt

t1=$SECONDS
log "run 2: must submit nothing"
run_workflow run2.log
"$python" scripts/slurm_audit.py rerun --log run2.log --known-ids slurm-ids.txt --records "$records"
log "run 2 done in $((SECONDS - t1)) s; SLURM demo passed in $((SECONDS - t0)) s"

# the dask backend's workers as SLURM jobs (dask-jobqueue), on the demo's manifest and serial run
PYTHON="$python" "$repo/.ci/slurm/run-dask.sh" "$work"

# passed: the copy goes (49 MB a run); a failed run exits above and keeps it, with its job logs
if [[ -z "${WORKDIR:-}" ]]; then
  cd / && rm -rf "$work"
  log "removed $work (set WORKDIR to keep the run's copy)"
fi
