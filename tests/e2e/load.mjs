// Mixed load against `inferd serve`: N concurrent clients for S seconds,
// chat and completions, streamed and not, some that give up early, some
// bad requests; /health is polled throughout.
//   node tests/e2e/load.mjs BASE_URL MODEL CLIENTS SECONDS [API_KEY]
// Prints a JSON summary; exits 1 if a request ended without a result or a
// clear error, if a stream was malformed, or if /health said 503.
const [base, model, nClients, secs] = [process.argv[2], process.argv[3], +process.argv[4], +process.argv[5]];
const key = process.argv[6];
const until = Date.now() + secs * 1000;
const stats = { ok: 0, streamed: 0, rejected429: 0, timeouts504: 0, bad400: 0, aborted: 0, unclear: 0, badStream: 0,
  healthFailures: 0, healthChecks: 0 };
let rnd = 12345;
const rand = (n) => { rnd = (rnd * 1103515245 + 12345) & 0x7fffffff; return (rnd >> 16) % n; };

async function one() {
  const kind = rand(10);
  const stream = rand(2) === 1;
  const chat = rand(2) === 1;
  const ctl = new AbortController();
  const body = chat
    ? { model, messages: [{ role: "user", content: "hello " + rand(1000) }], max_tokens: 1 + rand(40), stream, temperature: rand(2) }
    : { model, prompt: "once " + rand(1000), max_tokens: 1 + rand(40), stream, temperature: rand(2) };
  if (kind === 0) body.max_tokens = -1;                      // a bad request
  const giveUp = kind === 1 ? setTimeout(() => ctl.abort(), rand(200)) : null;
  try {
    const r = await fetch(`${base}/v1/${chat ? "chat/completions" : "completions"}`, {
      method: "POST", headers: { "Content-Type": "application/json", ...(key ? { Authorization: `Bearer ${key}` } : {}) }, body: JSON.stringify(body), signal: ctl.signal });
    const text = await r.text();
    if (r.status === 200) {
      if (stream) {
        const events = text.split("\n\n").filter((e) => e.startsWith("data: "));
        const last = events[events.length - 1];
        if (last !== "data: [DONE]") stats.badStream++;
        for (const e of events.slice(0, -1)) JSON.parse(e.slice(6));
        stats.streamed++;
      } else JSON.parse(text);
      stats.ok++;
    } else if (r.status === 429) {
      stats.rejected429++;
      await new Promise((res) => setTimeout(res, 100 + rand(400))); // as clients honouring Retry-After do
    }
    else if (r.status === 504) stats.timeouts504++;
    else if (r.status === 400 && JSON.parse(text).error?.message) stats.bad400++;
    else stats.unclear++;
  } catch (e) {
    if (e.name === "AbortError") stats.aborted++;
    else { stats.unclear++; console.error(String(e)); }
  } finally {
    if (giveUp) clearTimeout(giveUp);
  }
}

async function client() { while (Date.now() < until) await one(); }
async function health() {
  while (Date.now() < until) {
    const r = await fetch(`${base}/health`).catch(() => null);
    stats.healthChecks++;
    if (!r || r.status !== 200) stats.healthFailures++;
    await new Promise((res) => setTimeout(res, 500));
  }
}
await Promise.all([health(), ...Array.from({ length: nClients }, client)]);
console.log(JSON.stringify(stats));
process.exit(stats.unclear || stats.badStream || stats.healthFailures ? 1 : 0);
