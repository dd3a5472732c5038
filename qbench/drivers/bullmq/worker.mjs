// qbench external driver: the BullMQ worker. Each job appends `sent_us started_us
// [priority]` to $QBENCH_SINK (or RPUSHes it to $QBENCH_SINK_KEY on $QBENCH_SINK_REDIS_URL);
// SIGTERM closes the worker the documented way: running jobs finish, then it exits.
import fs from "node:fs";
import { performance } from "node:perf_hooks";
import { Worker } from "bullmq";
import IORedis from "ioredis";
import { redisConnection } from "./connection.mjs";

const nowUs = () => Math.round((performance.timeOrigin + performance.now()) * 1000);
// QBENCH_JOB_MS (qbench chaos only): how long each job takes; unset, a job is a no-op.
const JOB_MS = Number(process.env.QBENCH_JOB_MS || 0);
// A labelled configuration's Worker options (JSON), e.g. the stalled-job checker's.
const WORKER_OPTIONS = JSON.parse(process.env.QBENCH_BULLMQ_WORKER_OPTIONS || "{}");

let report;
let side = null;
if (process.env.QBENCH_SINK_REDIS_URL) {
  side = new IORedis(process.env.QBENCH_SINK_REDIS_URL);
  const key = process.env.QBENCH_SINK_KEY;
  report = (line) => side.rpush(key, line);
} else {
  const fd = fs.openSync(process.env.QBENCH_SINK, "a"); // O_APPEND: one write per line
  report = (line) => fs.writeSync(fd, `${line}\n`);
}

const { connection, options } = redisConnection(process.env.QBENCH_REDIS_URL);
const worker = new Worker(
  process.env.QBENCH_QUEUE || "qbench_peers",
  async (job) => {
    const started = nowUs();
    const priority = job.data.priority ? ` ${job.data.priority}` : "";
    await report(`${job.data.sent_us} ${started}${priority}`);
    if (JOB_MS > 0) {
      // A fault test (qbench chaos): the job takes JOB_MS, then says it finished.
      await new Promise((ok) => setTimeout(ok, JOB_MS));
      await report(`${job.data.sent_us} ${nowUs()} done`);
    }
  },
  { connection, concurrency: Number(process.env.QBENCH_CONCURRENCY || 10), ...options, ...WORKER_OPTIONS },
);
worker.on("error", (err) => console.error(`worker error: ${err.message}`));

let stopping = false;
async function stop() {
  if (stopping) return;
  stopping = true;
  await worker.close(); // waits for running jobs
  await connection.quit();
  if (side) await side.quit();
  process.exit(0);
}
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
