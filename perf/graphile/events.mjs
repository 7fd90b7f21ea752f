// Tells the benchmark driver when the worker can take jobs: graphile-worker emits
// "pool:listen:success" at the moment it logs "Worker connected and looking for jobs"
// (a line NO_LOG_SUCCESS=1 suppresses, and per-job success lines are the cost we turn off).
import { EventEmitter } from "node:events";

export const events = new EventEmitter();
events.on("pool:listen:success", () => {
  process.stdout.write(`PERF_READY ${performance.timeOrigin + performance.now()}\n`);
});
