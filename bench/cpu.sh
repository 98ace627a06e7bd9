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
# jumps between two levels (here about 30 and 57 GB/s on 2 threads, held
# for seconds to minutes), so one run of each side compares two different
# machines. Each file runs ROUNDS rounds; a round runs tg of both sides back
# to back, in turn first (ABBA), with the bandwidth probe before, between
# and after them, then pp of both sides, then `inferd bench --probe`. The
# table gives
#   pp x, tg x    each side's best round against the other's best;
#   tg x med      the median of the rounds' own ratios (the two tg runs of
#                 a round are seconds apart);
#   tg x same     the same median over the rounds whose three probes agree
#                 (the largest at most 1.2x the smallest): both sides ran on
#                 the same level of the machine; (k/n) such rounds. The
#                 fairest side-by-side reading here;
#   bw% int       `inferd bench --probe`: tg with the probe run between
#                 every 4 tokens, the weight bandwidth of those tokens
#                 against the probe's, both sampled across the same
#                 seconds (median over rounds): the fairest bandwidth
#                 reading here;
#   bw% adj       the median over rounds of tg's weight bandwidth against
#                 the mean of the two probes beside that run: how much of
#                 the bandwidth there was at the time tg used (llama adj:
#                 the same for llama-bench, counting the same weight bytes);
#   bw% best      tg's best round against the best probe of the whole run
#                 (the severest reading: a probe takes a second and can
#                 catch a fast phase that a 10 s run does not keep).
#   Environment: BUILD, BIN, THREADS (default: all CPUs), REPS (3), ROUNDS (2), PP (512),
#   TG (128), SHAPES ("llama-1b qwen2-0.5b"), TYPES ("q8_0 q4_k_m f16"),
#   MODELS (folder of the generated files, default $BUILD/bench), LOG (the
#   record of every probe and run, default $BUILD/bench-cpu-rounds.log).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}; BIN=${BIN:-bin}; MODELS=${MODELS:-$BUILD/bench}
THREADS=${THREADS:-$(nproc)}; REPS=${REPS:-3}; ROUNDS=${ROUNDS:-2}; PP=${PP:-512}; TG=${TG:-128}
mkdir -p "$MODELS"
log=${LOG:-$BUILD/bench-cpu-rounds.log} # every probe and run, kept for a closer look
mkdir -p "$(dirname "$log")"; : >"$log"
json() { # the field at a dotted path of the JSON on stdin
	node -e 'let o = JSON.parse(require("fs").readFileSync(0, "utf8")); for (const k of process.argv[1].split(".")) o = o[k]; console.log(o)' "$1"
}
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
			for side in $sides; do # tg of the two sides back to back, probes around
				if [ "$side" = inferd ]; then
					tg=$("$BIN/inferd" bench -m "$f" -p 0 -n "$TG" -t "$THREADS" -r "$REPS" --json | json tg_tok_s)
				else
					tg=$("$LLAMA_BENCH" -m "$f" -p 0 -n "$TG" -t "$THREADS" -r "$REPS" -o json 2>/dev/null | json 0.avg_ts)
				fi
				pa=$(probe)
				echo "tg $shape $t $round $side $pb $pa $tg" >>"$log"
				pb=$pa
			done
			for side in $sides; do
				if [ "$side" = inferd ]; then
					out=$("$BIN/inferd" bench -m "$f" -p "$PP" -n 0 -t "$THREADS" -r "$REPS" --json)
					echo "pp $shape $t $round $side $(echo "$out" | json pp_tok_s) $(echo "$out" | json weight_bytes)" >>"$log"
				else
					out=$("$LLAMA_BENCH" -m "$f" -p "$PP" -n 0 -t "$THREADS" -r "$REPS" -o json 2>/dev/null)
					echo "pp $shape $t $round $side $(echo "$out" | json 0.avg_ts) $(echo "$out" | json 0.build_commit)_(build_$(echo "$out" | json 0.build_number))" >>"$log"
				fi
			done
			echo "int $shape $t $round $("$BIN/inferd" bench -m "$f" -p 0 -n "$TG" -t "$THREADS" -r 1 --probe --json | json tg_probe_ratio)" >>"$log"
		done
		echo "  $shape $t done"
	done
done
node -e '
const lines = require("fs").readFileSync(process.argv[1], "utf8").trim().split("\n").map(l => l.split(" "));
const best = Math.max(...lines.filter(l => l[0] === "probe").map(l => Number(l[1])));
const med = a => { const s = [...a].sort((x, y) => x - y), n = s.length; return n ? (n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2) : NaN; };
const rec = k => lines.filter(l => l[0] === k);
const tgs = rec("tg").map(l => ({ file: l[1] + " " + l[2], round: l[3], side: l[4], pb: Number(l[5]), pa: Number(l[6]),
	tg: Number(l[7]) }));
const pps = rec("pp").map(l => ({ file: l[1] + " " + l[2], round: l[3], side: l[4], pp: Number(l[5]), extra: l[6] }));
const ints = rec("int").map(l => ({ file: l[1] + " " + l[2], ratio: Number(l[4]) }));
const f = (x, d) => (isFinite(x) ? x.toFixed(d) : "-"), pct = x => (isFinite(x) ? (100 * x).toFixed(0) + "%" : "-");
const pad = (s, n, left) => (left ? String(s).padEnd(n) : String(s).padStart(n));
console.log([pad("shape", 12, 1), pad("type", 7, 1), pad("pp tok/s", 9), pad("llama pp", 9), pad("tg tok/s", 9), pad("llama tg", 9),
	pad("pp x", 6), pad("tg x", 6), pad("tg x med", 9), pad("tg x same", 12), pad("bw% int", 8), pad("bw% adj", 8),
	pad("llama adj", 10), pad("bw% best", 9)].join(" "));
let build = "";
for (const file of [...new Set(tgs.map(r => r.file))]) {
	const of = (a, side) => a.filter(r => r.file === file && r.side === side);
	const ours = of(tgs, "inferd"), ref = of(tgs, "llama"), opps = of(pps, "inferd"), lpps = of(pps, "llama");
	if (lpps.length) build = lpps[0].extra.replace(/_/g, " ");
	const bytes = Number(opps[0].extra), mx = (a, k) => (a.length ? Math.max(...a.map(r => r[k])) : NaN);
	const opp = mx(opps, "pp"), otg = mx(ours, "tg"), lpp = mx(lpps, "pp"), ltg = mx(ref, "tg");
	const pairs = ours.map(o => { const l = ref.find(r => r.round === o.round);
		if (!l) return null;
		const p = [o.pb, o.pa, l.pb, l.pa];
		return { x: o.tg / l.tg, same: Math.max(...p) <= 1.2 * Math.min(...p) }; }).filter(Boolean);
	const same = pairs.filter(p => p.same);
	const gb = r => (r.tg * bytes / 1e9) / ((r.pb + r.pa) / 2);
	const adj = med(ours.map(gb)), ladj = med(ref.map(gb)), bb = otg * bytes / 1e9 / best;
	const inter = med(ints.filter(r => r.file === file).map(r => r.ratio));
	const [shape, type] = file.split(" ");
	console.log([pad(shape, 12, 1), pad(type, 7, 1), pad(f(opp, 2), 9), pad(f(lpp, 2), 9), pad(f(otg, 2), 9), pad(f(ltg, 2), 9),
		pad(f(opp / lpp, 2), 6), pad(f(otg / ltg, 2), 6), pad(f(med(pairs.map(p => p.x)), 2), 9),
		pad(ref.length ? f(med(same.map(p => p.x)), 2) + " (" + same.length + "/" + pairs.length + ")" : "-", 12),
		pad(pct(inter), 8), pad(pct(adj), 8), pad(pct(ladj), 10), pad(pct(bb), 9)].join(" "));
}
if (build) console.log("llama.cpp: " + build + ", the same threads, files and run, ROUNDS " + process.argv[2] + " alternating");
console.log("best read bandwidth of the run (bw% best): " + best.toFixed(2) + " GB/s; every probe and run: " + process.argv[1]);
' "$log" "$ROUNDS"
# batched decode: 8 sequences at once against one, through the engine
f=$MODELS/qwen2-0.5b-q8_0.gguf
[ -f "$f" ] || "$BIN/inferd" gen-model --shape qwen2-0.5b --type q8_0 -o "$f" >/dev/null
for round in $(seq "$ROUNDS"); do
	"$BIN/inferd" bench -m "$f" -p 0 -n 64 -t "$THREADS" -r 2 -b 8 | tail -1
done
