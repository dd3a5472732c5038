// The Redis connection and queue options shared by the BullMQ producer and worker.
// A `redis://` URL: one ioredis client, BullMQ's defaults (the normal peers run).
// A `redis+cluster://HOST:PORT` URL (`qbench peers --cluster`): BullMQ's documented Redis
// Cluster setup, an ioredis Cluster started from that node and a queue prefix wrapped in
// braces (a hash tag), so every key of the queue hashes to one slot and its Lua scripts
// never span two.
import IORedis, { Cluster } from "ioredis";

const CLUSTER_URL = /^(rediss?)\+cluster:\/\/(.+)$/;
const SENTINEL_URL = /^(rediss?)\+sentinel:\/\/([^/]+)\/(.+)$/;
export const CLUSTER_PREFIX = "{bull}";

export function redisConnection(url) {
  // A `redis+sentinel://HOST:PORT/MASTER` URL (`qbench chaos` failover): ioredis's
  // documented Sentinel option, which asks the Sentinel for the primary on every reconnect.
  const sentinel = SENTINEL_URL.exec(url);
  if (sentinel) {
    const node = new URL(`${sentinel[1]}://${sentinel[2]}`);
    const sentinels = [{ host: node.hostname, port: Number(node.port || 26379) }];
    return { connection: new IORedis({ sentinels, name: sentinel[3], maxRetriesPerRequest: null }), options: {} };
  }
  const cluster = CLUSTER_URL.exec(url);
  if (!cluster) {
    return { connection: new IORedis(url, { maxRetriesPerRequest: null }), options: {} };
  }
  const node = new URL(`${cluster[1]}://${cluster[2]}`);
  const redisOptions = { maxRetriesPerRequest: null };
  if (node.username) redisOptions.username = decodeURIComponent(node.username);
  if (node.password) redisOptions.password = decodeURIComponent(node.password);
  if (cluster[1] === "rediss") redisOptions.tls = {};
  const connection = new Cluster([{ host: node.hostname, port: Number(node.port || 6379) }], { redisOptions });
  return { connection, options: { prefix: CLUSTER_PREFIX } };
}
