// End-to-end checks of `inferd serve` with the official `openai` npm client
// (maxRetries 0, so every status is seen). Run by tests/unit/test_server.c:
//   node tests/e2e/openai_client.mjs BASE_URL API_KEY MODEL
// Prints one line per check; exits 1 if any failed.
import OpenAI from "openai";

const [base, key, model, spmModel] = process.argv.slice(2);
const client = new OpenAI({ baseURL: base, apiKey: key, maxRetries: 0, timeout: 60000 });
let failed = 0;
function check(name, ok, detail = "") {
  console.log(`${ok ? "ok  " : "FAIL"} ${name}${detail ? ": " + detail : ""}`);
  if (!ok) failed++;
}
const valid = (s) => Buffer.from(s, "utf8").toString("utf8") === s && !s.includes("\ufffd\ufffd\ufffd\ufffd");

// models
const models = await client.models.list();
check("models.list", models.data.some((m) => m.id === model), JSON.stringify(models.data.map((m) => m.id)));
const one = await client.models.retrieve(model);
check("models.retrieve", one.id === model);

// chat, not streamed, seeded
const msgs = [{ role: "system", content: "You are terse." }, { role: "user", content: "Say something, héllo 你好 🤖" }];
const a = await client.chat.completions.create({ model, messages: msgs, max_tokens: 24, temperature: 0.8, seed: 42 });
const b = await client.chat.completions.create({ model, messages: msgs, max_tokens: 24, temperature: 0.8, seed: 42 });
check("chat non-streamed", a.choices[0].message.role === "assistant" && a.usage.completion_tokens > 0,
  JSON.stringify(a.choices[0].message.content));
check("seeded reproducibility", a.choices[0].message.content === b.choices[0].message.content);

// chat streamed: the concatenation equals the non-streamed text for the same seed
const stream = await client.chat.completions.create({ model, messages: msgs, max_tokens: 24, temperature: 0.8, seed: 42,
  stream: true, stream_options: { include_usage: true } });
let text = "", finish = null, usage = null, chunks = 0, allValid = true;
for await (const ch of stream) {
  chunks++;
  if (ch.usage) usage = ch.usage;
  const c = ch.choices[0];
  if (!c) continue;
  if (c.delta?.content) { text += c.delta.content; allValid &&= valid(c.delta.content); }
  if (c.finish_reason) finish = c.finish_reason;
}
check("chat streamed = non-streamed", text === a.choices[0].message.content, JSON.stringify(text));
check("stream finish and usage", finish === a.choices[0].finish_reason && usage?.completion_tokens === a.usage.completion_tokens,
  `${finish} ${JSON.stringify(usage)}`);
check("stream chunks valid UTF-8", allValid && chunks > 2);

// completions
const c1 = await client.completions.create({ model, prompt: "Once upon a time", max_tokens: 16, temperature: 0 });
check("completions", typeof c1.choices[0].text === "string" && c1.usage.prompt_tokens > 0, JSON.stringify(c1.choices[0].text));
const c2 = await client.completions.create({ model, prompt: [9707, 11, 1879], max_tokens: 8, temperature: 0 });
check("completions with token ids", c2.usage.prompt_tokens === 3);

const c4 = await client.completions.create({ model, prompt: ["Hi there", "Once upon a time"], max_tokens: 16, temperature: 0 });
check("completions with several prompts", c4.choices.length === 2 && c4.choices[1].index === 1 &&
  c4.choices[1].text === c1.choices[0].text, JSON.stringify(c4.choices.map((c) => c.text)));

// stop strings: the text ends before the stop string, which is not emitted
const full = c1.choices[0].text;
if (full.length > 6) {
  const stop = full.slice(Math.floor(full.length / 2), Math.floor(full.length / 2) + 3);
  const c3 = await client.completions.create({ model, prompt: "Once upon a time", max_tokens: 16, temperature: 0, stop: [stop] });
  check("stop string", c3.choices[0].finish_reason === "stop" && full.startsWith(c3.choices[0].text) &&
    !c3.choices[0].text.includes(stop), JSON.stringify([stop, c3.choices[0].text]));
}

// logprobs
const lp = await client.chat.completions.create({ model, messages: msgs, max_tokens: 5, temperature: 0, logprobs: true, top_logprobs: 3 });
const content = lp.choices[0].logprobs?.content ?? [];
check("logprobs", content.length === 5 && content.every((t) => t.logprob <= 0 && t.top_logprobs.length === 3 &&
  t.top_logprobs[0].logprob >= t.top_logprobs[1].logprob), JSON.stringify(content[0]));

// the Responses API, plain and streamed (the same text for the same seed)
const r1 = await client.responses.create({ model, input: "Tell me something", instructions: "Be brief", max_output_tokens: 12,
  temperature: 0.7, seed: 5 });
check("responses.create", typeof r1.output_text === "string" && r1.output_text.length > 0 && r1.usage.output_tokens === 12,
  JSON.stringify(r1.output_text));
const rs = await client.responses.create({ model, input: [{ role: "user", content: "Tell me something" }],
  instructions: "Be brief", max_output_tokens: 12, temperature: 0.7, seed: 5, stream: true });
let rtext = "", types = [], final = null;
for await (const ev of rs) {
  types.push(ev.type);
  if (ev.type === "response.output_text.delta") rtext += ev.delta;
  if (ev.type === "response.completed" || ev.type === "response.incomplete") final = ev.response;
}
check("responses streamed", rtext === r1.output_text && types[0] === "response.created" &&
  types.includes("response.output_text.done") && final?.usage?.output_tokens === 12, JSON.stringify(types.slice(0, 5)));

// a SentencePiece model (byte-fallback pieces): streams equal the plain text, valid UTF-8
if (spmModel) {
  let same = 0, valid8 = true;
  for (let seed = 1; seed <= 6; seed++) {
    const p = await client.completions.create({ model: spmModel, prompt: "Grüße aus Köln 🤖", max_tokens: 24, temperature: 1.0, seed });
    const st = await client.completions.create({ model: spmModel, prompt: "Grüße aus Köln 🤖", max_tokens: 24, temperature: 1.0, seed,
      stream: true });
    let t = "";
    for await (const ch of st) { const x = ch.choices[0]?.text ?? ""; valid8 &&= valid(x); t += x; }
    same += t === p.choices[0].text;
  }
  check("byte-fallback model: 6 streams equal the plain text", same === 6 && valid8, `${same}/6`);
}

// errors surface as the SDK's classes
async function expectError(name, cls, status, fn) {
  try { await fn(); check(name, false, "no error"); }
  catch (e) { check(name, e instanceof cls && e.status === status, `${e.constructor.name} ${e.status} ${e.message}`); }
}
await expectError("unknown model -> 404", OpenAI.NotFoundError, 404,
  () => client.chat.completions.create({ model: "no-such-model", messages: msgs }));
await expectError("bad field type -> 400", OpenAI.BadRequestError, 400,
  () => client.chat.completions.create({ model, messages: msgs, temperature: "hot" }));
await expectError("n=2 -> 400", OpenAI.BadRequestError, 400,
  () => client.chat.completions.create({ model, messages: msgs, n: 2 }));
await expectError("max_tokens 0 -> 400", OpenAI.BadRequestError, 400,
  () => client.completions.create({ model, prompt: "x", max_tokens: 0 }));
const bad = new OpenAI({ baseURL: base, apiKey: "wrong-key", maxRetries: 0 });
await expectError("bad key -> 401", OpenAI.AuthenticationError, 401, () => bad.models.list());

console.log(failed ? `${failed} checks failed` : "all checks passed");
process.exit(failed ? 1 : 0);
