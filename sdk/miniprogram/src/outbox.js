'use strict';
// Calls that must take effect once (coupon claim, subscribe answers), kept in storage with
// their idempotency id until the server answers, and replayed with the same id after a
// failure or a restart.

class Outbox {
  constructor(store) {
    this.store = store;
    const s = store.get('outbox');
    this.entries = Array.isArray(s) ? s.filter((e) => e && typeof e.id === 'string' && e.path) : [];
  }
  add(entry) {
    this.entries.push(entry);
    this.save();
    return entry;
  }
  find(test) {
    for (let i = 0; i < this.entries.length; i++) if (test(this.entries[i])) return this.entries[i];
    return null;
  }
  remove(id) {
    const before = this.entries.length;
    this.entries = this.entries.filter((e) => e.id !== id);
    if (this.entries.length !== before) this.save();
  }
  clear() {
    this.entries = [];
  }
  save() {
    return this.store.set('outbox', this.entries);
  }
}

module.exports = Outbox;
