// Greedy answers of a GGUF in llama.cpp (npm node-llama-cpp, prebuilt
// llama.cpp binaries): one fresh sequence per prompt, bitkd's chat template,
// temperature 0. Writes [{prompt, text}] as JSON.
// usage: node llama_greedy.mjs MODEL.gguf PROMPTS.json OUT.json MAX_TOKENS
import {getLlama, LlamaCompletion} from "node-llama-cpp";
import fs from "node:fs";

const [model_path, prompts_path, out_path, max_tokens] = process.argv.slice(2);
const prompts = JSON.parse(fs.readFileSync(prompts_path, "utf8"));
const llama = await getLlama({gpu: false, build: "never", logLevel: "error"});
const model = await llama.loadModel({modelPath: model_path});
const ctx = await model.createContext({contextSize: 256, threads: 2, sequences: 1});
const out = [];
for (const p of prompts) {
  const seq = ctx.getSequence();
  const completion = new LlamaCompletion({contextSequence: seq});
  // llama.cpp adds no SentencePiece leading space to the text: one space gives bitkd's tokens.
  const text = await completion.generateCompletion(" <|user|>\n" + p + "\n\n<|assistant|>\n",
                                                   {maxTokens: Number(max_tokens), temperature: 0});
  out.push({prompt: p, text});
  completion.dispose();
  seq.dispose();
}
fs.writeFileSync(out_path, JSON.stringify(out));
