// Reference runner for dsv3's tokenizer tests: runs the real Hugging Face `tokenizers` library (Rust, via
// its Node binding) over jobs described in a JSON file and writes its results, so the C++ test can compare
// id for id. Usage: node reference.js JOBS.json
//   JOBS.json = [{"kind": "encode", "tokenizer": PATH, "corpus": JSONL, "out": PATH, "time": bool},
//                {"kind": "decode", "tokenizer": PATH, "input": JSONL, "out": PATH}]
//   encode: corpus has one JSON string (a document) per line; out gets one JSON array of ids per line
//           (encode with add_special_tokens = false). With "time", the documents are encoded 5 more times,
//           one document at a time, and the wall and CPU time of each pass are reported.
//   decode: input lines are {"ids": [...], "skip": bool}; out gets one JSON string per line.
// Prints one JSON summary line per job. Run it single-threaded: RAYON_NUM_THREADS=1
// TOKENIZERS_PARALLELISM=false UV_THREADPOOL_SIZE=1.
'use strict';
const fs = require('fs');
const { Tokenizer } = require('tokenizers');

function readLines(path) {
  const text = fs.readFileSync(path, 'utf8');
  const lines = text.split('\n');
  if (lines.length && lines[lines.length - 1] === '') lines.pop();
  return lines;
}

async function encodeJob(job) {
  const tok = Tokenizer.fromFile(job.tokenizer);
  const docs = readLines(job.corpus).map((l) => JSON.parse(l));
  const opts = { addSpecialTokens: false };
  const out = [];
  for (const d of docs) out.push(JSON.stringify(Array.from((await tok.encode(d, null, opts)).getIds())));
  fs.writeFileSync(job.out, out.join('\n') + '\n');
  const summary = { kind: 'encode', tokenizer: job.tokenizer, docs: docs.length };
  if (job.time) {
    // 5 timed passes after the warm-up pass above; wall time and process CPU time (user + system, all
    // threads: the encode itself runs on a libuv worker thread).
    const bytes = docs.reduce((s, d) => s + Buffer.byteLength(d, 'utf8'), 0);
    const wall = [], cpu = [];
    for (let p = 0; p < 5; ++p) {
      const t0 = process.hrtime.bigint(), c0 = process.cpuUsage();
      for (const d of docs) await tok.encode(d, null, opts);
      const c = process.cpuUsage(c0);
      wall.push(Number(process.hrtime.bigint() - t0) / 1e9);
      cpu.push((c.user + c.system) / 1e6);
    }
    const median = (a) => a.slice().sort((x, y) => x - y)[Math.floor(a.length / 2)];
    Object.assign(summary, {
      bytes,
      wall_seconds: wall,
      cpu_seconds: cpu,
      mb_per_s_wall_median: bytes / 1e6 / median(wall),
      mb_per_s_cpu_median: bytes / 1e6 / median(cpu),
    });
  }
  console.log(JSON.stringify(summary));
}

async function decodeJob(job) {
  const tok = Tokenizer.fromFile(job.tokenizer);
  const out = [];
  for (const line of readLines(job.input)) {
    const { ids, skip } = JSON.parse(line);
    out.push(JSON.stringify(await tok.decode(ids, skip)));
  }
  fs.writeFileSync(job.out, out.join('\n') + '\n');
  console.log(JSON.stringify({ kind: 'decode', tokenizer: job.tokenizer, n: out.length }));
}

(async () => {
  const jobs = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
  for (const job of jobs) {
    if (job.kind === 'encode') await encodeJob(job);
    else if (job.kind === 'decode') await decodeJob(job);
    else throw new Error('unknown job kind ' + job.kind);
  }
})().catch((e) => {
  console.error('reference.js: ' + (e && e.stack ? e.stack : e));
  process.exit(1);
});
