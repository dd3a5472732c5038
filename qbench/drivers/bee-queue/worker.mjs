// qbench external driver: the Bee-Queue worker, with the library's defaults. Each job
// appends `sent_us started_us` to $QBENCH_SINK (or RPUSHes it to $QBENCH_SINK_KEY on
// $QBENCH_SINK_REDIS_URL); SIGTERM closes the queue the documented way (running jobs
// get up to 30 s), then the process exits.
import fs from "node:fs";
import { performance } from "node:perf_hooks";
import Queue from "bee-queue";
import redis from "redis";

const nowUs = () => Math.round((performance.timeOrigin + performance.now()) * 1000);
// QBENCH_JOB_MS (qbench chaos only): how long each job takes; unset, a job is a no-op.
const JOB_MS = Number(process.env.QBENCH_JOB_MS || 0);
// A labelled configuration: run Bee-Queue's stalled-job check every that many ms, with
// stallInterval the same (its README: the check is the user's to start).
const STALL_CHECK_MS = Number(process.env.QBENCH_BEEQUEUE_STALL_CHECK_MS || 0);

let report;
let side = null;
if (process.env.QBENCH_SINK_REDIS_URL) {
  side = redis.createClient(process.env.QBENCH_SINK_REDIS_URL);
  const key = process.env.QBENCH_SINK_KEY;
  report = (line) => new Promise((ok, fail) => side.rpush(key, line, (err) => (err ? fail(err) : ok())));
} else {
  const fd = fs.openSync(process.env.QBENCH_SINK, "a"); // O_APPEND: one write per line
  report = (line) => fs.writeSync(fd, `${line}\n`);
}

const settings = { redis: process.env.QBENCH_REDIS_URL };
if (STALL_CHECK_MS > 0) settings.stallInterval = STALL_CHECK_MS;
const queue = new Queue(process.env.QBENCH_QUEUE || "qbench_peers", settings);
queue.on("error", (err) => console.error(`queue error: ${err.message}`));
if (STALL_CHECK_MS > 0) {
  queue.checkStalledJobs(STALL_CHECK_MS, (err) => err && console.error(`stall check: ${err.message}`));
}
queue.process(Number(process.env.QBENCH_CONCURRENCY || 10), async (job) => {
  await report(`${job.data.sent_us} ${nowUs()}`);
  if (JOB_MS > 0) {
    // A fault test (qbench chaos): the job takes JOB_MS, then says it finished.
    await new Promise((ok) => setTimeout(ok, JOB_MS));
    await report(`${job.data.sent_us} ${nowUs()} done`);
  }
});

let stopping = false;
async function stop() {
  if (stopping) return;
  stopping = true;
  await queue.close(30_000);
  if (side) side.quit();
  process.exit(0);
}
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
