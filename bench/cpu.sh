#!/usr/bin/env bash
# make bench-cpu: CPU prompt processing (pp) and generation (tg) on random-
# weight GGUF files of real shapes (a 1B Llama-3.2 and a 0.5B Qwen2, made
# once by `inferd gen-model` and cached), at Q8_0, Q4_K_M and F16, with the
# memory read bandwidth of the same run as the ceiling of tg, and batched
# decode (8 sequences) against one on the Qwen shape. With LLAMA_BENCH set
# to a llama-bench binary (llama.cpp, built outside this repository), the
# same files run through it with the same thread count, side by side, and
# the ratios are printed.
#
# Why the rounds: on a shared or virtual machine the memory read bandwidth
# moves by 1.5-2x from minute to minute (about 30 to 60 GB/s on 2 threads
# here), so one run of each side compares two different machines. Each
# file runs ROUNDS rounds; a round runs both sides, in turn first (ABBA),
# with the bandwidth probe before, between and after them. The table gives
#   pp x, tg x    each side's best round against the other's best;
#   tg x med      the median of the rounds' own ratios (the two runs of a
#                 round are seconds apart);
#   bw% int       `inferd bench --probe`: tg with the probe run between
#                 every 4 tokens, the weight bandwidth of those tokens
#                 against the probe's, both sampled across the same
#                 seconds (median over rounds): the fairest reading here;
#   bw% adj       the median over rounds of tg's weight bandwidth against
#                 the mean of the two probes beside that run: how much of
#                 the bandwidth there was at the time tg used (llama adj:
#                 the same for llama-bench, counting the same weight bytes);
#   bw% best      tg's best round against the best probe of the whole run
#                 (the severest reading: a probe takes a second and can
#                 catch a fast phase that a 10 s run does not keep).
#   Environment: BUILD, BIN, THREADS (default: all CPUs), REPS (3), ROUNDS (2), PP (512),
#   TG (128), SHAPES ("llama-1b qwen2-0.5b"), TYPES ("q8_0 q4_k_m f16"),
#   MODELS (folder of the generated files, default $BUILD/bench).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}; BIN=${BIN:-bin}; MODELS=${MODELS:-$BUILD/bench}
THREADS=${THREADS:-$(nproc)}; REPS=${REPS:-3}; ROUNDS=${ROUNDS:-2}; PP=${PP:-512}; TG=${TG:-128}
mkdir -p "$MODELS"
log=$(mktemp); trap 'rm -f "$log"' EXIT
probe() { # one probe: prints GB/s with THREADS threads, logs it
	local b
	b=$("$BUILD/bench/membw" "$THREADS" | sed 's/.*"read_gb_s_n": \([0-9.]*\).*/\1/')
	echo "probe $b" >>"$log"
	echo "$b"
}
for i in 1 2 3; do echo "memory read bandwidth, $THREADS threads: $(probe) GB/s"; done
for shape in ${SHAPES:-llama-1b qwen2-0.5b}; do
	for t in ${TYPES:-q8_0 q4_k_m f16}; do
		f=$MODELS/$shape-$t.gguf
		[ -f "$f" ] || "$BIN/inferd" gen-model --shape "$shape" --type "$t" -o "$f" >/dev/null
		for round in $(seq "$ROUNDS"); do
			sides="inferd"
			if [ -n "${LLAMA_BENCH:-}" ]; then
				if [ $((round % 2)) = 1 ]; then sides="inferd llama"; else sides="llama inferd"; fi
			fi
			pb=$(probe)
			for side in $sides; do
				if [ "$side" = inferd ]; then
					out=$("$BIN/inferd" bench -m "$f" -p "$PP" -n "$TG" -t "$THREADS" -r "$REPS" --probe --json)
					rec=$(echo "$out" | node -e '
						const o = JSON.parse(require("fs").readFileSync(0, "utf8"));
						console.log(o.pp_tok_s, o.tg_tok_s, o.weight_bytes, o.tg_probe_ratio)')
				else
					out=$("$LLAMA_BENCH" -m "$f" -p "$PP" -n "$TG" -t "$THREADS" -r "$REPS" -o json 2>/dev/null)
					rec=$(echo "$out" | node -e '
						const a = JSON.parse(require("fs").readFileSync(0, "utf8"));
						const pp = a.find(r => r.n_gen === 0), tg = a.find(r => r.n_prompt === 0);
						console.log(pp.avg_ts, tg.avg_ts, 0, 0, a[0].build_commit + "_(build_" + a[0].build_number + ")")')
				fi
				pa=$(probe)
				echo "run $shape $t $round $side $pb $pa $rec" >>"$log"
				pb=$pa
			done
		done
		echo "  $shape $t done"
	done
done
node -e '
const lines = require("fs").readFileSync(process.argv[1], "utf8").trim().split("\n").map(l => l.split(" "));
const best = Math.max(...lines.filter(l => l[0] === "probe").map(l => Number(l[1])));
const med = a => { const s = [...a].sort((x, y) => x - y), n = s.length; return n ? (n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2) : NaN; };
const runs = lines.filter(l => l[0] === "run").map(l => ({ file: l[1] + " " + l[2], round: l[3], side: l[4],
	probe: (Number(l[5]) + Number(l[6])) / 2, pp: Number(l[7]), tg: Number(l[8]), bytes: Number(l[9]), inter: Number(l[10]),
	build: l[11] }));
const f = (x, d) => (isFinite(x) ? x.toFixed(d) : "-");
const pad = (s, n, left) => (left ? String(s).padEnd(n) : String(s).padStart(n));
console.log([pad("shape", 12, 1), pad("type", 7, 1), pad("pp tok/s", 9), pad("llama pp", 9), pad("tg tok/s", 9), pad("llama tg", 9),
	pad("pp x", 6), pad("tg x", 6), pad("tg x med", 9), pad("bw% int", 8), pad("bw% adj", 8), pad("llama adj", 10),
	pad("bw% best", 9)].join(" "));
let build = "";
for (const file of [...new Set(runs.map(r => r.file))]) {
	const ours = runs.filter(r => r.file === file && r.side === "inferd"), ref = runs.filter(r => r.file === file && r.side === "llama");
	if (ref.length) build = ref[0].build.replace(/_/g, " ");
	const bytes = ours[0].bytes, mx = (a, k) => (a.length ? Math.max(...a.map(r => r[k])) : NaN);
	const opp = mx(ours, "pp"), otg = mx(ours, "tg"), lpp = mx(ref, "pp"), ltg = mx(ref, "tg");
	const paired = ours.map(o => { const l = ref.find(r => r.round === o.round); return l ? o.tg / l.tg : NaN; }).filter(isFinite);
	const adj = med(ours.map(o => (o.tg * bytes / 1e9) / o.probe)), bb = otg * bytes / 1e9 / best;
	const ladj = med(ref.map(l => (l.tg * bytes / 1e9) / l.probe)), inter = med(ours.map(o => o.inter));
	const [shape, type] = file.split(" ");
	console.log([pad(shape, 12, 1), pad(type, 7, 1), pad(f(opp, 2), 9), pad(f(lpp, 2), 9), pad(f(otg, 2), 9), pad(f(ltg, 2), 9),
		pad(f(opp / lpp, 2), 6), pad(f(otg / ltg, 2), 6), pad(f(med(paired), 2), 9),
		pad(f(100 * inter, 0) + "%", 8), pad(f(100 * adj, 0) + "%", 8), pad(f(100 * ladj, 0) + "%", 10),
		pad(f(100 * bb, 0) + "%", 9)].join(" "));
}
if (build) console.log("llama.cpp: " + build + ", the same threads, files and run, ROUNDS " + process.argv[2] + " alternating");
console.log("best read bandwidth of the run (bw% best): " + best.toFixed(2) + " GB/s");
' "$log" "$ROUNDS"
# batched decode: 8 sequences at once against one, through the engine
f=$MODELS/qwen2-0.5b-q8_0.gguf
[ -f "$f" ] || "$BIN/inferd" gen-model --shape qwen2-0.5b --type q8_0 -o "$f" >/dev/null
for round in $(seq "$ROUNDS"); do
	"$BIN/inferd" bench -m "$f" -p 0 -n 64 -t "$THREADS" -r 2 -b 8 | tail -1
done
