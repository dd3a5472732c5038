// qbench external driver: the BullMQ producer (contract: qbench/external.py, README
// "Benchmark your own queue"). One request per stdin line, one answer per request.
import readline from "node:readline";
import { Queue } from "bullmq";
import { redisConnection } from "./connection.mjs";

const JOB_NAME = "qbench_noop";
// BullMQ runs lower numbers first; a job given no priority goes before prioritized ones,
// so jobs sent with a priority all get one.
const PRIORITY = { high: 1, normal: 2, low: 3 };

const { connection, options } = redisConnection(process.env.QBENCH_REDIS_URL);
const queue = new Queue(process.env.QBENCH_QUEUE || "qbench_peers", { connection, ...options });
// As in the worker: a lost connection is reported, never an unhandled 'error' event.
queue.on("error", (err) => console.error(`queue error: ${err.message}`));

async function handle(line) {
  const [op, ...args] = line.trim().split(/\s+/);
  if (op === "ping") return;
  if (op === "enqueue") {
    const [sentUs, priority] = args;
    if (priority === undefined) {
      await queue.add(JOB_NAME, { sent_us: sentUs });
    } else {
      if (!(priority in PRIORITY)) throw new Error(`unknown priority ${priority}`);
      await queue.add(JOB_NAME, { sent_us: sentUs, priority }, { priority: PRIORITY[priority] });
    }
    return;
  }
  if (op === "enqueue_many") {
    const [sentUs, count] = args;
    const jobs = Array.from({ length: Number(count) }, () => ({ name: JOB_NAME, data: { sent_us: sentUs } }));
    await queue.addBulk(jobs);
    return;
  }
  throw new Error(`unknown request ${op}`);
}

await queue.waitUntilReady();
process.stdout.write("ready\n");
// `for await` takes one line at a time: each request finishes before the next starts.
for await (const line of readline.createInterface({ input: process.stdin, terminal: false })) {
  if (!line.trim()) continue;
  try {
    await handle(line);
    process.stdout.write("ok\n");
  } catch (err) {
    process.stdout.write(`error ${String(err && err.message ? err.message : err).replace(/\s+/g, " ")}\n`);
  }
}
await queue.close();
await connection.quit();
