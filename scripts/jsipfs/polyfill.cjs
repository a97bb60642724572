// js-ipfs 0.66.1 calls Promise.withResolvers, which Node 20 lacks (Node 22 has it).
// Preloaded with NODE_OPTIONS="--require .../polyfill.cjs" by run.sh.
if (typeof Promise.withResolvers !== "function") {
  Promise.withResolvers = function withResolvers() {
    let resolve;
    let reject;
    const promise = new this((res, rej) => {
      resolve = res;
      reject = rej;
    });
    return { promise, resolve, reject };
  };
}
