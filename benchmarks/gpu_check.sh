#!/usr/bin/env bash
# The checks that need a GPU, in one run sized for a lent machine's 15 minutes: the CUDA
# tests (tests/gpu), then the benchmarks, each under its own time limit inside BUDGET
# seconds, most valuable first. Writes into OUT (default ./gpu_out): env.txt, pytest.log,
# one JSON per benchmark and all.log (every stderr). Figures: docs/BENCHMARKS.md ("GPU").
#
#   OUT=/tmp/gpu BUDGET=540 bash benchmarks/gpu_check.sh
#   STEPS=pytest,recipe RECIPE_EPOCHS=5 bash benchmarks/gpu_check.sh   # some steps only
#   DEV=cpu QUICK=1 bash benchmarks/gpu_check.sh     # a dry run of the script itself
#
# The lent machine's image (Python 3.12, torch 2.11) lacks platformdirs, xraydb and SQLAlchemy;
# they travel unpacked in .pysite/ (git-ignored; name it in the device tool's carry):
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux2014_x86_64 -d /tmp/whl sqlalchemy==2.1.9 xraydb==4.5.8 platformdirs
#   for w in /tmp/whl/*.whl; do unzip -q -o "$w" -d .pysite; done
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_out}
DEV=${DEV:-cuda}
BUDGET=${BUDGET:-540}
QUICK=${QUICK:-0}
STEPS=,${STEPS:-pytest,default_model,training,pipeline,training_b512,engine,recipe},
mkdir -p "$OUT"
# Pure-Python packages the machine's image lacks travel in .pysite/ (ignored by git).
[ -d .pysite ] && export PYTHONPATH=$PWD/.pysite${PYTHONPATH:+:$PYTHONPATH}
# pyproject maps training/ and resources/ into the package; without installing, links do.
made=()
for d in training resources; do
  [ -e "xrayscreen/$d" ] || { ln -s "../$d" "xrayscreen/$d" && made+=("xrayscreen/$d"); }
done
trap 'rm -f "${made[@]}"' EXIT
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
NPROC=$(nproc)

left() { echo $((BUDGET - SECONDS - 5)); }
run() {  # run NAME LIMIT CMD...: stdout -> OUT/NAME.json, stderr -> OUT/all.log
  local name=$1 limit=$2 t
  shift 2
  [[ $STEPS == *",$name,"* ]] || return 0
  t=$(left)
  [ "$t" -lt "$limit" ] && limit=$t
  if [ "$limit" -lt 15 ]; then echo "skip $name: budget spent"; return; fi
  echo "== $name (limit ${limit}s, at ${SECONDS}s)" | tee -a "$OUT/all.log"
  timeout "$limit" "$@" >"$OUT/$name.json" 2>>"$OUT/all.log"
  echo "rc=$? $name at ${SECONDS}s" | tee -a "$OUT/all.log"
}

{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv || true
  python3 -c "import torch, numpy, cv2, skimage, safetensors; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available(), 'numpy', numpy.__version__, 'cv2', cv2.__version__, 'skimage', skimage.__version__)"
  lscpu | grep -E 'Model name|^CPU\(s\)'
} >"$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

if [ "$QUICK" = 1 ]; then
  run default_model 120 python3 benchmarks/bench_default_model.py --device "$DEV" --sizes 300x400 --bags 1 --repeats 1 --strides 32
  run training 60 python3 benchmarks/bench_training.py --device "$DEV" --steps 1 --rounds 1 --ngf 8 --batch 8
  run pipeline 60 python3 benchmarks/bench_batch_pipeline.py --device "$DEV" --windows 512 --batches 4 --rounds 1
  run recipe 120 python3 benchmarks/bench_recipe_training.py --device "$DEV" --bags 4 --epochs 1 --ngf 8
  run engine 120 python3 benchmarks/bench_engine.py --device "$DEV" --no-rss --repeats 1 --sim-size 300,400 --naive-windows 8 --probe-windows 4 --matmul-n 256 --variants eager_bf16 --strides 32
  exit 0
fi

if [[ $STEPS == *",pytest,"* ]]; then
  t=$(left)
  echo "== pytest tests/gpu (at ${SECONDS}s)"
  timeout $((t < 180 ? t : 180)) python3 -m pytest -q -p no:cacheprovider -s -rs tests/gpu >"$OUT/pytest.log" 2>&1
  echo "rc=$? pytest at ${SECONDS}s"
  tail -4 "$OUT/pytest.log"
fi

run default_model 100 python3 benchmarks/bench_default_model.py --device "$DEV" --repeats 10 --parity --threads "$NPROC"
run training 45 python3 benchmarks/bench_training.py --device "$DEV" --steps 20 --rounds 3 --batch 64 --threads "$NPROC"
run pipeline 45 python3 benchmarks/bench_batch_pipeline.py --device "$DEV" --threads "$NPROC"
run training_b512 45 python3 benchmarks/bench_training.py --device "$DEV" --steps 10 --rounds 3 --batch 512 --ngf 64 --threads "$NPROC"
run engine 150 python3 benchmarks/bench_engine.py --device "$DEV" --no-rss --repeats 3 --threads "$NPROC" --variants eager_bf16,eager_fp32,compiled_bf16
run recipe 200 python3 benchmarks/bench_recipe_training.py --device "$DEV" --bags 40 ${RECIPE_EPOCHS:+--epochs "$RECIPE_EPOCHS"} --threads "$NPROC"
echo "done at ${SECONDS}s"
