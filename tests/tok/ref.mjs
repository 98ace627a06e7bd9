#!/usr/bin/env node
// Reference tokenizer runner (Hugging Face semantics, via @lenml/tokenizers,
// a port of transformers.js; no network).
//
//   node tests/tok/ref.mjs TOKENIZER_DIR < jobs.json > results.json
//
// TOKENIZER_DIR holds tokenizer.json and tokenizer_config.json.
// jobs.json:    {"encode": [{"text": "...", "add_special": true|false}, ...],
//                "decode": [{"ids": [1, 2, 3], "skip_special": false}, ...]}
// results.json: {"encode": [[ids], ...], "decode": ["text", ...]}
//
// encode: tokenizer.encode(text, {add_special_tokens: add_special}) (add_special
//         defaults to true); special
//         token strings inside the text are matched as added tokens (as HF does).
// decode: tokenizer.decode(ids, {skip_special_tokens: skip_special}); the
//         clean_up_tokenization_spaces setting comes from tokenizer_config.json
//         (HF default behaviour). An empty id list decodes to "". An id
//         outside the vocabulary is an error (HF would silently drop it).
//
// A job that throws yields null in its slot and a line on stderr; the exit
// status is then 3 (results are still written).
//
// Two places where transformers.js differs from the Hugging Face Rust
// `tokenizers` library (which HF transformers' fast tokenizers use) are
// patched here, so that the output equals HF's (checked against the Rust
// library, tokenizers 0.23.2, by tests/tok/crosscheck_rust.mjs):
//  1. Regex \s / \S in pre-tokenizer/normalizer patterns. HF compiles them
//     with Oniguruma, where \s is Unicode White_Space (includes U+0085 NEL,
//     excludes U+FEFF); JavaScript's \s excludes U+0085 and includes U+FEFF.
//     We rewrite \s -> \p{White_Space} and \S -> \P{White_Space}.
//  2. ByteFallback decoder: when a run of <0xNN> byte tokens is not valid
//     UTF-8, HF emits one U+FFFD per byte of the run; TextDecoder would emit
//     one per maximal invalid subsequence and keep the valid bytes.
//  3. Unicode versions. Node 20 (ICU 78) knows Unicode 17; tokenizers 0.23.2
//     compiles regexes with Oniguruma tables of Unicode 16, so the 4,657
//     letters/digits new in Unicode 17 are not \p{L}/\p{N} there. Its NFC
//     (crate unicode-normalization-alignments) has Unicode 9 tables: 193
//     later code points with a combining class or a canonical composition
//     are inert there. Both deltas were measured against the Rust library
//     over every scalar value (crosscheck_rust.mjs --sweep) and are
//     excluded here (pre-tokenizer regexes are recompiled with the v flag;
//     NFC is applied piecewise between the inert code points).
import { readFileSync, writeSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { TokenizerLoader } from "@lenml/tokenizers";

// Rewrite regex escapes \s and \S (not \\s) to Unicode White_Space.
export function onigWhitespace(re) {
  let out = "";
  for (let i = 0; i < re.length; i++) {
    const c = re[i];
    if (c === "\\" && i + 1 < re.length) {
      const n = re[++i];
      if (n === "s") out += "\\p{White_Space}";
      else if (n === "S") out += "\\P{White_Space}";
      else out += c + n;
    } else {
      out += c;
    }
  }
  return out;
}

function patchRegexes(node) {
  if (Array.isArray(node)) {
    node.forEach(patchRegexes);
  } else if (node && typeof node === "object") {
    for (const [k, v] of Object.entries(node)) {
      if (k === "Regex" && typeof v === "string") node[k] = onigWhitespace(v);
      else patchRegexes(v);
    }
  }
}

// Letters / numbers in Unicode 17 but not in the Unicode 16 tables of the
// Oniguruma used by tokenizers 0.23.2 (measured, see header).
const NEW_L =
  "\u{088F}\u{0C5C}\u{0CDC}\u{A7CE}-\u{A7CF}\u{A7D2}\u{A7D4}\u{A7F1}\u{10940}-\u{10959}\u{10EC5}-\u{10EC7}" +
  "\u{11DB0}-\u{11DDB}\u{16EA0}-\u{16EB8}\u{16EBB}-\u{16ED3}\u{16FF2}-\u{16FF3}\u{187F8}-\u{187FF}" +
  "\u{18D09}-\u{18D1E}\u{18D80}-\u{18DF2}\u{1E6C0}-\u{1E6DE}\u{1E6E0}-\u{1E6E2}\u{1E6E4}-\u{1E6E5}" +
  "\u{1E6E7}-\u{1E6ED}\u{1E6F0}-\u{1E6F4}\u{1E6FE}-\u{1E6FF}\u{2B73A}-\u{2B73F}\u{2CEA2}-\u{2CEAD}\u{323B0}-\u{33479}";
const NEW_N = "\u{11DE0}-\u{11DE9}\u{16FF4}-\u{16FF6}";
// Code points whose NFC behaviour (combining class, canonical composition)
// is unknown to the Unicode 9 normalization tables of tokenizers 0.23.2.
const NFC_INERT = new RegExp(
  "[\u{07FD}\u{0897}-\u{089F}\u{08CA}-\u{08D3}\u{09FE}\u{0C3C}\u{0D3B}-\u{0D3C}\u{0EBA}\u{1715}\u{1ABF}-\u{1ADD}" +
    "\u{1AE0}-\u{1AEB}\u{1DF6}-\u{1DFA}\u{A82C}\u{105C9}\u{105D2}\u{105DA}\u{105E4}\u{10D24}-\u{10D27}\u{10D69}-\u{10D6D}" +
    "\u{10EAB}-\u{10EAC}\u{10EFA}-\u{10EFB}\u{10EFD}-\u{10EFF}\u{10F46}-\u{10F50}\u{10F82}-\u{10F85}\u{11070}\u{1133B}" +
    "\u{11382}-\u{11385}\u{1138B}\u{1138E}\u{11390}-\u{11391}\u{113B8}\u{113BB}\u{113C2}\u{113C5}\u{113C7}-\u{113C9}" +
    "\u{113CE}-\u{113D0}\u{1145E}\u{11839}-\u{1183A}\u{11930}\u{11935}\u{11938}\u{1193D}-\u{1193E}\u{11943}\u{119E0}" +
    "\u{11A34}\u{11A47}\u{11A99}\u{11D42}\u{11D44}-\u{11D45}\u{11D97}\u{11F41}-\u{11F42}\u{1611E}-\u{16129}\u{1612F}" +
    "\u{16D63}\u{16D67}-\u{16D6A}\u{16FF0}-\u{16FF1}\u{1E08F}\u{1E130}-\u{1E136}\u{1E2AE}\u{1E2EC}-\u{1E2EF}" +
    "\u{1E4EC}-\u{1E4EF}\u{1E5EE}-\u{1E5EF}\u{1E6E3}\u{1E6E6}\u{1E6EE}-\u{1E6EF}\u{1E6F5}]",
  "u",
);

// NFC as tokenizers 0.23.2 does it: inert code points are left alone and
// split the text into independently normalized pieces.
export function hfNormalize(text, form) {
  if (!NFC_INERT.test(text)) return text.normalize(form);
  let out = "";
  let piece = "";
  for (const ch of text) {
    if (NFC_INERT.test(ch)) {
      out += piece.normalize(form) + ch;
      piece = "";
    } else {
      piece += ch;
    }
  }
  return out + piece.normalize(form);
}

// Rewrite a compiled pre-tokenizer RegExp: \p{L} / \p{N} without the
// Unicode 17 additions (needs the v flag for class subtraction).
export function hfRegExp(re) {
  let src = "";
  const s = re.source;
  for (let i = 0; i < s.length; i++) {
    if (s[i] === "\\" && i + 1 < s.length) {
      const rest = s.slice(i, i + 5);
      if (rest === "\\p{L}") {
        src += `[\\p{L}--[${NEW_L}]]`;
        i += 4;
      } else if (rest === "\\p{N}") {
        src += `[\\p{N}--[${NEW_N}]]`;
        i += 4;
      } else {
        src += s[i] + s[i + 1];
        i++;
      }
    } else {
      src += s[i];
    }
  }
  return new RegExp(src, re.flags.replace("u", "") + "v");
}

const strictUtf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
const hfByteRunDecoder = {
  decode(bytes) {
    try {
      return strictUtf8.decode(bytes);
    } catch {
      return "\ufffd".repeat(bytes.length);
    }
  },
};

function patchDecoders(dec) {
  if (!dec) return;
  if (dec.config?.type === "ByteFallback") dec.text_decoder = hfByteRunDecoder;
  for (const d of dec.decoders ?? []) patchDecoders(d);
}

// ByteLevel pre-tokenizers with use_regex carry their own built-in GPT-2
// pattern (compiled by transformers.js, not read from the JSON).
function patchPreTokenizers(pt) {
  if (!pt) return;
  if (pt.config?.type === "ByteLevel" && pt.pattern instanceof RegExp) {
    pt.pattern = hfRegExp(new RegExp(onigWhitespace(pt.pattern.source), pt.pattern.flags));
  }
  if (pt.config?.type === "Split" && pt.config.pattern?.Regex !== undefined && pt.pattern instanceof RegExp) {
    pt.pattern = hfRegExp(pt.pattern);
  }
  for (const p of pt.tokenizers ?? []) patchPreTokenizers(p);
}

function patchNormalizers(n) {
  if (!n) return;
  if (["NFC", "NFD", "NFKC", "NFKD"].includes(n.config?.type)) {
    n.normalize = (text) => hfNormalize(text, n.config.type);
  }
  for (const m of n.normalizers ?? []) patchNormalizers(m);
}

export function loadTokenizer(dir) {
  const tokenizerJSON = JSON.parse(readFileSync(join(dir, "tokenizer.json"), "utf8"));
  const tokenizerConfig = JSON.parse(
    readFileSync(join(dir, "tokenizer_config.json"), "utf8"),
  );
  patchRegexes(tokenizerJSON.pre_tokenizer);
  patchRegexes(tokenizerJSON.normalizer);
  const tok = TokenizerLoader.fromPreTrained({ tokenizerJSON, tokenizerConfig });
  patchDecoders(tok.decoder);
  patchPreTokenizers(tok.pre_tokenizer);
  patchNormalizers(tok.normalizer);
  return tok;
}

export function runJobs(tok, jobs) {
  let failed = 0;
  const encode = (jobs.encode ?? []).map((j, i) => {
    try {
      return tok.encode(j.text, { add_special_tokens: j.add_special !== false });
    } catch (e) {
      failed++;
      process.stderr.write(`encode[${i}]: ${e && e.message}\n`);
      return null;
    }
  });
  const decode = (jobs.decode ?? []).map((j, i) => {
    try {
      if (!j.ids || j.ids.length === 0) return "";
      const n = tok.model.vocab.length;
      for (const id of j.ids) {
        if (!Number.isInteger(id) || id < 0 || id >= n || tok.model.vocab[id] === undefined)
          throw new Error(`id ${id} out of range (vocab size ${n})`);
      }
      return tok.decode(j.ids, { skip_special_tokens: !!j.skip_special });
    } catch (e) {
      failed++;
      process.stderr.write(`decode[${i}]: ${e && e.message}\n`);
      return null;
    }
  });
  return { result: { encode, decode }, failed };
}

function writeAll(fd, s) {
  const buf = Buffer.from(s, "utf8");
  let off = 0;
  while (off < buf.length) {
    try {
      off += writeSync(fd, buf, off, buf.length - off);
    } catch (e) {
      if (e.code !== "EAGAIN") throw e;
    }
  }
}

const isMain = process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href;
if (isMain) {
  const dir = process.argv[2];
  if (!dir) {
    process.stderr.write("usage: node tests/tok/ref.mjs TOKENIZER_DIR < jobs.json > results.json\n");
    process.exit(2);
  }
  const tok = loadTokenizer(dir);
  const jobs = JSON.parse(readFileSync(0, "utf8"));
  const { result, failed } = runJobs(tok, jobs);
  writeAll(1, JSON.stringify(result) + "\n");
  process.exit(failed ? 3 : 0);
}
