'use strict';
// A fake clock for tests: replaces the global setTimeout/clearTimeout and Date.now (what the SDK
// uses) until uninstall(). tick(ms) fires due timers in order and lets promises and the wx shim's
// answers (delivered with the real setImmediate) settle between them.

const realSetImmediate = setImmediate;

function settle(rounds) {
  let p = Promise.resolve();
  for (let i = 0; i < (rounds || 30); i++) p = p.then(() => new Promise((r) => realSetImmediate(r)));
  return p;
}

function installClock(start) {
  const real = { setTimeout: global.setTimeout, clearTimeout: global.clearTimeout, now: Date.now };
  let now = typeof start === 'number' ? start : 1767225600000; // 2026-01-01T00:00:00Z
  let seq = 0;
  const timers = new Map(); // id -> {at, fn, args, seq}

  global.setTimeout = function (fn, ms) {
    const args = Array.prototype.slice.call(arguments, 2);
    const id = ++seq;
    timers.set(id, { at: now + Math.max(0, Number(ms) || 0), fn: fn, args: args, seq: id });
    return id;
  };
  global.clearTimeout = function (id) {
    timers.delete(id);
  };
  Date.now = () => now;

  function next(limit) {
    let best = null;
    for (const [id, t] of timers) {
      if (t.at <= limit && (!best || t.at < best.t.at || (t.at === best.t.at && t.seq < best.t.seq))) best = { id: id, t: t };
    }
    return best;
  }

  const clock = {
    get now() {
      return now;
    },
    pending() {
      return Array.from(timers.values()).map((t) => t.at - now).sort((a, b) => a - b);
    },
    // Advance by ms, firing every timer that falls due, in time order.
    async tick(ms) {
      const end = now + (ms || 0);
      await settle();
      for (;;) {
        const n = next(end);
        if (!n) break;
        timers.delete(n.id);
        now = Math.max(now, n.t.at);
        n.t.fn.apply(null, n.t.args);
        await settle();
      }
      now = end;
      await settle();
    },
    // Tick in steps until test() holds; throws after maxMs of fake time.
    async until(test, maxMs, step) {
      const limit = now + (maxMs || 600000);
      await settle();
      while (!test()) {
        if (now >= limit) throw new Error('clock.until: condition not met within ' + (maxMs || 600000) + ' ms');
        await clock.tick(step || 100);
      }
    },
    settle: settle,
    uninstall() {
      global.setTimeout = real.setTimeout;
      global.clearTimeout = real.clearTimeout;
      Date.now = real.now;
    }
  };
  return clock;
}

module.exports = { installClock, settle };
