'use strict';
// Event ids: 'e' + 12 random hex + '-' + counter. The random part is drawn afresh at every
// start, so a counter value that was handed out but not yet written to storage when the app
// died can never produce an id the server already holds (it would be dropped as a duplicate).

function hex(n) {
  let s = '';
  while (s.length < n) s += Math.floor(Math.random() * 16).toString(16);
  return s;
}

// Idempotency keys for claim/subscribe: unique, printable, well under the API's 64 chars.
function key(prefix) {
  return prefix + hex(16) + '-' + Date.now().toString(36);
}

class Ids {
  constructor(store) {
    this.store = store;
    const d = store.get('device');
    this.n = d && typeof d.n === 'number' && d.n >= 0 ? d.n : 0;
    this.r = hex(12);
  }
  next() {
    this.n += 1;
    return 'e' + this.r + '-' + this.n;
  }
  save() {
    return this.store.set('device', { r: this.r, n: this.n });
  }
}

module.exports = { Ids, hex, key };
