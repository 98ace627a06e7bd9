// Error statuses of `inferd serve` through the official client (maxRetries
// 0): run against a server started with --parallel 1 --queue 1 --timeout 3
// and a model that failed to load.
//   node tests/e2e/openai_errors.mjs BASE_URL MODEL BROKEN_MODEL
import OpenAI from "openai";
import http from "node:http";

const [base, model, broken] = process.argv.slice(2);
const client = new OpenAI({ baseURL: base, apiKey: "none", maxRetries: 0, timeout: 60000 });
let failed = 0;
function check(name, ok, detail = "") {
  console.log(`${ok ? "ok  " : "FAIL"} ${name}${detail ? ": " + detail : ""}`);
  if (!ok) failed++;
}
async function expectError(name, cls, status, fn, extra = () => true) {
  try { await fn(); check(name, false, "no error"); }
  catch (e) { check(name, e instanceof cls && e.status === status && extra(e), `${e.constructor.name} ${e.status} ${e.message}`); }
}

// (the server runs with --timeout 6)
// a model that failed to load: listed as failed, requests get 503, /health stays 200
const list = await client.models.list();
const bm = list.data.find((m) => m.id === broken);
check("failed model listed", bm && bm.status === "failed" && bm.error, JSON.stringify(bm));
await expectError("failed model -> 503", OpenAI.InternalServerError, 503,
  () => client.completions.create({ model: broken, prompt: "x", max_tokens: 2 }));
const h = await fetch(base.replace(/\/v1$/, "") + "/health");
check("health stays 200 with a failed model", h.status === 200);

// 405 and 413
await expectError("wrong method -> 405", OpenAI.APIError, 405, () => client.get("/chat/completions"));
await expectError("body too large -> 413", OpenAI.APIError, 413,
  () => client.completions.create({ model, prompt: "x".repeat(9 << 20), max_tokens: 2 }));

// deadline: 504, marked not to be retried
await expectError("deadline -> 504", OpenAI.InternalServerError, 504,
  () => client.completions.create({ model, prompt: "x", max_tokens: 60000, temperature: 0, ignore_eos: true }),
  (e) => e.headers?.get?.("x-should-retry") === "false");

// queue full: one running, one waiting, the third gets 429
async function inFlightNow() {
  const m = await (await fetch(base.replace(/\/v1$/, "") + "/metrics")).text();
  const v = m.match(new RegExp(`inferd_requests_in_flight\\{model="${model}"\\} (\\d+)`));
  return v ? +v[1] : -1;
}
let before = await inFlightNow(), waited = 0;
for (; before !== 0 && waited < 200; waited++) { // earlier requests still finishing
  await new Promise((r) => setTimeout(r, 50));
  before = await inFlightNow();
}
console.log(`     (requests in flight before the holds: ${before}, after ${waited * 50} ms)`);
// each hold on a fresh connection: a pooled keep-alive socket may already
// have been closed by the server's --request-timeout watchdog
function hold() {
  const req = http.request(base.replace(/\/v1$/, "") + "/v1/completions",
    { method: "POST", agent: false, headers: { "Content-Type": "application/json" } });
  req.on("error", () => {});
  req.on("response", (res) => res.resume());
  req.end(JSON.stringify({ model, prompt: "hold", max_tokens: 60000, stream: true, temperature: 0, ignore_eos: true }));
  return req;
}
const holds = [hold(), hold()];
let inFlight = 0;
for (let i = 0; i < 100; i++) { // until both are admitted
  const m = await (await fetch(base.replace(/\/v1$/, "") + "/metrics")).text();
  const v = m.match(new RegExp(`inferd_requests_in_flight\\{model="${model}"\\} (\\d+)`));
  inFlight = v ? +v[1] : -1;
  if (inFlight >= 2) break;
  if (i % 40 === 39) holds.push(hold()); // a hold that did not get in (setup only): send another
  await new Promise((r) => setTimeout(r, 50));
}
console.log(`     (requests in flight before the third: ${inFlight})`);
await expectError("queue full -> 429", OpenAI.RateLimitError, 429,
  () => client.completions.create({ model, prompt: "x", max_tokens: 2 }),
  (e) => e.headers?.get?.("retry-after") === "1");
for (const h of holds) h.destroy();

console.log(failed ? `${failed} checks failed` : "all checks passed");
process.exit(failed ? 1 : 0);
