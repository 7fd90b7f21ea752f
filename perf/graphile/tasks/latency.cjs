// The latency job: its first line reads the wall clock; then it appends
// "<ordinal> <epoch seconds>" to the file named in the payload, for the driver to read.
const fs = require("node:fs");

module.exports = async (payload) => {
  const now = performance.timeOrigin + performance.now();
  fs.appendFileSync(payload.out, `${payload.i} ${(now / 1000).toFixed(6)}\n`);
};
