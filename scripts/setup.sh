# Sourced by run.sh and test.sh: create .venv if missing and install worldmodel into it.
# PyTorch is installed first on its own: a CPU-only machine gets the CPU build instead of
# several GB of CUDA packages. Set WORLDMODEL_TORCH to choose another torch requirement
# (for example "torch" for the newest CUDA build on a GPU machine).
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -c 'import sys; assert sys.version_info >= (3, 10), "worldmodel needs Python >= 3.10"'
  "$PYTHON" -m venv .venv
fi
stamp=".venv/.worldmodel-installed-${WORLDMODEL_EXTRAS:-base}"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  if ! .venv/bin/python -c 'import torch' 2>/dev/null; then
    if [ -n "${WORLDMODEL_TORCH:-}" ]; then
      torch_req="$WORLDMODEL_TORCH"
    elif command -v nvidia-smi >/dev/null 2>&1 || [ "$(uname -s)" = Darwin ]; then
      torch_req="torch"
    else
      torch_req="torch==2.13.0"
    fi
    .venv/bin/python -m pip install --quiet "$torch_req"
  fi
  extras="${WORLDMODEL_EXTRAS:+[$WORLDMODEL_EXTRAS]}"
  .venv/bin/python -m pip install --quiet -e ".$extras"
  touch "$stamp"
fi
