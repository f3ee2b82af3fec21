// The Node.js thumbnails generate-thumbnails replaces, timed for benchmarks/thumbnails.py.
//
// Reads one JSON request per line on stdin: {"pipeline": "sharp-3" | "sharp-chained",
// "source", "out", "quality"}; answers one JSON line: {"ms": elapsed} or {"error": message}.
// "sharp-3" is the replaced system: three independent sharp pipelines, each decoding the
// file. "sharp-chained" is sharp at its best: decode (with shrink-on-load) once to LARGE, then
// MEDIUM from LARGE and the cover thumbnail from MEDIUM. One libvips thread, no cache.
import { createInterface } from "node:readline";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import sharp from "sharp";

sharp.concurrency(1);
sharp.cache(false);

const LARGE = { width: 1920, height: 1080, fit: "inside", withoutEnlargement: true };
const MEDIUM = { width: 800, height: 600, fit: "inside", withoutEnlargement: true };
const THUMBNAIL = { width: 150, height: 150, fit: "cover" };
const MEDIA_ID = "00000000-0000-4000-8000-000000000000";

const target = (out, kind) => join(out, `${MEDIA_ID}-${kind}.jpg`);

async function three({ source, out, quality }) {
  for (const [kind, box] of [["thumbnail", THUMBNAIL], ["medium", MEDIUM], ["large", LARGE]]) {
    await sharp(source).rotate().resize(box).jpeg({ quality }).toFile(target(out, kind));
  }
}

async function chained({ source, out, quality }) {
  const raw = (image) => image.raw().toBuffer({ resolveWithObject: true });
  const fromRaw = ({ data, info }) =>
    sharp(data, { raw: { width: info.width, height: info.height, channels: info.channels } });
  const large = await raw(sharp(source).rotate().resize(LARGE));
  await fromRaw(large).jpeg({ quality }).toFile(target(out, "large"));
  const medium = await raw(fromRaw(large).resize(MEDIUM));
  await fromRaw(medium).jpeg({ quality }).toFile(target(out, "medium"));
  await fromRaw(medium).resize(THUMBNAIL).jpeg({ quality }).toFile(target(out, "thumbnail"));
}

const PIPELINES = { "sharp-3": three, "sharp-chained": chained };

for await (const line of createInterface({ input: process.stdin })) {
  const request = JSON.parse(line);
  try {
    const start = performance.now();
    await PIPELINES[request.pipeline](request);
    console.log(JSON.stringify({ ms: performance.now() - start }));
  } catch (error) {
    console.log(JSON.stringify({ error: String(error) }));
  }
}
