#!/usr/bin/env bash
# GPU benchmark: makes Llama-3.2-1B-shaped random-weight files (untied head,
# vocab 128256) with inferd gen-model, then runs bench_cuda on each type and
# transformers' generate() on the same shape (if python3 has it), all in
# one run on the same GPU. Environment: BUILD, BIN, MODELS (default /tmp),
# TYPES (default f16 q8_0), NEW (tokens per request, 128), HF=0 (no baseline).
set -u
BUILD=${BUILD:-build-cuda}; BIN=${BIN:-$BUILD/bin}; MODELS=${MODELS:-/tmp}
nvidia-smi -L
for t in ${TYPES:-f16 q8_0}; do
	f=$MODELS/llama-1b-$t.gguf
	[ -f "$f" ] || "$BIN/inferd" gen-model --shape llama-1b --untied --type "$t" -o "$f" || exit 1
	echo "== $t =="
	"$BUILD/bench/cuda/bench_cuda" "$f" "${NEW:-128}"
done
if [ "${HF:-1}" = 0 ]; then
	:
elif python3 -c "import transformers, torch" 2>/dev/null; then
	python3 "$(dirname "$0")/hf_baseline.py" "${NEW:-128}"
else
	echo "transformers not installed: no baseline"
fi
