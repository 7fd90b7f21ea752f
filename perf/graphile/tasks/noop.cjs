// The throughput job: does nothing.
module.exports = async () => {};
