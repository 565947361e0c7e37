// Drives a live `dsv3 serve` with the official OpenAI Node client. Started by tests/server/test_server_live.cpp:
//   node client_test.mjs   (env: DSV3_URL=http://127.0.0.1:PORT, DSV3_MODEL=served name, DSV3_API_KEY=key)
// Every check throws on a mismatch (exit code 1, message on stderr); each passing check prints one "ok" line.
import assert from "node:assert/strict";
import OpenAI from "openai";

const root = process.env.DSV3_URL;
const model = process.env.DSV3_MODEL;
const apiKey = process.env.DSV3_API_KEY;
const client = new OpenAI({ baseURL: `${root}/v1`, apiKey, maxRetries: 0, timeout: 60_000 });

async function post(path, body) {
  const r = await fetch(`${root}${path}`, {
    method: "POST",
    headers: { "Content-Type": "application/json", Authorization: `Bearer ${apiKey}` },
    body: JSON.stringify(body),
  });
  assert.equal(r.status, 200, `${path}: status ${r.status}: ${await r.clone().text()}`);
  return r.json();
}

async function check(name, fn) {
  const t0 = Date.now();
  await fn();
  console.log(`ok ${name} (${Date.now() - t0} ms)`);
}

const user = (content) => [{ role: "user", content }];

// Concatenates a chat stream; returns {text per choice, finish per choice, usage, ids}.
async function collectChat(stream) {
  const text = {}, finish = {}, ids = new Set();
  let usage = null;
  for await (const chunk of stream) {
    ids.add(chunk.id);
    assert.equal(chunk.object, "chat.completion.chunk");
    if (chunk.usage) usage = chunk.usage;
    for (const c of chunk.choices) {
      text[c.index] = (text[c.index] ?? "") + (c.delta?.content ?? "");
      if (c.finish_reason) finish[c.index] = c.finish_reason;
    }
  }
  return { text, finish, usage, ids };
}

async function collectCompletion(stream) {
  const text = {}, finish = {}, ids = new Set();
  let usage = null;
  for await (const chunk of stream) {
    ids.add(chunk.id);
    if (chunk.usage) usage = chunk.usage;
    for (const c of chunk.choices) {
      text[c.index] = (text[c.index] ?? "") + (c.text ?? "");
      if (c.finish_reason) finish[c.index] = c.finish_reason;
    }
  }
  return { text, finish, usage, ids };
}

function checkUsage(usage, promptTokens, maxCompletion) {
  assert.equal(usage.prompt_tokens, promptTokens, "usage.prompt_tokens vs /tokenize");
  assert.ok(usage.completion_tokens >= 1 && usage.completion_tokens <= maxCompletion, "completion_tokens range");
  assert.equal(usage.total_tokens, usage.prompt_tokens + usage.completion_tokens);
}

await check("models.list", async () => {
  const list = await client.models.list();
  assert.deepEqual(list.data.map((m) => m.id), [model]);
});

const messages = user("Hello there, how are you?");
const greedy = { model, messages, max_tokens: 8, temperature: 0 };
let chatText;
await check("chat non-stream + usage == /tokenize", async () => {
  const r = await client.chat.completions.create(greedy);
  assert.equal(r.object, "chat.completion");
  assert.equal(r.choices.length, 1);
  const c = r.choices[0];
  assert.equal(c.message.role, "assistant");
  assert.equal(typeof c.message.content, "string");
  assert.ok(["stop", "length"].includes(c.finish_reason));
  const tk = await post("/tokenize", { messages });
  checkUsage(r.usage, tk.count, 8);
  if (c.finish_reason === "length") assert.equal(r.usage.completion_tokens, 8);
  chatText = c.message.content;
});

await check("chat stream == non-stream, include_usage", async () => {
  const s = await client.chat.completions.create({ ...greedy, stream: true, stream_options: { include_usage: true } });
  const got = await collectChat(s);
  assert.equal(got.text[0], chatText);
  assert.equal(got.ids.size, 1);
  const tk = await post("/tokenize", { messages });
  checkUsage(got.usage, tk.count, 8);
});

const prompt = "The quick brown fox";
let complText;
await check("completions non-stream, stream, usage == /tokenize", async () => {
  const body = { model, prompt, max_tokens: 10, temperature: 0 };
  const r = await client.completions.create(body);
  assert.equal(r.object, "text_completion");
  complText = r.choices[0].text;
  const tk = await post("/tokenize", { prompt });
  checkUsage(r.usage, tk.count, 10);
  const s = await collectCompletion(
    await client.completions.create({ ...body, stream: true, stream_options: { include_usage: true } }));
  assert.equal(s.text[0], complText);
  assert.deepEqual(s.usage, r.usage);
});

await check("n > 1 with a seed: reproducible, choice 0 == n=1", async () => {
  const body = { model, messages, max_tokens: 10, temperature: 1.0, seed: 1234, n: 3 };
  const a = await client.chat.completions.create(body);
  const b = await client.chat.completions.create(body);
  assert.equal(a.choices.length, 3);
  assert.deepEqual(a.choices.map((c) => c.index), [0, 1, 2]);
  assert.deepEqual(a.choices.map((c) => c.message.content), b.choices.map((c) => c.message.content));
  const one = await client.chat.completions.create({ ...body, n: 1 });
  assert.equal(one.choices[0].message.content, a.choices[0].message.content);
  assert.ok(new Set(a.choices.map((c) => c.message.content)).size > 1, "3 sampled choices should differ");
  const other = await client.chat.completions.create({ ...body, seed: 99 });
  assert.notDeepEqual(other.choices.map((c) => c.message.content), a.choices.map((c) => c.message.content));
  // Streaming n=3 interleaves the choices and gives the same texts.
  const s = await collectChat(await client.chat.completions.create({ ...body, stream: true }));
  assert.deepEqual([0, 1, 2].map((i) => s.text[i]), a.choices.map((c) => c.message.content));
  const completion = a.usage.completion_tokens;
  assert.ok(completion >= 3 && completion <= 30);
});

await check("stop strings (not included, across tokens, streamed too)", async () => {
  const body = { model, prompt: "Once upon a time", max_tokens: 24, temperature: 0, ignore_eos: true };
  const full = (await client.completions.create(body)).choices[0].text;
  assert.ok(Array.from(full).length >= 6, `need some text, got ${JSON.stringify(full)}`);
  // A stop string taken from the middle of the greedy output: the text must end right before it.
  const chars = Array.from(full);  // code points: never split a surrogate pair
  const mid = Math.floor(chars.length / 2);
  const stop = chars.slice(mid, mid + 3).join("");
  const cut = full.indexOf(stop);
  const r = await client.completions.create({ ...body, stop: [stop, "\u0000never"] });
  assert.equal(r.choices[0].text, full.slice(0, cut));
  assert.equal(r.choices[0].finish_reason, "stop");
  const s = await collectCompletion(await client.completions.create({ ...body, stop, stream: true }));
  assert.equal(s.text[0], full.slice(0, cut));
  assert.equal(s.finish[0], "stop");
});

await check("chat logprobs shape", async () => {
  const r = await client.chat.completions.create({
    model, messages, max_tokens: 6, temperature: 0, logprobs: true, top_logprobs: 3, ignore_eos: true });
  const c = r.choices[0];
  const lp = c.logprobs.content;
  assert.equal(lp.length, r.usage.completion_tokens);
  const bytes = [];
  for (const e of lp) {
    assert.equal(typeof e.token, "string");
    assert.ok(e.logprob <= 0);
    assert.equal(e.top_logprobs.length, 3);
    for (let i = 1; i < 3; ++i) assert.ok(e.top_logprobs[i - 1].logprob >= e.top_logprobs[i].logprob);
    // Greedy: the chosen token is the most likely one.
    assert.equal(e.logprob, e.top_logprobs[0].logprob);
    bytes.push(...e.bytes);
  }
  assert.equal(Buffer.from(bytes).toString("utf8"), c.message.content);
});

await check("completions logprobs shape", async () => {
  const r = await client.completions.create({ model, prompt, max_tokens: 5, temperature: 0, logprobs: 2, ignore_eos: true });
  const lp = r.choices[0].logprobs;
  assert.equal(lp.tokens.length, 5);
  assert.equal(lp.token_logprobs.length, 5);
  assert.equal(lp.top_logprobs.length, 5);
  assert.equal(lp.text_offset[0], 0);
  for (let i = 0; i < 5; ++i) {
    assert.ok(Object.keys(lp.top_logprobs[i]).length >= 1 && Object.keys(lp.top_logprobs[i]).length <= 2);
    if (i > 0) assert.ok(lp.text_offset[i] >= lp.text_offset[i - 1]);
  }
});

const tools = [{
  type: "function",
  function: {
    name: "get_weather",
    description: "Current weather in a city",
    parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
  },
}];
await check("tools rendered into the prompt; tool-call history accepted", async () => {
  const withTools = await post("/tokenize", { messages, tools });
  const without = await post("/tokenize", { messages });
  assert.ok(withTools.count > without.count + 10);
  const r = await client.chat.completions.create({ model, messages, tools, max_tokens: 4, temperature: 0 });
  assert.equal(r.usage.prompt_tokens, withTools.count);
  assert.ok(["stop", "length", "tool_calls"].includes(r.choices[0].finish_reason));
  const none = await client.chat.completions.create({
    model, messages, tools, tool_choice: "none", max_tokens: 4, temperature: 0 });
  assert.equal(none.usage.prompt_tokens, without.count);
  const history = [
    ...messages,
    { role: "assistant", content: null,
      tool_calls: [{ id: "call_1", type: "function", function: { name: "get_weather", arguments: "{\"city\":\"Paris\"}" } }] },
    { role: "tool", tool_call_id: "call_1", content: "{\"temp_c\": 21}" },
  ];
  const h = await client.chat.completions.create({ model, messages: history, tools, max_tokens: 4, temperature: 0 });
  assert.equal(h.usage.prompt_tokens, (await post("/tokenize", { messages: history, tools })).count);
  const parts = await client.chat.completions.create({
    model, messages: [{ role: "user", content: [{ type: "text", text: "Hello there, " }, { type: "text", text: "how are you?" }] }],
    max_tokens: 8, temperature: 0 });
  assert.equal(parts.choices[0].message.content, chatText);  // text parts == the joined string
});

await check("FIM via suffix", async () => {
  const body = { model, prompt: "def add(a, b):\n    ", suffix: "\n    return c\n", max_tokens: 6, temperature: 0 };
  const r = await client.completions.create(body);
  const fim = `<｜fim▁begin｜>${body.prompt}<｜fim▁hole｜>${body.suffix}<｜fim▁end｜>`;
  const tk = await post("/tokenize", { prompt: fim });
  checkUsage(r.usage, tk.count, 6);
  const plain = await client.completions.create({ ...body, suffix: undefined });
  assert.notEqual(plain.usage.prompt_tokens, r.usage.prompt_tokens);
  assert.equal((await client.completions.create(body)).choices[0].text, r.choices[0].text);
});

await check("32 concurrent streams == each alone", async () => {
  const reqs = Array.from({ length: 32 }, (_, i) => ({
    model, messages: user(`Request number ${i}: tell me something.`), max_tokens: 12,
    temperature: i % 2 ? 0 : 0.9, seed: 1000 + i, ignore_eos: i % 4 === 0,
  }));
  const alone = [];
  for (const r of reqs) alone.push((await client.chat.completions.create(r)).choices[0].message.content);
  const together = await Promise.all(reqs.map(async (r) =>
    collectChat(await client.chat.completions.create({ ...r, stream: true }))));
  together.forEach((t, i) => {
    assert.equal(t.ids.size, 1, `stream ${i} mixes response ids`);
    assert.deepEqual(Object.keys(t.text), ["0"]);
    assert.ok(t.finish[0], `stream ${i} has no finish_reason`);
    assert.equal(t.text[0], alone[i], `stream ${i} differs from the same request alone`);
  });
  assert.equal(new Set(together.flatMap((t) => [...t.ids])).size, 32);
});

await check("errors through the client", async () => {
  await assert.rejects(client.chat.completions.create({ ...greedy, model: "no-such-model" }),
    (e) => e instanceof OpenAI.NotFoundError && e.status === 404 && e.code === "model_not_found");
  await assert.rejects(client.chat.completions.create({ ...greedy, temperature: "hot" }),
    (e) => e instanceof OpenAI.BadRequestError && e.param === "temperature");
  await assert.rejects(client.chat.completions.create({ ...greedy, max_tokens: 0 }),
    (e) => e instanceof OpenAI.BadRequestError && e.param === "max_tokens");
  const bad = new OpenAI({ baseURL: `${root}/v1`, apiKey: "wrong-key", maxRetries: 0 });
  await assert.rejects(bad.models.list(), (e) => e instanceof OpenAI.AuthenticationError && e.status === 401);
  // The server still serves.
  assert.equal((await client.chat.completions.create(greedy)).choices[0].message.content, chatText);
});

console.log("all client checks passed");
