// Baseline for bench_tok: the reference tokenizer (@lenml/tokenizers, the
// one the tests compare with) encoding the same corpus for the same time.
//   node bench/tok_ref_speed.mjs TOKENIZER_DIR CORPUS.json [seconds]
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { TokenizerLoader } from "@lenml/tokenizers";

const [dir, corpusPath, secs = "2"] = process.argv.slice(2);
const tok = TokenizerLoader.fromPreTrained({
  tokenizerJSON: JSON.parse(readFileSync(join(dir, "tokenizer.json"), "utf8")),
  tokenizerConfig: JSON.parse(readFileSync(join(dir, "tokenizer_config.json"), "utf8")),
});
const corpus = JSON.parse(readFileSync(corpusPath, "utf8"));
const sizes = corpus.map((s) => Buffer.byteLength(s, "utf8"));
let bytes = 0, rounds = 0;
const t0 = performance.now();
do {
  for (let i = 0; i < corpus.length; i++) {
    tok.encode(corpus[i], { add_special_tokens: true });
    bytes += sizes[i];
  }
  rounds++;
} while (performance.now() - t0 < Number(secs) * 1000);
const dt = (performance.now() - t0) / 1000;
console.log(JSON.stringify({ tokenizer: dir, corpus_mb_s: +(bytes / dt / 1e6).toFixed(2), rounds }));
