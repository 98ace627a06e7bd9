// HTTP load generator for `make bench`: C concurrent clients stream chat
// completions for S seconds; reports aggregate generated tokens/s and
// time-to-first-token / inter-token latency p50/p99 (milliseconds).
//   node bench/http_bench.mjs BASE_URL MODEL CLIENTS SECONDS MAX_TOKENS
const [base, model, C, S, T] = [process.argv[2], process.argv[3], +process.argv[4], +process.argv[5], +process.argv[6]];
const until = Date.now() + S * 1000;
const ttft = [], itl = [];
let tokens = 0, errors = 0, n = 0;

async function one(i) {
  const t0 = performance.now();
  const r = await fetch(`${base}/v1/chat/completions`, { method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ model, messages: [{ role: "user", content: `request ${i} ${n}` }], max_tokens: T, temperature: 0,
      ignore_eos: true, stream: true, stream_options: { include_usage: true } }) });
  if (r.status !== 200) { errors++; await r.text(); return; }
  const reader = r.body.getReader();
  const dec = new TextDecoder();
  let buf = "", last = 0, first = true;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    buf += dec.decode(value, { stream: true });
    let k;
    while ((k = buf.indexOf("\n\n")) >= 0) {
      const ev = buf.slice(0, k);
      buf = buf.slice(k + 2);
      if (!ev.startsWith("data: ") || ev === "data: [DONE]") continue;
      const o = JSON.parse(ev.slice(6));
      if (o.usage) tokens += o.usage.completion_tokens;
      if (o.choices?.[0]?.delta?.content) {
        const now = performance.now();
        if (first) { ttft.push(now - t0); first = false; } else itl.push(now - last);
        last = now;
      }
    }
  }
  n++;
}
async function client(i) { while (Date.now() < until) await one(i); }
const t0 = Date.now();
await Promise.all(Array.from({ length: C }, (_, i) => client(i)));
const secs = (Date.now() - t0) / 1000;
const pct = (a, p) => { if (!a.length) return 0; const s = [...a].sort((x, y) => x - y); return s[Math.min(s.length - 1, Math.floor(s.length * p))]; };
console.log(JSON.stringify({ clients: C, tokens_per_s: +(tokens / secs).toFixed(2), requests: n, errors,
  ttft_p50: +pct(ttft, 0.5).toFixed(1), ttft_p99: +pct(ttft, 0.99).toFixed(1), itl_p50: +pct(itl, 0.5).toFixed(1),
  itl_p99: +pct(itl, 0.99).toFixed(1) }));
