#!/usr/bin/env bash
# The dask backend on the CI SLURM cluster through dask-jobqueue's SLURMCluster
# (embed.dask.cluster: slurm; diffscale/embed/dask_slurm.py):
#   1. embed the demo's images with 2 dask workers, each a SLURM job in partition cpu; check from
#      SLURM's records (sacct, or scontrol without accounting) that both jobs ran there and ended,
#      that the CPUs and seconds the run recorded they held (what the report bills) agree with
#      SLURM's, and that the embeddings equal the demo's serial run's bitwise (both at 1 thread per worker);
#   2. kill a run (captions) with SIGTERM while its worker jobs run: it must exit 143, leave no
#      index.json, and squeue must show none of its worker jobs left.
#
#   .ci/slurm/run-demo.sh calls it last, with its WORKDIR:  .ci/slurm/run-dask.sh WORKDIR
#
# WORKDIR holds the demo's results (config.yaml + config/slurm-test.yaml): the manifest and
# results/embed/images/serial-pinned-w1, run by the demo with 1 CPU (hardware.local.cpus: 1).
# Knobs: PYTHON (default .venv/bin/python of this checkout), ACCOUNTING=slurmdbd|none.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
python="${PYTHON:-$repo/.venv/bin/python}"
work="${1:?usage: $0 WORKDIR (where run-demo.sh ran the demo)}"
case "${ACCOUNTING:-slurmdbd}" in
  slurmdbd) records=sacct ;;
  none) records=scontrol ;;
  *) echo "ACCOUNTING must be slurmdbd or none" >&2; exit 2 ;;
esac
log() { printf '[slurm-dask %(%H:%M:%S)T] %s\n' -1 "$*"; }
die() { log "ERROR: $*"; exit 1; }
cd "$work"
t0=$SECONDS

# dask-jobqueue is the `cluster` extra of pyproject.toml (a cluster user's install, not the
# Quickstart's): installed here, at its pin, where it is missing; then the tests that need it.
if ! "$python" -c 'import dask_jobqueue' 2>/dev/null; then
  pin="$("$python" -c 'import sys, tomllib; print(*tomllib.load(open(sys.argv[1], "rb"))["project"]["optional-dependencies"]["cluster"])' pyproject.toml)"
  log "installing $pin"
  "$python" -m pip install -q "$pin"
fi
"$python" -m pytest -q -p no:cacheprovider tests/test_embed_dask_slurm.py

cat > dask-slurm.yaml <<'EOF'
embed:
  dask:
    cluster: slurm
    timeout_s: 120
    slurm: {partition: cpu, cores: 1, memory: 1GB, walltime: "00:10:00"}
EOF
settings() {  # settings <modality>: the run's config slice, as the workflow would pass it
  "$python" -c 'import json, sys
from diffscale.embed.settings import settings_for
from diffscale.slurm_audit import merged_config
print(json.dumps(settings_for(merged_config(sys.argv[2:]), sys.argv[1], "dask")))' \
    "$1" config.yaml config/slurm-test.yaml dask-slurm.yaml
}
embed=(scripts/embed.py --manifest results/data/coco/manifest.parquet --skipped results/data/coco/skipped.csv
       --backend dask --policy pinned --workers 2)
# this run's worker jobs in the given squeue states (their name starts with the run's)
jobs_in() { squeue -h -t "$1" -o '%i %j' | awk '$2 ~ /^diffscale-dask-pinned-w2-/ {print $1}' | paste -sd, -; }

log "1. images, 2 dask workers as SLURM jobs in partition cpu"
run=dask-slurm/images/dask-pinned-w2
t1=$SECONDS
"$python" "${embed[@]}" images --out-dir "$run" --settings "$(settings images)"
"$python" - "$run/timing.json" <<'EOF'
import json, sys
t = json.load(open(sys.argv[1]))
b = t["backend_info"]
print(f"   jobs {', '.join(b['job_ids'])}: queue wait {t['queue_wait_s']:.2f} s, worker start "
      f"{b['worker_start_s']:.2f} s, start-up {t['startup_s']:.2f} s, wall {t['wall_s']:.2f} s "
      f"(queue wait not in it), threads per worker {t['threads_per_worker']}; the jobs held "
      + (f"{b['job_cpus']} CPUs for {t['worker_job_cpu_s']:.1f} CPU-seconds (billed)"
         if t.get("worker_job_cpu_s") is not None else "what the run could not total (the audit says why)"))
EOF
# the jobs end when the run closes its cluster; let the records catch up
for _ in $(seq 60); do [ -z "$(jobs_in PD,R,CG,CF,S)" ] && break; sleep 0.5; done
for attempt in 1 2 3 4 5; do
  if "$python" scripts/slurm_audit.py dask --run-dir "$run" --partition cpu --records "$records" \
       --reference results/embed/images/serial-pinned-w1; then break; fi
  [ "$attempt" -lt 5 ] || die "the dask-on-SLURM run failed its audit"
  sleep 2
done
log "   run + audit in $((SECONDS - t1)) s"

log "2. captions, killed with SIGTERM while its worker jobs run"
t2=$SECONDS
killed=dask-slurm/text/dask-pinned-w2
text_settings="$(settings text)"
"$python" "${embed[@]}" text --out-dir "$killed" --settings "$text_settings" > sigterm.log 2>&1 &
pid=$!  # python's own pid (a simple command, not a function or subshell: those would take the signal)
# until both workers are at work on their shards (each keeps a status file in the run directory)
ids=""
for _ in $(seq 240); do
  ids="$(jobs_in R)"
  [ "$(ls "$killed"/.status/w*.json 2>/dev/null | wc -l)" -ge 2 ] && break
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.5
done
[ "$(tr ',' '\n' <<<"$ids" | grep -c .)" -ge 2 ] || { cat sigterm.log; die "the run's worker jobs never ran"; }
kill -TERM "$pid"
rc=0
wait "$pid" || rc=$?
[ "$rc" -eq 143 ] || { cat sigterm.log; die "the killed run exited $rc, not 143"; }
left=""
for _ in $(seq 40); do
  left="$(squeue -h -j "$ids" -t PD,R,CG,CF,S -o '%i %T' 2>/dev/null || true)"
  [ -z "$left" ] && break
  sleep 0.5
done
[ -z "$left" ] || die "worker jobs left after SIGTERM: $left"
[ ! -e "$killed/index.json" ] || die "the killed run left $killed/index.json"
log "   exit 143; worker jobs $ids: $(squeue -h -t all -j "$ids" -o '%T' | sort | uniq -c | xargs), none left ($((SECONDS - t2)) s)"
log "dask on SLURM passed in $((SECONDS - t0)) s"
