#!/usr/bin/env node
// Generates tests/tok/corpus.json: a JSON array of test strings for the
// tokenizer exactness tests. Deterministic (fixed-seed PRNG, no clock, no
// environment): `node tests/tok/make_corpus.mjs > tests/tok/corpus.json`
// or `node tests/tok/make_corpus.mjs --write` (writes next to this script).
// The llama.cpp vectors in shared/fixtures/vocab/*.inp are NOT copied here;
// the test reads them from the fixtures.
import { writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";

// ---- deterministic PRNG (mulberry32) ----
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
const rnd = mulberry32(0x70c0ffee);
const ri = (n) => Math.floor(rnd() * n); // 0..n-1
const pick = (arr) => arr[ri(arr.length)];
const cp = (...c) => String.fromCodePoint(...c);

const out = [];
const seen = new Set();
function add(...xs) {
  for (const x of xs.flat()) {
    if (typeof x !== "string") throw new Error("non-string: " + x);
    if (seen.has(x)) continue;
    seen.add(x);
    out.push(x);
  }
}

// ---------------------------------------------------------------- basics
add("");
// every printable ASCII char alone, every C0 control, DEL
for (let c = 0x00; c <= 0x7f; c++) add(cp(c));
// single non-ASCII chars of several UTF-8 lengths / categories
add([
  "é", "ß", "ÿ", "Ā", "ı", "İ", "ſ", "Ω", "Ω", "Å", "Å", "µ", "μ", "ﬁ", "ｱ", "ア", "中", "한", "ᄀ", "ا", "א",
  "अ", "ก", "Ж", "λ", "€", "£", "¥", "©", "®", "™", "°", "±", "×", "÷", "—", "–", "…", "•", "·", "¶", "§",
  "\u00a0", "\u00ad", "\u0085", "\u2028", "\u2029", "\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\ufffd",
  "\ufffe", "\uffff", "\ue000", "\uf8ff", cp(0xf0000), cp(0x10fffd), cp(0x10ffff), cp(0x1fffe),
  "😀", "🙂", "👍", "🇺", "❤", "❤️", "✓", "★", "☃", "♥", "\u0301", "\u0308", "\u20e3", "\ufe0f", "\ufe0e",
  cp(0x1d400), cp(0x10330), cp(0x20000), cp(0x12000), cp(0x1f9d1), cp(0xe0041), cp(0xe007f),
  "\u0080", "\u009f", "\u00a1", "\u00bf", "\u02bc", "\u2019", "\u2018", "\u201c", "\u201d", "\u3000", "\u3001", "\u3002",
  "▁", "▁▁", "Ġ", "Ċ", "ĉ", "<0x41>", "<0x0A>", "<0xFF>",
]);

// ---------------------------------------------------------------- scripts
const SCRIPTS = [
  // Chinese
  "你好，世界！", "我爱自然语言处理。", "今天天气很好，我们去公园散步吧。", "中华人民共和国成立于1949年10月1日。",
  "機器學習是人工智慧的一個分支。", "他说：“这不可能！”", "《红楼梦》是中国古典四大名著之一", "一二三四五六七八九十百千万亿",
  "𠀀𠀁𠀂𪚥𰻞", "龘靐齉齾爩鱻麤龗灪龖厵滟爨癵驫麣纞虋讟钃鸜麷鞻韽顟顠饙饙騳騳飝",
  // Japanese
  "こんにちは世界", "私は東京に住んでいます。", "カタカナとひらがなと漢字", "ｶﾀｶﾅ ﾊﾝｶｸ", "日本語の文章を書く。ですます調。",
  "ガギグゲゴ", "ガギグゲゴ", "〜ー・「」『』【】", "ｱｲｳｴｵ", "ゔゞゝヽヾ",
  // Korean
  "안녕하세요 세계", "대한민국의 수도는 서울입니다.", "한국어 형태소 분석기", "\u1100\u1161\u11a8\u1100\u1161", "ㄱㄴㄷㄹㅁㅂㅅ",
  "\u110b\u1161\u11ab\u1102\u1167\u11bc", // decomposed 안녕 (NFC composes)
  // Arabic
  "مرحبا بالعالم", "اللغة العربية جميلة جداً.", "بِسْمِ اللَّهِ الرَّحْمَٰنِ الرَّحِيمِ", "٠١٢٣٤٥٦٧٨٩", "هذا نص عربي 123 مع أرقام",
  "ﻻ ﻷ ﷲ ﷺ", "فارسی: سلام دنیا ۱۲۳۴", "اردو: ہیلو دنیا",
  // Hebrew
  "שלום עולם", "בְּרֵאשִׁית בָּרָא אֱלֹהִים", "עברית ו-English מעורבים", "\u05e9\u05c1\u05b8", "\u202bRTL\u202c \u200fmark\u200e",
  // Devanagari and other Indic
  "नमस्ते दुनिया", "हिन्दी भाषा भारत की राजभाषा है।", "क्षत्रिय ज्ञान श्री", "०१२३४५६७८९", "मराठी: नमस्कार",
  "বাংলা ভাষা", "தமிழ் மொழி", "తెలుగు", "ಕನ್ನಡ", "മലയാളം", "ગુજરાતી", "ਪੰਜਾਬੀ", "ଓଡ଼ିଆ", "සිංහල",
  // Thai, Lao, Khmer, Myanmar, Tibetan
  "สวัสดีชาวโลก", "ภาษาไทยไม่มีการเว้นวรรคระหว่างคำ", "๑๒๓๔๕", "ສະບາຍດີ", "ជំរាបសួរ", "မင်္ဂလာပါ", "བཀྲ་ཤིས་བདེ་ལེགས།",
  // Cyrillic
  "Привет, мир!", "Съешь же ещё этих мягких французских булок, да выпей чаю.", "ЁЛКА ёлка", "Українська мова: ґ є і ї",
  "Српски језик", "Қазақ тілі", "ПРИВЕТ МИР", "й", "и\u0306",
  // Greek
  "Γειά σου Κόσμε", "Ελληνικά: άέήίόύώ ΐΰ", "ἐν ἀρχῇ ἦν ὁ λόγος", "ΣΊΣΥΦΟΣ σίσυφος ς", "αβγδεζηθικλμνξοπρστυφχψω",
  // others
  "Հայերեն", "ქართული ენა", "አማርኛ", "ᚠᚢᚦᚨᚱᚲ", "ᐃᓄᒃᑎᑐᑦ", "ꦗꦮ", "Tiếng Việt có dấu", "Tie\u0302\u0301ng Vie\u0323\u0302t",
  "Ελληνικά and English and Русский", "Türkçe: İstanbul ışık ĞÜŞÖÇ", "Deutsch: Straße, Größe, ÄÖÜ äöü ẞ",
  "Français: «ça», l'été, où, Noël", "Español: ¿Qué tal? ¡Hola! mañana", "Português: ação, pão, você", "Polski: zażółć gęślą jaźń",
  "Čeština: příliš žluťoučký kůň", "Íslenska: þ ð æ", "Norsk: blåbærsyltetøy", "Română: țară, șoarece", "Magyar: árvíztűrő tükörfúrógép",
];
add(SCRIPTS);
for (const s of SCRIPTS) add(" " + s, s + " ", s + "\n");

// ---------------------------------------------------------------- emoji
const EMOJI = [
  "😀😃😄😁", "I ❤️ NY", "👍🏻👍🏼👍🏽👍🏾👍🏿", "👨‍👩‍👧‍👦", "👩‍❤️‍💋‍👨", "🏳️‍🌈", "🏴‍☠️", "🇺🇸🇬🇧🇯🇵🇩🇪🇫🇷🇨🇳", "🇺🇸", "🇦🇦🇦",
  "🏴󠁧󠁢󠁥󠁮󠁧󠁿", "🏴󠁧󠁢󠁳󠁣󠁴󠁿", "1️⃣2️⃣3️⃣#️⃣*️⃣", "🧑🏽‍💻", "👩🏿‍🚀", "🤷‍♂️", "🤷🏻‍♀️", "☺︎ ☺️", "©︎ ®️", "🫠🫡🫶",
  "🙂 hello 🙂", "emoji😀inside", "😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀😀", "🐶🐱🐭🐹🐰🦊🐻🐼", "🧬🧪🔬", "⌚⌛⏰", "🀄🃏", "🈶🈚🈸",
  "\u{1F468}\u200d\u{1F469}\u200d\u{1F467}", "\u{1F468}\u200d", "\u200d\u{1F468}", "👁‍🗨", "💁🏽‍♀️💁🏽‍♀️", "🏊‍♀️🏋️‍♂️",
  "✌🏽✋🏿", "🫱🏻‍🫲🏿", "🧔‍♀️", "🐈‍⬛", "😶‍🌫️", "❤️‍🔥", "🙂\n🙂", "(╯°□°)╯︵ ┻━┻", "¯\\_(ツ)_/¯", "ʕ•ᴥ•ʔ",
];
add(EMOJI);
for (const s of EMOJI.slice(0, 20)) add(" " + s + " ", "x" + s + "y");

// ---------------------------------------------------------------- combining marks, normalization
add([
  "e\u0301", "E\u0301", "cafe\u0301", "café", "A\u030a", "\u212b", "\u2126", "\u1e9b\u0323", "o\u0308\u0304", "q\u0307\u0323",
  "\u0301abc", "\u0301", " \u0301", "\n\u0301", "a\u0300\u0301\u0302\u0303\u0304\u0305\u0306\u0307\u0308\u0309\u030a",
  "Z̴̧̛̖̯̖̥̜̭̭̖̬̙͍̀̈́̋̈́̓̀̈́̎͘͝a̷̧̨̖̹̪̬͔̗̘͈͓̝̬̐̆̒͌̑̄̿̈́͘l̸̨̛̤͔̮̩̣͈̩̮̈́̈́̃͗͐̽̓̕g̷̢̛̗̫̥̝͙̰̹͕̽̀̌̎̄͛̾͜o̶̧̗͇̗̩̯͂̀͋͂̅̂̅̓̇",
  "n\u0303", "\u00f1", "\u1100\u1161", "\u0915\u094d\u0937", "\u0e01\u0e34\u0e4a", "a\u20dd", "1\u20e3", "\u05d0\u05b7",
  "ﬁﬂﬀ", "Ｈｅｌｌｏ　Ｗｏｒｌｄ", "①②③", "ⅠⅡⅢⅣ", "x²+y³=z⁴", "H₂O", "½ ¼ ¾ ⅓", "㍻ ㌔ ㎏", "ǅ ǆ Ǆ",
  "\u0041\u030a\u0301", "\u00c5\u0301", "\u1e0b\u0323", "\u1e0d\u0307", "\u0064\u0323\u0307", "\u0064\u0307\u0323",
  "\u0958", "\u0915\u093c", "\u2fd5", "\uf900", "\u2000", "\u1e9e", "\u0390", "\u03b9\u0308\u0301",
]);

// ---------------------------------------------------------------- code
const CODE = [
  `#include <stdio.h>\n\nint main(void) {\n    printf("Hello, world!\\n");\n    return 0;\n}\n`,
  `static int add(int a, int b) { return a + b; }`,
  `for (size_t i = 0; i < n; ++i) {\n\tsum += x[i] * y[i];\n}`,
  `#define MAX(a, b) ((a) > (b) ? (a) : (b))\n#ifdef __GNUC__\n#  pragma once\n#endif`,
  `struct node { struct node *next; int32_t val; };\ntypedef struct node node_t;`,
  `if (p == NULL || *p != '\\0') { errno = EINVAL; return -1; }`,
  `x <<= 3; y >>= 2; z ^= ~w; a &&= b || !c; p->q.r[4] = &s;`,
  `def fib(n):\n    """Return the n-th Fibonacci number."""\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n`,
  `class Foo(Bar):\n    def __init__(self, *args, **kwargs):\n        super().__init__(*args, **kwargs)\n        self._x: int = 0\n`,
  `print(f"{name!r:>10} {value:.3f} {{literal}}")`,
  `import numpy as np\nx = np.arange(10).reshape(2, 5)\nprint(x @ x.T)`,
  `lambda x: [y**2 for y in x if y % 2 == 0]`,
  `async def main():\n\tawait asyncio.sleep(0.5)\n\n\nif __name__ == "__main__":\n    asyncio.run(main())`,
  `{"name": "inferd", "version": "0.1.0", "tags": ["llm", "c"], "n": 42, "pi": 3.14159, "ok": true, "nil": null}`,
  `{\n  "a": {\n    "b": [1, 2, 3],\n    "c": "\\u00e9\\n"\n  }\n}`,
  `[{"id":1,"text":"héllo"},{"id":2,"text":"wörld"}]`,
  `<!DOCTYPE html>\n<html lang="en">\n<head><meta charset="utf-8"><title>Test</title></head>\n<body><p class="x">Hi &amp; bye &lt;3</p></body>\n</html>`,
  `<div id="main"><span style="color:red">red</span><br/><img src="a.png" alt=""></div>`,
  `<script>const a = () => { return 1 <= 2 && 3 >= 2; };</script>`,
  `SELECT id, name FROM users WHERE age >= 18 AND name LIKE '%son' ORDER BY id DESC;`,
  `fn main() {\n    let v: Vec<u8> = vec![1, 2, 3];\n    println!("{:?}", v);\n}`,
  `package main\n\nimport "fmt"\n\nfunc main() {\n\tfmt.Println("hi")\n}`,
  `$ ls -la | grep -E '^d' | awk '{print $9}' > dirs.txt 2>&1`,
  `const re = /^(?:[a-z0-9!#$%&'*+/=?^_\`{|}~-]+)@example\\.com$/i;`,
  `    \n\t\t  // indented comment with trailing spaces   \n`,
  `a=b+c-d*e/f%g^h|i&j~k!l?m:n;o,p.q`,
  `x = [[1, 2], [3, 4]]; y = {'k': (5, 6)}`,
  `#!/bin/sh\nset -eu\nfor f in *.c; do cc -O2 -c "$f"; done\n`,
  `\\begin{equation} E = mc^2 \\end{equation} $\\alpha + \\beta_{i}^{2}$`,
  `0x1F 0b1010 0o777 1e-9 6.02e23 -0.0 +1 1_000_000 0xDEADBEEF`,
];
add(CODE);

// ---------------------------------------------------------------- whitespace
const WS = [" ", "\t", "\n", "\r", "\r\n", "\v", "\f", "\u00a0", "\u3000", "\u2003", "\u0085", "\u2028", "\u2029",
  "\u1680", "\u2000", "\u2001", "\u2002", "\u2004", "\u2005", "\u2006", "\u2007", "\u2008", "\u2009", "\u200a", "\u202f", "\u205f",
  "\u180e", "\u200b", "\ufeff", "\u200c", "\u200d"];
for (const n of [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 15, 16, 17, 31, 32, 33, 64, 100, 257]) {
  add(" ".repeat(n), "\n".repeat(n), "\t".repeat(n), "\r\n".repeat(n), "\r".repeat(n));
  add("a" + " ".repeat(n) + "b", "a" + "\n".repeat(n) + "b", "a" + "\t".repeat(n) + "b");
  add(" ".repeat(n) + "word", "word" + " ".repeat(n), "\n".repeat(n) + "word", "word" + "\n".repeat(n));
}
for (const w of WS) {
  add(w, w + w + w, "a" + w + "b", w + "a", "a" + w, "a" + w + w + "b", "hello" + w + "world", w + " " + w + "x", "x " + w + " ");
}
add([
  " \n", "\n ", " \n ", "\n \n", "  \n\n  ", "\t\n", "\n\t", " \t \n \t ", "\r\n\r\n\r\n", "\n\r", "\r \n", " \r\n ",
  "a\r\nb\r\n\r\nc", "line1\nline2\n\nline4\n\n\nline7", "\t\tindented\n\t\t\tmore\n\tless", "  x  y   z    w     ",
  "trailing\t\t", "\t\tleading", "mixed \t \n \r\n \u00a0 \u3000 end", "   \n   \n   ", "\n\n\n\n\n\n\n\nfoo\n\n\n\n\n\n\n\n",
  " !", "  !", "   !", "\n!", " \n!", "! ", "!  ", "a  ", "  a", " a ", "  a  ", "a \n", "a\n ", "1  2", "1\n\n2",
  ".\n\n\n", "...\n   ", "x\n\n \n\n y", "word \nword", "word\n word", "word \n word", "(\n)", "{\n\t}", " ' ", " '\n",
  " ".repeat(5) + "\n".repeat(5) + "\t".repeat(5) + " ".repeat(5),
]);

// ---------------------------------------------------------------- numbers
for (let d = 1; d <= 20; d++) {
  let s = "";
  for (let i = 0; i < d; i++) s += String((i * 7 + d) % 10);
  add(s, "x" + s, s + "x", " " + s, "$" + s, s + "%", "-" + s, s + "." + s.slice(0, 3));
  add("1".repeat(d), "9".repeat(d), "0".repeat(d));
}
add([
  "1,234", "12,345,678", "1,234,567,890.12", "1.234.567,89", "1 234 567", "1'234'567", "1_000_000", "3.14159265358979",
  "0.000001", "-273.15", "+49 30 1234567", "(555) 123-4567", "2024-01-15", "15/01/2024", "12:34:56", "10:30pm",
  "v1.2.3", "192.168.0.1", "1e10", "1E-5", "6.022×10²³", "$1,000.00", "€12,50", "¥100", "100%", "50km/h", "3rd 21st 42nd 100th",
  "123abc456def7890", "a1b22c333d4444e55555", "1+1=2", "2^64 = 18446744073709551616", "-1-2-3", "1..10", "1...", "007",
  "٣٤٥", "१२३", "１２３４５", "²³¹", "¼½¾", "ⅫⅩⅣ", "𝟎𝟏𝟐𝟑", "〇一二三", "①②", "١٢٣abc", "12३४", "0x7fffffff",
  "3.", ".5", "1.2.3.4.5.6.7.8.9", "9,99", "99.99.99", "12345678901234567890123456789012345678901234567890",
]);

// ---------------------------------------------------------------- contractions
const CONTR = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d"];
for (const c of CONTR) {
  const variants = [c, c.toUpperCase(), c[0] + c[1].toUpperCase() + c.slice(2), c.slice(0, -1) + c.slice(-1).toUpperCase()];
  for (const v of new Set(variants)) {
    add("it" + v, "IT" + v, "x" + v + " y", v, " " + v, v + "s", "'" + v, "word" + v + "word", "9" + v, "it\u2019" + v.slice(1));
  }
}
add([
  "I'm sure you're right, it's what we'd've done and they'll see.", "DON'T SHOUT, I'LL HEAR YOU.", "Don'T mIxEd CaSe'S",
  "rock 'n' roll", "'tis the season", "O'Neill's ma'am", "y'all'd've", "it''s", "it'", "'", "''", "'''", "' s", "it 's",
  "the '90s", "students' books", "\"quoted\" 'single' `back`", "it’s don’t you’re", "L'été", "l'homme c'est", "'S'T'RE'VE'M'LL'D",
  "we've we'VE WE'Ve", "'ll'll'll", "abc'", "'abc", "a'b'c'd", "ʼs", "shouldn't've", "I'd'nt",
]);

// ---------------------------------------------------------------- special tokens
const SPECIAL = {
  llama3: ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|eom_id|>",
    "<|python_tag|>", "<|finetune_right_pad_id|>", "<|reserved_special_token_0|>", "<|reserved_special_token_5|>", "<|reserved_special_token_250|>"],
  qwen3: ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>", "<|box_end|>",
    "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
    "<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>",
    "<|file_sep|>", "<tool_response>", "</tool_response>", "<think>", "</think>"],
  llama2: ["<s>", "</s>", "<unk>"],
  gemma3: ["<bos>", "<eos>", "<pad>", "<unk>", "<mask>", "<start_of_turn>", "<end_of_turn>", "<start_of_image>", "<end_of_image>",
    "<image_soft_token>", "[multimodal]", "<unused0>", "<unused1>", "<unused99>", "<unused6241>", "<table>", "</table>", "<b>",
    "</b>", "<s>", "</s>", "<h1>", "<code>", "</code>", "<div>", "</div>", "<li>", "<bbox>"],
};
const ALLSPECIAL = [...new Set(Object.values(SPECIAL).flat())];
for (const t of ALLSPECIAL) {
  add(t, " " + t, t + " ", "Hello" + t + "world", "Hello " + t + " world", t + t, t + "\n" + t, "\n" + t + "\n", "x" + t + "  y");
}
add([
  "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are helpful.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
  "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n4<|im_end|>",
  "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHello [/INST] Hi</s><s>[INST] Bye [/INST]",
  "<bos><start_of_turn>user\nHello<end_of_turn>\n<start_of_turn>model\nHi there<end_of_turn>\n",
  "<tool_call>\n{\"name\": \"f\", \"arguments\": {}}\n</tool_call>", "<|fim_prefix|>def f(<|fim_suffix|>)\n<|fim_middle|>",
  // near misses
  "<|im_start", "<|im_start|x>", "<|im_start |>", "< |im_start|>", "<|IM_START|>", "<|im_start||>", "<<|im_start|>>", "|im_start|",
  "<|im_end", "im_end|>", "<|im_end|>>", "<|begin_of_text", "<|begin_of_text|", "<|begin_of_text|>|", "<<|eot_id|>", "<|eot_id|>>",
  "<|eot_id |>", "<|EOT_ID|>", "<|reserved_special_token_|>", "<|reserved_special_token_999|>", "<|reserved_special_token_-1|>",
  "<s", "s>", "< s>", "<s >", "<S>", "<s/>", "<\\s>", "</s", "</ s>", "<<s>>", "<ss>", "<unk", "<UNK>", "<unk >", "<start_of_turn",
  "<start_of_turn >", "<start-of-turn>", "<end_of_turn>>", "<unused>", "<unused-1>", "<unused999999>", "<bos", "<eos >", "<|>", "<||>",
  "<|endoftext|", "<|endoftext|>>", "<|endoftext|><|endoftext|><|endoftext|>", "<think", "</think", "<think>>", "<tool_call",
  "<0x41>", "<0x0a>", "<0x00>", "<0xZZ>", "▁<s>", "▁▁▁", "▁\n▁", "<|im_start|><|im_end|><s></s><bos><eos><unk><pad>",
  "<table><tr><td>1</td><td>2</td></tr></table>", "<b>bold</b> <i>it</i> <u>u</u> <s>strike</s> <sup>2</sup>",
]);

// ---------------------------------------------------------------- long words
const LONGLETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
{
  let mixed = "";
  for (let i = 0; i < 2000; i++) mixed += LONGLETTERS[ri(LONGLETTERS.length)];
  add("a".repeat(2000), mixed, " " + mixed, "x".repeat(300), "ab".repeat(1000), "abc".repeat(700));
  add("中".repeat(500), "한".repeat(500), "😀".repeat(300), "9".repeat(2000), " ".repeat(2000), "\n".repeat(2000), ".".repeat(1000));
  add("é".repeat(800), "e\u0301".repeat(400), "Ж".repeat(1000), "-".repeat(500), "=".repeat(200), "_".repeat(300), "'s".repeat(300));
  let mixedU = "";
  const pool = "aéЖλ中한😀1 \n.ß";
  const poolCps = [...pool];
  for (let i = 0; i < 1500; i++) mixedU += poolCps[ri(poolCps.length)];
  add(mixedU);
  add("Supercalifragilisticexpialidocious", "pneumonoultramicroscopicsilicovolcanoconiosis",
    "Donaudampfschifffahrtselektrizitätenhauptbetriebswerkbauunterbeamtengesellschaft",
    "Llanfairpwllgwyngyllgogerychwyrndrobwllllantysiliogogogoch", "antidisestablishmentarianism".toUpperCase());
}

// ---------------------------------------------------------------- URLs, markdown, misc text
add([
  "https://www.example.com/path/to/page?query=1&lang=en#section", "http://localhost:8080/api/v1/items/42",
  "ftp://user:pass@host.example.org:21/file.tar.gz", "mailto:someone@example.com", "user.name+tag@sub.domain.co.uk",
  "https://ja.wikipedia.org/wiki/日本語", "https://example.com/%E4%B8%AD%E6%96%87?q=a%20b", "www.google.com", "C:\\Users\\me\\file.txt",
  "/usr/local/lib/libfoo.so.1.2.3", "~/.config/inferd/config.toml", "git@github.com:owner/repo.git",
  "# Heading 1\n## Heading 2\n\n- item one\n- item two\n  - nested\n\n1. first\n2. second\n",
  "**bold** *italic* ~~strike~~ `code` [link](https://x.y) ![img](a.png)", "> quote\n> > nested quote\n\n---\n\n***",
  "```python\nprint('hi')\n```\n", "| a | b |\n|---|:-:|\n| 1 | 2 |\n", "- [ ] todo\n- [x] done", "\\*not italic\\*",
  "Hello world", " Hello world", "Hello World", "HELLO WORLD", "hello, world!", "Hello, world! How are you today?",
  "The quick brown fox jumps over the lazy dog.", "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG",
  "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et dolore magna aliqua.",
  "What's up?! ... (yes) [no] {maybe} <tag> \"quote\" 'apos' `tick` ~tilde~ @at #hash $dollar %pct ^caret &amp *star",
  "!!!???...,,,;;;:::", "—–-‐‑‒―", "«»‹›„“”‚‘’", "¡¿", "…", "....", "!?!?", "?!", "a.b.c", "e.g. i.e. etc.", "Mr. Smith & Co.",
  "helloмир", "abcαβγ", "東京tower", "Москва2024", "日本語English한국어", "naïve café résumé", "İstanbul'da", "straße STRASSE",
  "ΑΒΓ abc АБВ", "x中y文z", "a😀b", "1中2", "中,文", "日本。English.", "Hello世界", "привет世界hello", "עבריתEnglish", "العربيةEnglish",
]);

// ---------------------------------------------------------------- control and odd characters
add([
  "\u0001\u0002\u0003", "a\u0000b", "\u0000", "\u0000\u0000", "tab\there", "bell\u0007", "esc\u001b[31mred\u001b[0m", "del\u007f",
  "x\u0008y", "\u001f\u001e\u001d", "\u007f\u0080\u0081", "\u009b31m", "soft\u00adhyphen", "zero\u200bwidth", "zw\u200cnj", "zw\u200dj",
  "word\u2060joiner", "bom\ufeffinside", "\ufeffstart", "rep\ufffdlacement", "\ufffd\ufffd\ufffd", "pua\ue000\ue001\uf8ff",
  cp(0xf0000, 0xf0001, 0x10fffd), "nonchar\ufdd0\ufdef\ufffe\uffff", "tag" + cp(0xe0020, 0xe0041, 0xe007f), "\u2066isolate\u2069",
  "\u202elreversed\u202c", "variation\ufe00\ufe0f", "math " + cp(0x1d400, 0x1d401, 0x1d402, 0x1d7ce), "gothic " + cp(0x10330, 0x10331),
  "cuneiform " + cp(0x12000, 0x12001), "linear b " + cp(0x10000, 0x10001), "music " + cp(0x1d11e), "cjk ext b " + cp(0x20000, 0x2a6d6),
  "egypt " + cp(0x13000, 0x13001), "domino " + cp(0x1f030), "unassigned " + cp(0x0378, 0x0380, 0x2fffd, 0x3fffd, 0xe0000),
  "\u0378", cp(0x1fbf0, 0x1fbf9), cp(0x1e900, 0x1e922), cp(0x16a40), "\u0600\u0601\u06dd", "\u17b4\u17b5", "\u115f\u1160\u3164\uffa0",
]);

// ---------------------------------------------------------------- Unicode-version and \s edge cases
// Where JavaScript and the HF Rust library disagree unless ref.mjs patches it:
// U+0085 / U+FEFF (regex \s), letters/digits new in Unicode 17 (regex \p{L}
// / \p{N}), marks and compositions unknown to Unicode 9 NFC tables (Qwen).
add([
  "a\u0085b", "\u0085", " \u0085 \u0085x", "x\u0085's", "I\u0085'D", "\ufeff\"B", "\ufeff \ufeffx", "  \ufeff3", "a \ufeff",
  "\u088f's", "a\ua7ceb", "x" + cp(0x323b0, 0x323b1) + "y", cp(0x323b0) + "'s " + cp(0x323b0), "1" + cp(0x11de0, 0x11de1) + "2",
  cp(0x16ff4) + "5", "e\u0301\u1ac0x", "a\u0345\u07fd", "a\u07fd\u0334", "a\u1dfa\u0301\u0300", cp(0x11382, 0x113c9),
  cp(0x105d2) + "\u0307", cp(0x1611e, 0x1611e, 0x1611f), cp(0x16d63, 0x16d67, 0x16d67), "it'\u017f", "it'\u212a", "IT'\u0130",
]);

// ---------------------------------------------------------------- random combinations of fragments
const FRAG = [
  ...SCRIPTS, ...EMOJI, ...ALLSPECIAL, ...CONTR, ...WS, "Hello", "world", "the", "The", "a", "I", "don't", "123", "4567", "3.14",
  "1,000", "foo_bar", "fooBar", "FOO", "x", "!", "?", ".", ",", ":", ";", "(", ")", "[", "]", "{", "}", "\"", "'", "`", "-", "_", "/",
  "\\", "|", "@", "#", "$", "%", "^", "&", "*", "+", "=", "<", ">", "~", "...", "--", "->", "=>", "::", "//", "/*", "*/", "  ", "   ",
  "\n\n", "\t\t", "\r\n", "é", "ß", "ñ", "中文", "日本", "한국", "ру", "ελ", "عر", "עב", "हि", "ไท", "😀", "👍🏽", "🇯🇵", "e\u0301",
  "\u00a0", "\u3000", "\ufffd", "\u200d", "\ue000", cp(0x1d400), cp(0x20000), "\u0001", "\u007f", "https://a.b/c", "<|im", "end|>", "<s",
];
const SEPS = ["", "", "", " ", " ", " ", "  ", "\n", "\t", "\r\n", ", ", ". ", "\n\n"];
const nBefore = out.length;
let guard = 0;
while (out.length < nBefore + 500 && guard++ < 100000) {
  const k = 2 + ri(6);
  let s = "";
  for (let i = 0; i < k; i++) s += (i ? pick(SEPS) : "") + pick(FRAG);
  if (rnd() < 0.15) s = " " + s;
  if (rnd() < 0.15) s = s + pick([" ", "\n", "  ", "\t"]);
  add(s);
}

// ---------------------------------------------------------------- emit
for (const s of out) {
  // every string must survive a UTF-8 round trip (no lone surrogates)
  if (Buffer.from(s, "utf8").toString("utf8") !== s) throw new Error("not valid Unicode: " + JSON.stringify(s));
}
const json = "[\n" + out.map((s) => JSON.stringify(s)).join(",\n") + "\n]\n";
if (process.argv.includes("--write")) {
  const p = join(dirname(fileURLToPath(import.meta.url)), "corpus.json");
  writeFileSync(p, json);
  process.stderr.write(`wrote ${out.length} strings to ${p}\n`);
} else {
  process.stdout.write(json);
}
