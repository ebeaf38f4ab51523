// Proof-of-work off the page's thread: finds a nonce n such that SHA-256(challenge ‖ n), with
// n as 8 big-endian bytes, starts with `bits` zero bits (see GET /v1/sales/{sku}/pow). Hashes
// go in batches so the promise overhead of crypto.subtle is shared; posts progress now and then.
const BATCH = 512;

function zeroBits(hash) {
  let zeros = 0;
  for (const byte of hash) {
    if (byte !== 0) return zeros + Math.clz32(byte) - 24;
    zeros += 8;
  }
  return zeros;
}

self.onmessage = async (event) => {
  const { challenge, bits } = event.data;
  const bytes = new Uint8Array(challenge.match(/../g).map((h) => parseInt(h, 16)));
  const started = performance.now();
  for (let base = 0; ; base += BATCH) {
    const inputs = [];
    for (let i = 0; i < BATCH; i++) {
      const input = new Uint8Array(40);
      input.set(bytes);
      const nonce = base + i;
      const view = new DataView(input.buffer);
      view.setUint32(32, Math.floor(nonce / 2 ** 32));
      view.setUint32(36, nonce >>> 0);
      inputs.push(crypto.subtle.digest('SHA-256', input));
    }
    const hashes = await Promise.all(inputs);
    for (let i = 0; i < BATCH; i++) {
      if (zeroBits(new Uint8Array(hashes[i])) >= bits) {
        const nonce = base + i;
        self.postMessage({ nonce, hashes: nonce + 1, ms: performance.now() - started });
        return;
      }
    }
    if (base % (BATCH * 64) === 0) self.postMessage({ progress: base + BATCH });
  }
};
