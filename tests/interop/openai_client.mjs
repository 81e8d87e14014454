// The official `openai` npm client against a running `bitkd serve`.
// usage: node openai_client.mjs BASE_URL API_KEY OUT.json
// Writes what the client parsed, for tests/interop/test_openai_client.cpp to check.
import { writeFileSync } from "node:fs";
import OpenAI from "openai";

const [baseURL, apiKey, outPath] = process.argv.slice(2);
if (!baseURL || !apiKey || !outPath) {
  console.error("usage: node openai_client.mjs BASE_URL API_KEY OUT.json");
  process.exit(2);
}

const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 120000 });
const messages = [
  { role: "system", content: "Answer with JSON." },
  { role: "user", content: "list 3 gamma" },
];
const out = {};

const models = await client.models.list();
out.models = [];
for await (const m of models) out.models.push(m.id);

// Non-streaming chat with logprobs.
const chat = await client.chat.completions.create({
  model: out.models[0],
  messages,
  max_tokens: 12,
  temperature: 0,
  logprobs: true,
  top_logprobs: 3,
});
out.chat = {
  id: chat.id,
  object: chat.object,
  model: chat.model,
  content: chat.choices[0].message.content,
  role: chat.choices[0].message.role,
  finish_reason: chat.choices[0].finish_reason,
  usage: chat.usage,
  logprobs: chat.choices[0].logprobs.content.map((e) => ({
    token: e.token,
    logprob: e.logprob,
    bytes: e.bytes,
    top: e.top_logprobs.map((t) => ({ token: t.token, logprob: t.logprob, bytes: t.bytes })),
  })),
};

// The same request streamed.
const stream = await client.chat.completions.create({
  model: out.models[0],
  messages,
  max_tokens: 12,
  temperature: 0,
  logprobs: true,
  top_logprobs: 3,
  stream: true,
  stream_options: { include_usage: true },
});
out.stream = { content: "", chunks: 0, logprob_tokens: [], finish_reason: null, usage: null, role: null, objects: [] };
for await (const chunk of stream) {
  out.stream.chunks++;
  if (!out.stream.objects.includes(chunk.object)) out.stream.objects.push(chunk.object);
  if (chunk.usage) out.stream.usage = chunk.usage;
  for (const c of chunk.choices) {
    if (c.delta?.role) out.stream.role = c.delta.role;
    if (c.delta?.content) out.stream.content += c.delta.content;
    if (c.logprobs?.content) for (const e of c.logprobs.content) out.stream.logprob_tokens.push(e.token);
    if (c.finish_reason) out.stream.finish_reason = c.finish_reason;
  }
}

// Legacy completions with logprobs.
const comp = await client.completions.create({
  model: out.models[0],
  prompt: "<|user|>\nlist 5 red\n\n<|assistant|>\n",
  max_tokens: 10,
  temperature: 0,
  logprobs: 2,
});
out.completion = {
  object: comp.object,
  text: comp.choices[0].text,
  finish_reason: comp.choices[0].finish_reason,
  tokens: comp.choices[0].logprobs.tokens,
  token_logprobs: comp.choices[0].logprobs.token_logprobs,
  top_logprobs: comp.choices[0].logprobs.top_logprobs,
  text_offset: comp.choices[0].logprobs.text_offset,
  usage: comp.usage,
};

// Errors surface as the client's typed errors.
async function capture(fn) {
  try {
    await fn();
    return { thrown: false };
  } catch (e) {
    return {
      thrown: true,
      name: e.constructor.name,
      status: e.status ?? null,
      type: e.type ?? null,
      param: e.param ?? null,
      code: e.code ?? null,
      message: e.message,
    };
  }
}
out.bad_request = await capture(() =>
  client.chat.completions.create({ model: "x", messages, logprobs: true, top_logprobs: 21 }),
);
const wrongKey = new OpenAI({ baseURL, apiKey: apiKey + "-wrong", maxRetries: 0 });
out.bad_key = await capture(() => wrongKey.chat.completions.create({ model: "x", messages, max_tokens: 2 }));

writeFileSync(outPath, JSON.stringify(out, null, 1));
