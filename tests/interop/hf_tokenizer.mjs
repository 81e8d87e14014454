// Independent tokenizer for the interop test: Tokenizers.js (@huggingface/tokenizers,
// the tokenizers of transformers.js), built offline from a folder's tokenizer.json
// and tokenizer_config.json.
//   node hf_tokenizer.mjs encode DIR texts.jsonl   -> {"ids": [...]} per line (no special tokens added)
//   node hf_tokenizer.mjs decode DIR ids.jsonl     -> {"text": ...} per line (special tokens kept)
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { Tokenizer } from "@huggingface/tokenizers";

const [mode, dir, input] = process.argv.slice(2);
if (!mode || !dir || !input) {
  console.error("usage: node hf_tokenizer.mjs encode|decode DIR FILE.jsonl");
  process.exit(2);
}
const tokJson = JSON.parse(readFileSync(join(dir, "tokenizer.json"), "utf8"));
const tokConfig = JSON.parse(readFileSync(join(dir, "tokenizer_config.json"), "utf8"));
const tok = new Tokenizer(tokJson, tokConfig);
const out = [];
for (const line of readFileSync(input, "utf8").split("\n")) {
  if (!line.trim()) continue;
  const row = JSON.parse(line);
  if (mode === "encode") {
    out.push(JSON.stringify({ ids: tok.encode(row.text, { add_special_tokens: false }).ids }));
  } else if (mode === "decode") {
    const text = tok.decode(row.ids, { skip_special_tokens: false, clean_up_tokenization_spaces: false });
    out.push(JSON.stringify({ text }));
  } else {
    console.error(`unknown mode ${mode}`);
    process.exit(2);
  }
}
process.stdout.write(out.join("\n") + "\n");
