#!/usr/bin/env node
// node tests/tok/random_strings.mjs SEED N  ->  JSON array of N random strings
//
// Each string is 0..64 Unicode scalar values (any code point except the
// surrogates U+D800..U+DFFF), deterministic for SEED (32-bit integer). The
// code points are drawn from a mix of pools so that the pre-tokenizer paths
// get exercised: ASCII letters/digits/punctuation, spaces, newlines/tabs/CR,
// apostrophe contractions, Latin-1/BMP letters, combining marks, CJK, emoji,
// Unicode spaces and controls, and arbitrary scalar values (incl. astral,
// private-use and unassigned). Some strings are "pure" (a single pool).
import { pathToFileURL } from "node:url";

function mulberry32(seed) {
  let a = seed >>> 0;
  return function () {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const ASCII_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
const DIGITS = "0123456789";
const PUNCT = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";
const UNI_SPACES = [0x00a0, 0x1680, 0x2000, 0x2001, 0x2002, 0x2003, 0x2004, 0x2005, 0x2006, 0x2007, 0x2008, 0x2009, 0x200a,
  0x2028, 0x2029, 0x202f, 0x205f, 0x3000, 0x0085, 0x180e, 0x200b, 0x200c, 0x200d, 0x2060, 0xfeff, 0x000b, 0x000c];
const CONTRACTIONS = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'T", "'RE", "'VE", "'M", "'LL", "'D", "'Re", "'lL"];
const SPECIALISH = ["<s>", "</s>", "<unk>", "<|im_start|>", "<|im_end|>", "<|eot_id|>", "<|begin_of_text|>", "<bos>",
  "<start_of_turn>", "<end_of_turn>", "<|endoftext|>", "<think>", "\u2581", "<0x41>", "<|", "|>"];

export function randomStrings(seed, n) {
  const rnd = mulberry32(seed);
  const ri = (k) => Math.floor(rnd() * k);
  const range = (lo, hi) => lo + ri(hi - lo + 1);
  const fromStr = (s) => s[ri(s.length)];
  const anyScalar = () => {
    for (;;) {
      const c = ri(0x110000);
      if (c < 0xd800 || c > 0xdfff) return String.fromCodePoint(c);
    }
  };
  // pools: [weight, generator]
  const pools = [
    [14, () => fromStr(ASCII_LETTERS)],
    [4, () => fromStr(DIGITS)],
    [4, () => fromStr(PUNCT)],
    [10, () => " "],
    [5, () => "\n"],
    [2, () => "\t"],
    [2, () => "\r\n"],
    [1, () => "\r"],
    [2, () => CONTRACTIONS[ri(CONTRACTIONS.length)]],
    [1, () => SPECIALISH[ri(SPECIALISH.length)]],
    [2, () => String.fromCodePoint(range(0x20, 0x7e))],
    [1, () => String.fromCodePoint(range(0x00, 0x1f))],
    [1, () => String.fromCodePoint(0x7f)],
    [3, () => String.fromCodePoint(range(0x80, 0x24f))], // Latin-1 + Latin Extended
    [2, () => String.fromCodePoint(range(0x300, 0x36f))], // combining marks
    [2, () => String.fromCodePoint(range(0x370, 0x52f))], // Greek, Cyrillic
    [2, () => String.fromCodePoint(range(0x590, 0x6ff))], // Hebrew, Arabic
    [2, () => String.fromCodePoint(range(0x900, 0xdff))], // Indic
    [1, () => String.fromCodePoint(range(0xe00, 0xeff))], // Thai, Lao
    [1, () => String.fromCodePoint(range(0x1100, 0x11ff))], // Hangul jamo
    [3, () => String.fromCodePoint(range(0x3040, 0x30ff))], // kana
    [4, () => String.fromCodePoint(range(0x4e00, 0x9fff))], // CJK
    [2, () => String.fromCodePoint(range(0xac00, 0xd7a3))], // Hangul syllables
    [1, () => String.fromCodePoint(range(0xff00, 0xffef))], // fullwidth/halfwidth
    [3, () => String.fromCodePoint(range(0x1f300, 0x1faff))], // emoji
    [1, () => String.fromCodePoint(range(0x1f1e6, 0x1f1ff))], // regional indicators
    [1, () => String.fromCodePoint([0x200d, 0xfe0f, 0x1f3fb, 0x1f3ff, 0x20e3][ri(5)])], // emoji modifiers
    [2, () => String.fromCodePoint(UNI_SPACES[ri(UNI_SPACES.length)])],
    [1, () => String.fromCodePoint(range(0xe000, 0xf8ff))], // private use
    [1, () => String.fromCodePoint([0xfffd, 0xfffe, 0xffff, 0xfdd0][ri(4)])],
    [6, anyScalar],
  ];
  const total = pools.reduce((a, p) => a + p[0], 0);
  const pickPool = () => {
    let r = ri(total);
    for (const p of pools) {
      if ((r -= p[0]) < 0) return p[1];
    }
    return pools[0][1];
  };
  const out = [];
  for (let i = 0; i < n; i++) {
    // length: bias to short strings, but cover 0..64 scalar values
    const len = rnd() < 0.5 ? ri(17) : ri(65);
    const pure = rnd() < 0.2 ? pickPool() : null; // single-pool string
    const cps = [];
    while (cps.length < len) {
      const piece = (pure ?? pickPool())();
      for (const c of piece) {
        if (cps.length < len) cps.push(c);
      }
    }
    out.push(cps.join(""));
  }
  return out;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  const seed = Number(process.argv[2]);
  const n = Number(process.argv[3]);
  if (!Number.isInteger(seed) || !Number.isInteger(n) || n < 0) {
    process.stderr.write("usage: node tests/tok/random_strings.mjs SEED N\n");
    process.exit(2);
  }
  process.stdout.write(JSON.stringify(randomStrings(seed, n)) + "\n");
}
