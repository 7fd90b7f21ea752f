// graphile-worker 0.18.0 as most teams run it: `--jobs 10`, everything else default
// (no local queue, each completion written on its own).
import { events } from "./events.mjs";

export default {
  worker: {
    concurrentJobs: 10,
    events,
  },
};
