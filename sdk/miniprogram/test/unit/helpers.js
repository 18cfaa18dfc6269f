'use strict';
// Shared setup for the unit tests: a fake clock, a wx shim and a client on it.
const { createWx } = require('../shim/wx');
const { installClock } = require('../shim/clock');
const Client = require('../../src/client');

const BASE = 'https://api.example.test';

function quiet() {
  const warn = console.warn;
  const lines = [];
  console.warn = function () {
    lines.push(Array.prototype.slice.call(arguments).join(' '));
  };
  return { lines: lines, restore() { console.warn = warn; } };
}

// setup({options, env}) -> {clock, env, hl, start(), warnings, done()}
function setup(o) {
  o = o || {};
  const clock = installClock(o.now);
  const warnings = quiet();
  const env = createWx(o.env);
  const clients = [];
  const t = {
    clock: clock,
    env: env,
    warnings: warnings.lines,
    start(extra, onEnv) {
      const opts = Object.assign({ baseUrl: BASE, appid: 'wxtest0001', wx: (onEnv || env).wx, autoTrack: false }, o.options, extra);
      const c = new Client(opts);
      clients.push(c);
      return c;
    },
    // a second process on the same storage (the first one is stopped without writing)
    restart(extra) {
      clients.forEach((c) => c._close());
      const env2 = createWx(Object.assign({}, o.env, { storage: env.storage, api: env.api }));
      t.env = env2;
      return { env: env2, hl: t.start(extra, env2) };
    },
    done() {
      clients.forEach((c) => c._close());
      clock.uninstall();
      warnings.restore();
    }
  };
  t.hl = o.noStart ? null : t.start();
  return t;
}

function events(env) {
  const out = [];
  env.sent('POST /mp/v1/events').forEach((r) => (r.data.events || []).forEach((e) => out.push(e)));
  return out;
}

module.exports = { setup, events, BASE };
