// graphile-worker 0.18.0 at its fastest for this machine (the "best"): batch
// fetching into a local queue and batched completions, as its own perfTest does.
import { events } from "./events.mjs";

export default {
  worker: {
    concurrentJobs: 10,
    localQueue: { size: 50 },
    completeJobBatchDelay: 0,
    failJobBatchDelay: 0,
    events,
  },
};
