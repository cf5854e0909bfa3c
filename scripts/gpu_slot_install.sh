#!/usr/bin/env bash
# The wheels carried in $WHEELS (make gpu-wheels), installed --no-deps into the scratch folder $SITE
# with the Python $PY, never into that Python's own site-packages: a GPU image's packages stay as
# they are (torchattacks pins requests~=2.25.1; with its dependencies pip would replace the image's
# requests, or refuse). Then every module batlit needs there is imported once, naming what is
# missing. Used by scripts/gpu_slot.sh and scripts/study_cifar10_gpu.sh; PYTHONPATH must hold $SITE.
set -uo pipefail
PY=${PY:-python3}
SITE=${SITE:?set SITE to the scratch folder the wheels go into}
WHEELS=${WHEELS:-.wheels}
shopt -s nullglob
wheels=("$WHEELS"/*.whl)
if [ ${#wheels[@]} = 0 ]; then
  echo "no wheels in WHEELS=$WHEELS (make gpu-wheels, then carry .wheels): using what $PY has"
else
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --disable-pip-version-check \
      --upgrade --target "$SITE" "${wheels[@]}" || { echo "pip could not install the wheels in $WHEELS" >&2; exit 1; }
  echo "installed into $SITE: $(cd "$WHEELS" && ls *.whl | tr '\n' ' ')"
fi
"$PY" - <<'PY'
import importlib, sys
needed = ["torch", "lightning", "torchmetrics", "numpy", "PIL", "yaml", "matplotlib", "hydra", "omegaconf",
          "antlr4", "torchattacks", "batlit"]
missing = []
for name in needed:
    try:
        module = importlib.import_module(name)
        print(f"{name:<13} {getattr(module, '__version__', '')}  {getattr(module, '__file__', '')}")
    except Exception as err:  # noqa: BLE001 - any failure to import is what this step reports
        missing.append(f"{name} ({type(err).__name__}: {err})")
if missing:
    sys.exit("missing: " + "; ".join(missing))
PY
