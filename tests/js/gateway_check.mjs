// Chat and streaming through `dispatch serve` with the official openai npm package.
// Usage: node gateway_check.mjs BASE_URL TOKEN  -> prints one JSON line of findings.
import OpenAI from "openai";

const [baseURL, apiKey] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0 });
const messages = [{ role: "user", content: "hello from node" }];

const { data: completion, response } = await client.chat.completions
  .create({ model: "fast", messages, max_tokens: 8 })
  .withResponse();

const stream = await client.chat.completions.create({
  model: "fast", messages, stream: true, stream_options: { include_usage: true },
});
let text = "";
let usage = null;
let chunks = 0;
for await (const chunk of stream) {
  chunks += 1;
  text += chunk.choices[0]?.delta?.content ?? "";
  if (chunk.usage) usage = chunk.usage;
}

let notFound = null;
try {
  await client.chat.completions.create({ model: "nope", messages });
} catch (err) {
  notFound = { status: err.status, code: err.code };
}

console.log(JSON.stringify({
  content: completion.choices[0].message.content,
  target: response.headers.get("x-dispatch-target"),
  completionTokens: completion.usage.completion_tokens,
  streamed: text, chunks, usage, notFound,
}));
