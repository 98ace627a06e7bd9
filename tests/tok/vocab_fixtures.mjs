// Reader for llama.cpp tokenizer test vectors (tests/test-tokenizer-0 format):
//   NAME.gguf.inp: test strings, each followed by "\n__ggml_vocab_test__\n"
//                  (the newline before the separator is NOT part of the string)
//   NAME.gguf.out: one line per string, the expected ids (no BOS), separated
//                  by spaces (lines start with a space; an empty line = no ids)
import { readFileSync } from "node:fs";

export const SEP = "\n__ggml_vocab_test__\n";

export function readVocabTests(inpPath, outPath = inpPath.replace(/\.inp$/, ".out")) {
  const inp = readFileSync(inpPath, "utf8");
  const texts = [];
  let pos = 0;
  for (;;) {
    const found = inp.indexOf(SEP, pos);
    if (found < 0) break;
    texts.push(inp.slice(pos, found));
    pos = found + SEP.length;
  }
  if (pos !== inp.length) throw new Error(`${inpPath}: trailing data after last separator`);
  const out = readFileSync(outPath, "utf8");
  const lines = out.split("\n");
  if (lines.length && lines[lines.length - 1] === "") lines.pop();
  if (lines.length !== texts.length)
    throw new Error(`${outPath}: ${lines.length} lines for ${texts.length} strings`);
  const ids = lines.map((l) => l.trim().split(/\s+/).filter(Boolean).map(Number));
  return texts.map((text, i) => ({ text, ids: ids[i] }));
}
