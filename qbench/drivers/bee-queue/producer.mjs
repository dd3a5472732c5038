// qbench external driver: the Bee-Queue producer (contract: qbench/external.py, README
// "Benchmark your own queue"). One request per stdin line, one answer per request.
import readline from "node:readline";
import Queue from "bee-queue";

// A producer-only queue, as Bee-Queue's README sets one up: no worker, no event listener.
const queue = new Queue(process.env.QBENCH_QUEUE || "qbench_peers", {
  redis: process.env.QBENCH_REDIS_URL,
  isWorker: false,
  getEvents: false,
});
// A lost connection is an 'error' event: without a listener Node ends the process (a Redis
// restart killed the producer). node_redis reconnects by itself; a command that failed
// meanwhile rejects, and the caller sees that request's error.
queue.on("error", (err) => console.error(`queue error: ${err.message}`));

async function handle(line) {
  const [op, ...args] = line.trim().split(/\s+/);
  if (op === "ping") return;
  if (op === "enqueue" && args.length === 1) {
    await queue.createJob({ sent_us: args[0] }).save();
    return;
  }
  if (op === "enqueue_many") {
    const [sentUs, count] = args;
    const jobs = Array.from({ length: Number(count) }, () => queue.createJob({ sent_us: sentUs }));
    const errors = await queue.saveAll(jobs);
    if (errors.size) throw new Error(`${errors.size} job(s) not saved: ${[...errors.values()][0]}`);
    return;
  }
  throw new Error(`unsupported request ${op}`);
}

await queue.ready();
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
