#!/usr/bin/env bash
# Download, here, the wheels a lent H200 lacks for the embedding device check (embed-check.sh):
# its python 3.12 has torch, transformers 5.17, pandas, pyarrow, pillow, safetensors, peft, but not
# these (versions as pyproject.toml pins them). They go to .whl/ (git-ignored through
# .git/info/exclude) and travel with the device tool's `carry: [".whl"]`.
set -euo pipefail
cd "$(dirname "$0")/../.."
grep -qx '/.whl/' .git/info/exclude || echo '/.whl/' >> .git/info/exclude
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$p")
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${platforms[@]}" -d .whl \
  diffusers==0.42.1 transformers==5.23.0 instant-clip-tokenizer==0.1.1 importlib_metadata==10.2.0 \
  jsonschema==4.26.0 referencing==0.37.0 jsonschema-specifications==2025.9.1 rpds-py==2026.9.1
ls -la .whl
du -sh .whl
