// Parses a GGUF file with @huggingface/gguf (an independent reader) and writes
// what it saw as JSON: typed metadata (arrays summarised), tensor infos, the
// data offset and the parameter count.
//   node gguf_inspect.mjs FILE.gguf OUT.json
import { writeFileSync } from "node:fs";
import { gguf } from "@huggingface/gguf";

const [file, out] = process.argv.slice(2);
if (!file || !out) {
  console.error("usage: node gguf_inspect.mjs FILE.gguf OUT.json");
  process.exit(2);
}

const plain = (v) => (typeof v === "bigint" ? v.toString() : v);

const r = await gguf(file, { allowLocalFile: true, typedMetadata: true, computeParametersCount: true });
const metadata = {};
for (const [key, tv] of Object.entries(r.typedMetadata)) {
  const e = { type: tv.type };
  if (Array.isArray(tv.value)) {
    e.subType = tv.subType;
    e.length = tv.value.length;
    e.head = tv.value.slice(0, 8).map(plain);
  } else {
    e.value = plain(tv.value);
  }
  metadata[key] = e;
}
const tensors = r.tensorInfos.map((t) => ({
  name: t.name,
  shape: t.shape.map((d) => Number(d)),
  dtype: t.dtype,
  offset: t.offset.toString(),
}));
writeFileSync(
  out,
  JSON.stringify({
    metadata,
    tensors,
    tensorDataOffset: r.tensorDataOffset.toString(),
    littleEndian: r.littleEndian,
    parameterCount: r.parameterCount,
  }),
);
