'use strict';
// The event queue, kept in memory and written to one storage key. It is bounded by count and
// by the byte length of what is written, dropping the oldest events first, so the key stays
// under WeChat's 1 MB per key. Items taken for sending stay in the queue (and in storage)
// until the server answers for them.
const utf8Length = require('./storage').utf8Length;

const HEAD = '{"v":1,"events":[]}'.length;

class Queue {
  constructor(store, maxCount, maxBytes) {
    this.store = store;
    this.maxCount = maxCount;
    this.maxBytes = maxBytes;
    this.items = []; // {e: event, n: its JSON byte length}
    this.total = 0;
    this.busy = {}; // id -> true while a request carries it
  }
  load() {
    const s = this.store.get('queue');
    const list = s && Array.isArray(s.events) ? s.events : [];
    this.items = [];
    this.total = 0;
    for (let i = 0; i < list.length; i++) {
      const e = list[i];
      if (e && typeof e.id === 'string' && typeof e.type === 'string') this._add(e);
    }
    return this._trim();
  }
  _add(e) {
    const n = utf8Length(JSON.stringify(e));
    this.items.push({ e: e, n: n });
    this.total += n;
  }
  bytes() {
    return HEAD + this.total + Math.max(0, this.items.length - 1);
  }
  // Adds an event; returns how many old events were dropped to make room.
  push(e) {
    this._add(e);
    return this._trim();
  }
  _trim() {
    let dropped = 0;
    while (this.items.length && (this.items.length > this.maxCount || this.bytes() > this.maxBytes)) {
      const it = this.items.shift();
      this.total -= it.n;
      delete this.busy[it.e.id];
      dropped++;
    }
    return dropped;
  }
  get length() {
    return this.items.length;
  }
  pending() {
    let n = 0;
    for (let i = 0; i < this.items.length; i++) if (!this.busy[this.items[i].e.id]) n++;
    return n;
  }
  has(id) {
    for (let i = 0; i < this.items.length; i++) if (this.items[i].e.id === id) return true;
    return false;
  }
  ids() {
    return this.items.map((it) => it.e.id);
  }
  // The oldest `max` events not already being sent, marked as being sent.
  take(max) {
    const out = [];
    for (let i = 0; i < this.items.length && out.length < max; i++) {
      const e = this.items[i].e;
      if (!this.busy[e.id]) {
        this.busy[e.id] = true;
        out.push(e);
      }
    }
    return out;
  }
  release(ids) {
    for (let i = 0; i < ids.length; i++) delete this.busy[ids[i]];
  }
  remove(ids) {
    const gone = {};
    for (let i = 0; i < ids.length; i++) {
      gone[ids[i]] = true;
      delete this.busy[ids[i]];
    }
    const keep = [];
    let total = 0;
    for (let i = 0; i < this.items.length; i++) {
      const it = this.items[i];
      if (!gone[it.e.id]) {
        keep.push(it);
        total += it.n;
      }
    }
    this.items = keep;
    this.total = total;
  }
  clear() {
    this.items = [];
    this.total = 0;
    this.busy = {};
  }
  save() {
    return this.store.setRaw('queue', JSON.stringify({ v: 1, events: this.items.map((it) => it.e) }));
  }
}

module.exports = Queue;
