#!/usr/bin/env bash
# make bench-cpu: CPU prompt processing (pp) and generation (tg) on random-
# weight GGUF files of real shapes (a 1B Llama-3.2 and a 0.5B Qwen2, made
# once by `inferd gen-model` and cached), at Q8_0, Q4_K_M and F16, with the
# memory read bandwidth of the same run as the ceiling of tg, and batched
# decode (8 sequences) against one on the Qwen shape. With LLAMA_BENCH set
# to a llama-bench binary (llama.cpp, built outside this repository), the
# same files run through it with the same thread count, side by side, and
# the ratios are printed.
#   Environment: BUILD, BIN, THREADS (default: all CPUs), REPS (3), PP (512),
#   TG (128), SHAPES ("llama-1b qwen2-0.5b"), TYPES ("q8_0 q4_k_m f16"),
#   MODELS (folder of the generated files, default $BUILD/bench).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}; BIN=${BIN:-bin}; MODELS=${MODELS:-$BUILD/bench}
THREADS=${THREADS:-$(nproc)}; REPS=${REPS:-3}; PP=${PP:-512}; TG=${TG:-128}
mkdir -p "$MODELS"
bw=$("$BUILD/bench/membw" "$THREADS")
bwn=$(echo "$bw" | sed 's/.*"read_gb_s_n": \([0-9.]*\).*/\1/')
echo "memory read bandwidth: $bw"
printf "%-12s %-7s %10s %10s %10s %10s %8s %8s %7s\n" shape type "pp tok/s" "llama pp" "tg tok/s" "llama tg" "pp x" "tg x" "tg bw%"
for shape in ${SHAPES:-llama-1b qwen2-0.5b}; do
	for t in ${TYPES:-q8_0 q4_k_m f16}; do
		f=$MODELS/$shape-$t.gguf
		[ -f "$f" ] || "$BIN/inferd" gen-model --shape "$shape" --type "$t" -o "$f" >/dev/null
		ours=$("$BIN/inferd" bench -m "$f" -p "$PP" -n "$TG" -t "$THREADS" -r "$REPS" --json)
		read -r opp otg ogb < <(echo "$ours" | node -e '
			const o = JSON.parse(require("fs").readFileSync(0, "utf8"));
			console.log(o.pp_tok_s.toFixed(2), o.tg_tok_s.toFixed(2), o.tg_weight_gb_s.toFixed(2))')
		lpp=-; ltg=-; rpp=-; rtg=-
		if [ -n "${LLAMA_BENCH:-}" ]; then
			ref=$("$LLAMA_BENCH" -m "$f" -p "$PP" -n "$TG" -t "$THREADS" -r "$REPS" -o json 2>/dev/null)
			read -r lpp ltg < <(echo "$ref" | node -e '
				const a = JSON.parse(require("fs").readFileSync(0, "utf8"));
				const pp = a.find(r => r.n_gen === 0), tg = a.find(r => r.n_prompt === 0);
				console.log(pp.avg_ts.toFixed(2), tg.avg_ts.toFixed(2))')
			build=$(echo "$ref" | node -e '
				const a = JSON.parse(require("fs").readFileSync(0, "utf8"));
				console.log(a[0].build_commit + " (build " + a[0].build_number + ")")')
			rpp=$(awk "BEGIN{printf \"%.2f\", $opp/$lpp}")
			rtg=$(awk "BEGIN{printf \"%.2f\", $otg/$ltg}")
		fi
		printf "%-12s %-7s %10s %10s %10s %10s %8s %8s %6s%%\n" "$shape" "$t" "$opp" "$lpp" "$otg" "$ltg" "$rpp" "$rtg" \
			"$(awk "BEGIN{printf \"%.0f\", 100*$ogb/$bwn}")"
	done
done
[ -n "${LLAMA_BENCH:-}" ] && echo "llama.cpp: $build, the same threads, files and run"
# batched decode: 8 sequences at once against one, through the engine
f=$MODELS/qwen2-0.5b-q8_0.gguf
[ -f "$f" ] || "$BIN/inferd" gen-model --shape qwen2-0.5b --type q8_0 -o "$f" >/dev/null
"$BIN/inferd" bench -m "$f" -p 0 -n 64 -t "$THREADS" -r 1 -b 8 | tail -1
